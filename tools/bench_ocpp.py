"""Benchmarks of the OCPP 1.6J charge point (CPython), side by side in one run.

    python -m tools.bench_ocpp [--calls N] [--json]

- round trips: sequential Heartbeat CALL -> CALLRESULT against the local CSMS running in its
  own process; the agent's stack (Rpc + schema validation + websockets) and a bare `ocpp`
  package client (ChargePoint.call), on the same CSMS, alternated, medians of 3;
- start-up: wall time from starting `evse sim --csms ...` to "BootNotification accepted";
- idle: the agent process's RSS and CPU over 10 s with nothing happening;
- journal: appends/s with fsync (FileStorage on this disk); time to load a journal holding
  1000 pending messages and rebuild the charge point from it (what a reboot after kill -9
  costs).
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_csms():
    """The local CSMS in its own process; returns (process, base url)."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-c",
         "import asyncio, sys\n"
         "from simulator.csms import LocalCsms\n"
         "async def main():\n"
         "    csms = await LocalCsms(heartbeat_interval=86400).start()\n"
         "    print(csms.url, flush=True)\n"
         "    await asyncio.Event().wait()\n"
         "asyncio.run(main())\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


async def _agent_round_trips(url, calls):
    """Our stack: Rpc with the official schemas, over websockets, as the transport does."""
    from websockets.asyncio.client import connect
    from agent.ocpp_schemas import SchemaValidator
    from agent.rpc import Rpc
    rpc = Rpc(lambda action, payload: {}, validator=SchemaValidator("1.6"))
    async with connect(url + "/BENCH-AGENT", subprotocols=["ocpp1.6"], compression=None,
                       proxy=None) as ws:
        loop = asyncio.get_running_loop()
        rpc.connection_made(0)
        answered = asyncio.Event()

        async def call(action, payload):
            answered.clear()
            rpc.call(int(loop.time() * 1000), action, payload,
                     lambda now, result, error: answered.set())
            for frame in rpc.take_frames():
                await ws.send(frame)
            while not answered.is_set():
                rpc.receive(int(loop.time() * 1000), await ws.recv())
            rpc.take_events()
        await call("BootNotification", {"chargePointVendor": "bench",
                                        "chargePointModel": "agent"})
        started = time.perf_counter()
        for _ in range(calls):
            await call("Heartbeat", {})
        return calls / (time.perf_counter() - started)


async def _bare_round_trips(url, calls):
    """The reference: a bare `ocpp` package charge point (its default validation)."""
    from websockets.asyncio.client import connect
    from ocpp.v16 import ChargePoint, call
    async with connect(url + "/BENCH-BARE", subprotocols=["ocpp1.6"], compression=None,
                       proxy=None) as ws:
        cp = ChargePoint("BENCH-BARE", ws)
        reader = asyncio.ensure_future(cp.start())
        await cp.call(call.BootNotification(charge_point_vendor="bench",
                                            charge_point_model="bare"))
        started = time.perf_counter()
        for _ in range(calls):
            await cp.call(call.Heartbeat())
        rate = calls / (time.perf_counter() - started)
        reader.cancel()
        return rate


def bench_round_trips(calls):
    csms, url = _start_csms()
    try:
        agent, bare = [], []
        for _ in range(3):
            agent.append(asyncio.run(_agent_round_trips(url, calls)))
            bare.append(asyncio.run(_bare_round_trips(url, calls)))
    finally:
        csms.terminate()
        csms.wait()
    return {"calls": calls, "agent_rt_per_s": int(statistics.median(agent)),
            "bare_ocpp_rt_per_s": int(statistics.median(bare)),
            "ratio": round(statistics.median(agent) / statistics.median(bare), 2)}


def _process_figures(pid):
    with open("/proc/%d/status" % pid) as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def bench_startup_and_idle(idle_s=10):
    csms, url = _start_csms()
    folder = tempfile.mkdtemp()
    scenario = os.path.join(folder, "idle.scn")
    with open(scenario, "w") as file:
        file.write("wait %ds\n" % (idle_s + 30))
    try:
        started = time.perf_counter()
        agent = subprocess.Popen(
            [sys.executable, "-u", "-m", "tools.cli", "sim", "--csms", url, "--id", "BENCH-IDLE",
             "--realtime", "--scenario", scenario], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for line in agent.stdout:
            if "BootNotification result" in line and '"Accepted"' in line:
                break
        boot_s = time.perf_counter() - started
        time.sleep(2)                                   # let start-up work settle
        rss0, cpu0 = _process_figures(agent.pid)
        time.sleep(idle_s)
        rss1, cpu1 = _process_figures(agent.pid)
        agent.kill()
        agent.wait()
    finally:
        csms.terminate()
        csms.wait()
    return {"start_to_boot_accepted_s": round(boot_s, 3), "idle_rss_kb": rss1,
            "idle_cpu_pct": round(100 * (cpu1 - cpu0) / idle_s, 2)}


def bench_journal(records=1000):
    from agent.config import Config
    from agent.journal import Journal
    from agent.ocpp16 import ChargePoint16
    from agent.station import LocalAuthorizer, Station
    from hal.storage_fs import FileStorage
    folder = tempfile.mkdtemp()
    storage = FileStorage(folder)
    journal = Journal(storage, max_records=records + 10)
    payload = {"connectorId": 1, "transactionId": 7, "meterValue": [
        {"timestamp": "2026-01-01T00:00:00.000Z", "sampledValue": [
            {"value": "12345", "context": "Sample.Periodic",
             "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
            {"value": "11000", "context": "Sample.Periodic", "measurand": "Power.Active.Import",
             "location": "Outlet", "unit": "W"}]}]}
    journal.append({"action": "StartTransaction", "tx": "1-1", "attempts": 0, "payload": {
        "connectorId": 1, "idTag": "TAG", "meterStart": 0,
        "timestamp": "2026-01-01T00:00:00.000Z"}})
    started = time.perf_counter()
    for _ in range(records - 1):
        journal.append({"action": "MeterValues", "tx": "1-1", "attempts": 0,
                        "payload": payload, "transaction_id": 7})
    appends = (records - 1) / (time.perf_counter() - started)
    storage.write("open_tx", json.dumps({"1-1": {
        "connector": 1, "tag": "TAG", "transaction_id": 7, "wh": 12345,
        "time": "2026-01-01T00:00:00.000Z"}}).encode())
    # a reboot after kill -9: load the journal, rebuild the charge point (PowerLoss Stop)
    started = time.perf_counter()
    storage2 = FileStorage(folder)
    reloaded = Journal(storage2, max_records=records + 10)
    ChargePoint16(Station([], LocalAuthorizer()), Config(storage2), reloaded,
                  storage=storage2)
    recovery_ms = (time.perf_counter() - started) * 1000
    return {"appends_per_s_fsync": int(appends), "pending_after": len(reloaded.pending()),
            "recovery_ms_1000_queued": round(recovery_ms, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_ocpp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {"round_trips": bench_round_trips(args.calls),
              "startup_idle": bench_startup_and_idle(),
              "journal": bench_journal()}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    r, s, j = report["round_trips"], report["startup_idle"], report["journal"]
    print("Heartbeat round trips/s, %d sequential, CSMS in its own process (median of 3):"
          % r["calls"])
    print("  agent (Rpc + official schemas + websockets)  %6d" % r["agent_rt_per_s"])
    print("  bare ocpp package ChargePoint                %6d   ratio agent/bare %.2f"
          % (r["bare_ocpp_rt_per_s"], r["ratio"]))
    print("start to BootNotification accepted: %.3f s; idle: RSS %d KB, CPU %.2f %%"
          % (s["start_to_boot_accepted_s"], s["idle_rss_kb"], s["idle_cpu_pct"]))
    print("journal: %d appends/s with fsync; reboot with 1000 queued: %.1f ms (%d pending)"
          % (j["appends_per_s_fsync"], j["recovery_ms_1000_queued"], j["pending_after"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

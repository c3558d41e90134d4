"""Benchmark of `evse run` on a Linux board's drivers: the real process, reading and writing
a sysfs tree played by the simulated board (simulator/sysfs_board.py).

    python -m tools.bench_run [--events N] [--configs 2/20,2/2,1/20,5/20] [--json]

For each `[linux] poll`/`idle_poll` pair (ms), side by side in one run:
- idle: CPU share and RSS of the `evse run` process (no OCPP, no EV) over 5 s;
- charging: its CPU share over 5 s of charging (the contactor closed: polled every `poll`);
- unplug -> coil off: the EV is charging, the cable is pulled; from the moment the pilot ADC
  files show state A to the moment the contactor coil's GPIO value reads 0 (a thread polls
  the file every 0.1 ms). This includes the agent's poll interval and the 5 ms debounce
  towards less power (agent/params.py), so it is the figure a board's safety case uses.

Nothing here is a pass/fail test.
"""
import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "boards", "rpi-pilot-hat.toml")
IDLE_S = 5


def _board_file(folder, poll_ms, idle_poll_ms):
    text = open(BUNDLED).read()
    for old, new in (('sysfs = "/sys"', 'sysfs = "%s/sys"' % folder),
                     ('\npoll = "2ms"', '\npoll = "%dms"' % poll_ms),
                     ('idle_poll = "20ms"', 'idle_poll = "%dms"' % idle_poll_ms),
                     ('watchdog = "/dev/watchdog0"\n', ''),
                     ('mode = "csms"', 'mode = "free"')):
        text = text.replace(old, new)
    path = os.path.join(folder, "board.toml")
    with open(path, "w") as file:
        file.write(text)
    return path


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])          # utime + stime


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _wait_coil_off(path, timeout_s=2.0):
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        with open(path) as file:
            if file.read().strip() == "0":
                return time.perf_counter_ns()
        time.sleep(0.0001)
    raise TimeoutError("the coil stayed on")


async def _until(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.002)


async def _cpu_share(pid, seconds):
    ticks = _cpu_ticks(pid)
    await asyncio.sleep(seconds)
    return (_cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK") / seconds


async def _measure(poll_ms, idle_poll_ms, events):
    from simulator.runner import new_ev, world_from_board
    from simulator.sysfs_board import SysfsBoard
    from tools import boardfile
    with tempfile.TemporaryDirectory() as folder:
        board = boardfile.load(_board_file(folder, poll_ms, idle_poll_ms))
        world = world_from_board(board)
        sysfs = SysfsBoard(board, world)
        bench = asyncio.ensure_future(sysfs.run())
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "run", "--board", board["path"], "--no-ocpp",
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        try:
            connector = world.connectors[1]
            await _until(lambda: os.path.exists(os.path.join(folder, "sys/class/gpio/gpio17")))
            await asyncio.sleep(1)
            idle_cpu = await _cpu_share(process.pid, IDLE_S)
            rss = _rss_kb(process.pid)
            connector.plug(new_ev(board))
            connector.driver(True)
            await _until(lambda: connector.contactor.closed)
            charging_cpu = await _cpu_share(process.pid, IDLE_S)
            connector.unplug()
            await asyncio.sleep(0.5)
            coil = os.path.join(folder, "sys/class/gpio/gpio17/value")
            latencies = []
            loop = asyncio.get_running_loop()
            for _ in range(events):
                connector.plug(new_ev(board, {"delay": 50}))
                connector.driver(True)
                await _until(lambda: connector.contactor.closed)
                await asyncio.sleep(0.3)
                connector.unplug()
                sysfs.step()                          # the ADC files show state A now
                start = time.perf_counter_ns()
                end = await loop.run_in_executor(None, _wait_coil_off, coil)
                latencies.append((end - start) / 1e6)
                await asyncio.sleep(0.3)
            return {"poll_ms": poll_ms, "idle_poll_ms": idle_poll_ms,
                    "idle_cpu_percent": round(idle_cpu * 100, 2),
                    "charging_cpu_percent": round(charging_cpu * 100, 2),
                    "rss_mb": round(rss / 1024, 1), "events": events,
                    "unplug_to_coil_off_ms": {
                        "p50": round(statistics.median(latencies), 2),
                        "p99": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
                        "max": round(max(latencies), 2)}}
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
            bench.cancel()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--configs", default="2/20,2/2,1/20,5/20",
                        help="poll/idle_poll pairs in ms")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = [asyncio.run(_measure(*(int(v) for v in pair.split("/")), args.events))
               for pair in args.configs.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("%-10s %9s %9s %8s   %s" % ("poll/idle", "idle CPU", "charging", "RSS",
                                      "unplug -> coil off p50 / p99 / max"))
    for r in results:
        lat = r["unplug_to_coil_off_ms"]
        print("%-10s %8.2f%% %8.2f%% %6.1fMB   %.1f / %.1f / %.1f ms" % (
            "%d/%d ms" % (r["poll_ms"], r["idle_poll_ms"]), r["idle_cpu_percent"],
            r["charging_cpu_percent"], r["rss_mb"], lat["p50"], lat["p99"], lat["max"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

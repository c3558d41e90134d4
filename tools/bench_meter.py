"""Benchmark of the Modbus meter client (hal/modbus_client.py), side by side in one run.

    python -m tools.bench_meter [--seconds S] [--rounds N] [--json]

Full sdm630 snapshots (every block of its plan: 4 reads, 28 registers) from a simulated
meter served by `evse meter serve` in its own process, over
  - Modbus/TCP on 127.0.0.1,
  - Modbus RTU on a pty pair paced at 9600 Bd and at 115200 Bd 8N1 (simulator/rs485.py:
    every byte takes its wire time, so these rates are what a real line allows),
read three ways, alternated, medians of --rounds:
  - ours: ModbusMeter.read() (bus lock, RTU inter-frame silence, retries armed, decoding),
  - ours without the silence (quiet_ms=0), which shows what the 3.5-character pause the
    Modbus serial spec requires costs, apart from the code,
  - bare: a plain pymodbus loop doing the same block reads, no decoding.
Client CPU per snapshot is this process's CPU time (user + system) over the snapshots; the
server's CPU is not in it.
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "sdm630"


def _serve(*flags):
    """`evse meter serve` in its own process; returns (process, its first line)."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "tools.meter_cli", "serve", "--model", MODEL, *flags],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if not line:
        process.kill()
        raise RuntimeError("evse meter serve %s did not start" % " ".join(flags))
    return process, line


async def _measure(read_snapshot, seconds):
    await read_snapshot()                               # connect, warm up
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds or done < 3:
        await read_snapshot()
        done += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return done / wall, cpu / done * 1e6


async def _ours(link, seconds, quiet):
    from hal.meter_profiles import PROFILES
    from hal.modbus_client import Bus, ModbusMeter
    bus = Bus(**link, timeout_ms=2000, quiet_ms=None if quiet else 0)
    meter = ModbusMeter(PROFILES[MODEL], 1, bus, model=MODEL)
    try:
        return await _measure(meter.read, seconds)
    finally:
        bus.close()


async def _bare(link, seconds):
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType
    from hal.meter_profiles import PROFILES
    from hal.modbus_meter import plan
    if "tcp" in link:
        client = AsyncModbusTcpClient(link["tcp"][0], port=link["tcp"][1], timeout=2)
    else:
        client = AsyncModbusSerialClient(link["serial"], framer=FramerType.RTU,
                                         baudrate=link["baud"], timeout=2)
    await client.connect()
    blocks = plan(PROFILES[MODEL])

    async def snapshot():
        for function, start, count in blocks:
            read = client.read_input_registers if function == 4 else \
                client.read_holding_registers
            answer = await read(start, count=count, device_id=1)
            if answer.isError():
                raise RuntimeError("bare read failed: %s" % answer)

    try:
        return await _measure(snapshot, seconds)
    finally:
        client.close()


def bench_link(name, flags, seconds, rounds):
    from hal.modbus_client import parse_host_port
    server, line = _serve(*flags)
    try:
        if "--tcp" in flags:
            link = {"tcp": parse_host_port(line.rsplit(" ", 1)[1])}
        else:
            link = {"serial": line.rsplit(" ", 1)[1], "baud": int(flags[flags.index("--baud")
                                                                          + 1])}
        runs = {"ours": [], "ours_no_quiet": [], "bare": []}
        for _ in range(rounds):
            runs["ours"].append(asyncio.run(_ours(link, seconds, quiet=True)))
            if "serial" in link:
                runs["ours_no_quiet"].append(asyncio.run(_ours(link, seconds, quiet=False)))
            runs["bare"].append(asyncio.run(_bare(link, seconds)))
    finally:
        server.terminate()
        server.wait()
    figures = {"link": name}
    for kind, results in runs.items():
        if results:
            figures[kind + "_per_s"] = round(statistics.median(r[0] for r in results), 1)
            figures[kind + "_cpu_us"] = int(statistics.median(r[1] for r in results))
    figures["ratio"] = round(figures["ours_per_s"] / figures["bare_per_s"], 3)
    if "ours_no_quiet_per_s" in figures:
        figures["ratio_no_quiet"] = round(figures["ours_no_quiet_per_s"] /
                                          figures["bare_per_s"], 3)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_meter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="measuring time per run (default 2; 9600 Bd gets 2x)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated runs (default 7)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = [
        bench_link("tcp 127.0.0.1", ["--tcp", "127.0.0.1:0"], args.seconds, args.rounds),
        bench_link("rtu pty 9600 8N1 paced", ["--pty", "--baud", "9600"],
                   args.seconds * 2, args.rounds),
        bench_link("rtu pty 115200 8N1 paced", ["--pty", "--baud", "115200"],
                   args.seconds, args.rounds),
    ]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("%s full snapshots/s (4 block reads each), server in its own process, medians of %d"
          % (MODEL, args.rounds))
    print("%-26s %10s %10s %8s %14s %14s" % ("link", "ours/s", "bare/s", "ratio",
                                              "ours CPU us", "bare CPU us"))
    for f in report:
        print("%-26s %10.1f %10.1f %8.3f %14d %14d" % (
            f["link"], f["ours_per_s"], f["bare_per_s"], f["ratio"], f["ours_cpu_us"],
            f["bare_cpu_us"]))
        if "ours_no_quiet_per_s" in f:
            print("%-26s %10.1f %10s %8.3f %14d" % (
                "  ours, t3.5 silence off", f["ours_no_quiet_per_s"], "",
                f["ratio_no_quiet"], f["ours_no_quiet_cpu_us"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of the agent on MicroPython (the unix port), from the very bundle `evse flash` would
copy to a board (boards/unix.toml).

    python -m tools.bench_mcu [--events N] [--calls N] [--json]

- bundle: bytes of compiled modules;
- heap per module imported (from .mpy; on the unix port bytecode lives in the heap, on a board
  with frozen modules it stays in flash);
- the smallest `-X heapsize` (16 KB steps) at which the whole scripted session with OCPP passes
  against the local CSMS, and the peak heap allocated during it;
- Heartbeat round trips/s of the agent's stack (Rpc + agent/wsclient.py) on MicroPython
  against the local CSMS, and of the CPython agent on the same CSMS for comparison;
- the core's safety reaction on MicroPython with the scripted HAL: unplug while charging ->
  contactor-open command.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAP_LOW, HEAP_HIGH = 128, 512          # KB, the bisection's range


def _micropython():
    return os.path.join(os.path.dirname(sys.executable), "micropython")


def _mp(folder, heap_kb, *args, timeout=300):
    done = subprocess.run([_micropython(), "-X", "heapsize=%dk" % heap_kb] + list(args),
                          cwd=folder, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def _json_line(output):
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(output[-2000:])


def _session(folder, heap_kb, url):
    code, output = _mp(folder, heap_kb, "main.py", url)
    shutil.rmtree(os.path.join(folder, "state"), ignore_errors=True)
    ok = code == 0 and "session done: every message delivered" in output
    peak = re.search(r"heap: peak (\d+)", output)
    return ok, int(peak.group(1)) if peak else None


def measure(events=50, calls=2000):
    from tools import boardfile
    from tools.bench_ocpp import _agent_round_trips, _start_csms
    from tools.bundle import bundle
    import asyncio
    folder = tempfile.mkdtemp(prefix="evse-mcu-")
    csms, url = _start_csms()
    try:
        manifest = bundle(boardfile.load(os.path.join(ROOT, "boards", "unix.toml")), folder)
        shutil.copy(os.path.join(ROOT, "tools", "mp_bench.py"), folder)
        result = {"bundle_bytes": manifest["total_bytes"], "mpy_bytes": manifest["mpy_bytes"]}
        result.update(_json_line(_mp(folder, 1024, "mp_bench.py", "modules")[1]))
        result["latency"] = _json_line(_mp(folder, 512, "mp_bench.py", "latency",
                                           str(events))[1])
        result["round_trips"] = _json_line(_mp(folder, 512, "mp_bench.py", "rtt", url,
                                               str(calls))[1])
        result["round_trips_cpython_agent"] = int(asyncio.run(_agent_round_trips(url, calls)))
        low, high = HEAP_LOW, HEAP_HIGH
        ok, peak = _session(folder, high, url)
        if not ok:
            raise RuntimeError("the session fails even at %d KB" % high)
        while high - low > 16:
            middle = (low + high) // 2 // 16 * 16
            passed, middle_peak = _session(folder, middle, url)
            if passed:
                high, peak = middle, middle_peak
            else:
                low = middle
        result["smallest_heapsize_kb"] = high
        result["session_peak_bytes"] = peak
        return result
    finally:
        csms.terminate()
        csms.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_mcu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.events, args.calls)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("bundle: %d bytes (%d of .mpy)" % (result["bundle_bytes"], result["mpy_bytes"]))
    print("heap per module imported (.mpy, KB):")
    for name, size in sorted(result["heap_per_module"].items(), key=lambda kv: -kv[1]):
        print("  %-22s %6.1f" % (name, size / 1024))
    print("  %-22s %6.1f" % ("total", result["total"] / 1024))
    print("whole OCPP session: smallest -X heapsize %d KB, peak allocated %.1f KB" % (
        result["smallest_heapsize_kb"], (result["session_peak_bytes"] or 0) / 1024))
    print("Heartbeat round trips/s: MicroPython agent %d, CPython agent %d (same CSMS)" % (
        result["round_trips"]["round_trips_per_s"], result["round_trips_cpython_agent"]))
    lat = result["latency"]
    print("unplug -> contactor open on MicroPython, %d events: p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms" % (lat["events"], lat["p50_us"] / 1000, lat["p99_us"] / 1000,
                           lat["max_us"] / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of the agent on MicroPython (the unix port), from the very bundle `evse flash` would
copy to a board (boards/unix.toml).

    python -m tools.bench_mcu [--events N] [--calls N] [--json]

- bundle: bytes of compiled modules;
- heap per module imported (from .mpy; on the unix port bytecode lives in the heap, on a board
  with frozen modules it stays in flash);
- the smallest `-X heapsize` (16 KB steps) at which the whole scripted session passes: OCPP
  against the local CSMS, the WebSocket client, and an SDM630 read over Modbus RTU on a pty
  paced at 9600 Bd (`evse meter serve --pty`) - agent + OCPP + WS + meter. Once with the
  modules as .mpy files (bytecode copied into the heap) and once from a ROMFS image
  (`evse bundle --romfs`; the unix port reads the image file into the heap, so its size is
  taken off: what is left is what a board with a ROMFS partition needs);
- the same imports, and the same session's live heap peak, on a 32-bit MicroPython
  (tools/bench_wasm.py; the unix port is 64-bit), from ROMFS and from .mpy, when node and npm
  are there;
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


def _smallest_heap(folder, url):
    """(smallest -X heapsize in KB at which the session passes, peak allocated then)."""
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
    return high, peak


def _serve_meter():
    """An SDM630 before a steady 16 A on one phase, on a paced pty: (process, device)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "meter", "serve", "--model", "sdm630", "--pty",
         "--phases", "1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    device = re.search(r" on (/dev/\S+)", line)
    if not device:
        process.terminate()
        raise RuntimeError("evse meter serve: %r" % line)
    return process, device.group(1)


def _board_with_meter(device):
    from tools import boardfile
    with open(os.path.join(ROOT, "boards", "unix.toml")) as file:
        text = file.read().replace('model = "sim"', 'model = "sdm630"\nserial = "%s"' % device)
    folder = tempfile.mkdtemp(prefix="evse-board-")
    try:
        path = os.path.join(folder, "unix-sdm630.toml")
        with open(path, "w") as file:
            file.write(text)
        return boardfile.load(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bits32(folder, url):
    """The imports and the whole session on 32-bit MicroPython, from ROMFS and from .mpy."""
    from tools import bench_wasm
    try:
        return {source: {"imports": bench_wasm.measure(folder, source=source)["total"],
                         "session": bench_wasm.session(folder, url, source)}
                for source in ("rom", "mpy")}
    except (bench_wasm.BenchError, OSError, subprocess.SubprocessError) as error:
        return {"skipped": str(error)}


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
        meter, device = _serve_meter()
        try:
            board = _board_with_meter(device)
            bundle(board, folder)
            result["session_heap_kb"], result["session_peak_bytes"] = \
                _smallest_heap(folder, url)
            result["bits32"] = _bits32(folder, url)
            rom = tempfile.mkdtemp(prefix="evse-mcu-romfs-")
            try:
                image = bundle(board, rom, romfs=True)["files"]["romfs.img"]["size"]
                heap_kb, _ = _smallest_heap(rom, url)
                result["session_romfs_heap_kb"] = heap_kb
                result["romfs_image_bytes"] = image
            finally:
                shutil.rmtree(rom, ignore_errors=True)
        finally:
            meter.terminate()
            meter.wait()
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
    print("whole session, agent + OCPP + WS + Modbus RTU meter (64-bit unix port):")
    print("  from .mpy files: smallest -X heapsize %d KB (peak allocated %.1f KB)" % (
        result["session_heap_kb"], (result["session_peak_bytes"] or 0) / 1024))
    print("  from ROMFS: smallest -X heapsize %d KB, less the %.1f KB image read into the "
          "heap: %.1f KB" % (result["session_romfs_heap_kb"],
                             result["romfs_image_bytes"] / 1024,
                             result["session_romfs_heap_kb"] -
                             result["romfs_image_bytes"] / 1024))
    bits32 = result["bits32"]
    if "skipped" in bits32:
        print("32-bit MicroPython: skipped (%s)" % bits32["skipped"])
    else:
        print("imports on 32-bit MicroPython (webassembly port): %.1f KB from ROMFS, %.1f KB "
              "from .mpy (64-bit unix port: %.1f KB from .mpy)" % (
                  bits32["rom"]["imports"] / 1024, bits32["mpy"]["imports"] / 1024,
                  result["total"] / 1024))
        for source, name in (("rom", "ROMFS"), ("mpy", ".mpy")):
            run = bits32[source]["session"]
            print("whole session, the same, 32-bit, from %s: live heap median %.1f KB, peak "
                  "%.1f KB; less %.1f KB of modules that are C on a board: %.1f KB, %.1f KB" % (
                      name, run["live_median"] / 1024, run["live_peak"] / 1024,
                      run["shadowed_modules"] / 1024, run["board_median"] / 1024,
                      run["board_peak"] / 1024))
    print("Heartbeat round trips/s: MicroPython agent %d, CPython agent %d (same CSMS)" % (
        result["round_trips"]["round_trips_per_s"], result["round_trips_cpython_agent"]))
    lat = result["latency"]
    print("unplug -> contactor open on MicroPython, %d events: p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms" % (lat["events"], lat["p50_us"] / 1000, lat["p99_us"] / 1000,
                           lat["max_us"] / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())

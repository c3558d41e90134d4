"""Benchmarks of the foundation: safety latency, virtual-time speed, MicroPython heap.

    python -m tools.bench [latency] [speed] [heap] [--events N] [--json]

- latency: `--realtime` agent on the simulated board (the same runtime a Linux board runs,
  on the real asyncio loop). Each event brings the EV to charging, then changes the world
  (EV opens S2 = C->B, unplug, RCD trip, diode short, CP short) and times, with
  perf_counter_ns, the gap from the change to the contactor-open command reaching the HAL.
- speed: the 8-hour scenario in virtual time; simulated seconds per wall second.
- heap: records the controller's inputs for the normal-session scenario in CPython, replays
  them on MicroPython (tests/mp_replay.py) from .py and from mpy-cross .mpy, checks the
  outputs match, and bisects the smallest -X heapsize that still passes.

Figures are medians/percentiles of one run on this machine, printed side by side; nothing
here is a pass/fail test.
"""
import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIGGERS = ("ev_pause", "unplug", "rcd_trip", "diode_short", "cp_short")


def _board():
    from tools import boardfile
    return boardfile.load(boardfile.find("sim"))


def _percentile(values, fraction):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


# ---------------------------------------------------------------------------------- latency
async def _until(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.0005)


def _trigger(kind, connector):
    """Change the world; returns the perf_counter_ns at which the change happened."""
    ev = connector.ev
    if kind == "ev_pause":
        ev.driver_wants_charge = False
        ev.open_s2()
        ev.current_ma = 0
        t0 = time.perf_counter_ns()
        connector.pilot.changed()
    elif kind == "unplug":
        t0 = time.perf_counter_ns()
        connector.unplug()
    elif kind == "rcd_trip":
        connector.rcd.tripped = "dc"
        t0 = time.perf_counter_ns()
        connector.rcd.changed()
    elif kind == "diode_short":
        ev.diode_shorted = True
        t0 = time.perf_counter_ns()
        connector.pilot.changed()
    elif kind == "cp_short":
        connector.cp_shorted = True
        t0 = time.perf_counter_ns()
        connector.pilot.changed()
    return t0


async def _latency(events_per_kind):
    from simulator.ev import Ev
    from simulator.runner import Simulation
    from simulator.timeline import Timeline
    simulation = Simulation(_board(), realtime=True, timeline=Timeline(quiet=True)).build()
    simulation.world.bind()
    agent = simulation.agent
    connector = simulation.world.connectors[1]
    connector.contactor.close_ms = connector.contactor.open_ms = 1
    evse = simulation.evse(1)
    opened = []
    original_set = connector.contactor.set

    def timed_set(closed):
        if not closed:
            opened.append(time.perf_counter_ns())
        original_set(closed)
    connector.contactor.set = timed_set
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.01)
    results = {kind: [] for kind in TRIGGERS}
    try:
        for _ in range(events_per_kind):
            for kind in TRIGGERS:
                connector.plug(Ev(delay_ms=0))
                connector.driver(True)
                agent.act(agent.station.present_token, "04A1B2C3", None)
                await _until(lambda: connector.contactor.closed and evse.state == "charging")
                opened.clear()
                t0 = _trigger(kind, connector)
                await _until(lambda: opened)
                results[kind].append((opened[0] - t0) / 1e6)
                # back to a clean, idle connector
                connector.unplug()
                connector.cp_shorted = False
                connector.rcd.reset()
                connector.pilot.changed()
                connector.rcd.changed()
                await _until(lambda: evse.state == "idle" and not len(evse.faults)
                             and not connector.contactor.closed)
    finally:
        agent.stop()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return results


def bench_latency(events_per_kind):
    results = asyncio.run(_latency(events_per_kind))
    every = [v for values in results.values() for v in values]
    rows = {}
    for kind, values in list(results.items()) + [("all", every)]:
        rows[kind] = {"events": len(values), "p50_ms": round(statistics.median(values), 3),
                      "p99_ms": round(_percentile(values, 0.99), 3),
                      "max_ms": round(max(values), 3)}
    return rows


# ------------------------------------------------------------------------------------ speed
def bench_speed(runs):
    from simulator import scenario
    from simulator.runner import simulate
    from simulator.timeline import Timeline
    board = _board()
    steps = scenario.parse_file(os.path.join(ROOT, "simulator", "scenarios", "eight-hours.scn"))
    walls, simulated = [], 0
    for _ in range(runs):
        # the controller, runtime and simulated world alone (OCPP has its own figures)
        ok, simulation = simulate(board, steps, timeline=Timeline(quiet=True))
        assert ok, "eight-hours scenario failed"
        walls.append(simulation.wall_seconds)
        simulated = simulation.now_ms() / 1000
    wall = statistics.median(walls)
    return {"simulated_s": simulated, "wall_s_median": round(wall, 3),
            "wall_s_min": round(min(walls), 3), "runs": runs,
            "speedup_median": int(simulated / wall), "speedup_best": int(simulated / min(walls))}


# ------------------------------------------------------------------------------------- heap
def _record_trace(path, scenario_name="normal-session"):
    from simulator import clock, scenario
    from simulator.runner import Simulation
    from simulator.timeline import Timeline
    from simulator.trace import Recorder
    board = _board()
    steps = scenario.parse_file(os.path.join(ROOT, "simulator", "scenarios",
                                             scenario_name + ".scn"))
    simulation = Simulation(board, timeline=Timeline(quiet=True))
    recorders = []
    build = simulation.build

    def build_and_record():
        build()
        recorders.append(Recorder(simulation.evse(1)))
        return simulation
    simulation.build = build_and_record
    assert clock.run(simulation.run(steps)), scenario_name + " failed"
    recorders[0].dump(path)
    board_json = path + ".board.json"
    with open(board_json, "w") as file:
        json.dump({"connectors": board["connectors"], "timing": board["timing"]}, file)
    return board_json


def _tool(name):
    """A command from this venv (next to the interpreter) or from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else shutil.which(name) or name


def _replay(path, board_json, heap, module_dir):
    env = dict(os.environ, MICROPYPATH=".frozen:" + module_dir)
    done = subprocess.run([_tool("micropython"), "-X", "heapsize=%d" % heap,
                           os.path.join(ROOT, "tests", "mp_replay.py"), path, board_json],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode == 0, done.stdout + done.stderr


def _compile_mpy(target):
    for package in ("agent", "hal"):
        os.makedirs(os.path.join(target, package), exist_ok=True)
        for name in os.listdir(os.path.join(ROOT, package)):
            if name.endswith(".py"):
                subprocess.run([_tool("mpy-cross"), "-o", os.path.join(target, package, name[:-3] + ".mpy"),
                                os.path.join(package, name)], cwd=ROOT, check=True)


def _smallest_heap(path, board_json, module_dir, low=8 * 1024, high=1024 * 1024):
    ok, output = _replay(path, board_json, high, module_dir)
    if not ok:
        raise RuntimeError("replay fails even at %d bytes:\n%s" % (high, output))
    while high - low > 1024:
        middle = (low + high) // 2 // 1024 * 1024
        if _replay(path, board_json, middle, module_dir)[0]:
            high = middle
        else:
            low = middle
    return high, _replay(path, board_json, high, module_dir)[1]


def bench_heap():
    with tempfile.TemporaryDirectory() as folder:
        trace = os.path.join(folder, "normal-session.trace")
        board_json = _record_trace(trace)
        mpy_dir = os.path.join(folder, "mpy")
        _compile_mpy(mpy_dir)
        rows = {}
        for label, module_dir in (("py", ROOT), ("mpy", mpy_dir)):
            heap, output = _smallest_heap(trace, board_json, module_dir)
            figures = [line for line in output.splitlines() if line.startswith("heap:")]
            verdict = output.strip().splitlines()[-1]
            rows[label] = {"min_heapsize": heap, "replay": verdict,
                           "figures": figures[0] if figures else ""}
        with open(trace) as file:
            rows["trace_lines"] = sum(1 for _ in file)
        rows["mpy_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                                for d, _, files in os.walk(mpy_dir) for f in files)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["latency", "speed", "heap"],
                        choices=["latency", "speed", "heap"])
    parser.add_argument("--events", type=int, default=1000,
                        help="latency events in total, spread over the triggers (default 1000)")
    parser.add_argument("--runs", type=int, default=5, help="speed runs (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    if "latency" in args.which:
        report["latency"] = bench_latency(max(1, -(-args.events // len(TRIGGERS))))
    if "speed" in args.which:
        report["speed"] = bench_speed(args.runs)
    if "heap" in args.which:
        report["heap"] = bench_heap()
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
        return 0
    if "latency" in report:
        print("safety reaction, world change -> contactor-open command (--realtime, CPython)")
        print("  %-12s %7s %9s %9s %9s" % ("trigger", "events", "p50 ms", "p99 ms", "max ms"))
        for kind, row in report["latency"].items():
            print("  %-12s %7d %9.3f %9.3f %9.3f" % (kind, row["events"], row["p50_ms"],
                                                    row["p99_ms"], row["max_ms"]))
        print("  (standard: 100 ms; target p99 <= 20 ms)")
    if "speed" in report:
        s = report["speed"]
        print("virtual time: %.0f simulated s in %.3f s wall (median of %d, best %.3f s): "
              "%d x real time (best %d x; target >= 20000 x)" % (
                  s["simulated_s"], s["wall_s_median"], s["runs"], s["wall_s_min"],
                  s["speedup_median"], s["speedup_best"]))
    if "heap" in report:
        h = report["heap"]
        print("MicroPython heap, normal-session trace (%d lines), outputs compared with CPython:"
              % h["trace_lines"])
        for label in ("py", "mpy"):
            row = h[label]
            print("  from .%-3s smallest -X heapsize %6d B; %s; %s" % (
                label, row["min_heapsize"], row["replay"], row["figures"]))
        print("  .mpy bundle of agent/ + hal/: %d bytes" % h["mpy_bytes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

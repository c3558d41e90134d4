"""What the agent writes to persistent storage while it charges: the flash-wear figure.

    python -m tools.bench_flash [--scenario eight-hours] [--json]

Runs a bundled scenario with OCPP against the local CSMS in virtual time, the agent's
storage wrapped to count every write() (atomic replace) and append() (journal), by file,
then states bytes and operations per hour of charging and what that means for a board's
flash: LittleFS (MicroPython's filesystem on ESP32 and RP2040) writes copy-on-write and
spreads erases over every free block, so the wear of a steady load is
    bytes per hour x overhead / (free filesystem bytes x erase cycles)
with overhead 4 (LittleFS rewrites a metadata pair and the tail block of an appended file:
a conservative factor for small appends), 1 MB free and 100 000 erase cycles (NOR flash).
"""
import argparse
import json
import os
import sys

from hal.storage_fs import MemoryStorage

ERASE_CYCLES = 100000
FREE_BYTES = 1024 * 1024
LITTLEFS_OVERHEAD = 4


class CountingStorage(MemoryStorage):
    def __init__(self):
        super().__init__()
        self.by_file = {}

    def _count(self, name, data, kind):
        entry = self.by_file.setdefault(name, {"write": 0, "append": 0, "bytes": 0})
        entry[kind] += 1
        entry["bytes"] += len(data)

    def write(self, name, data):
        self._count(name, data, "write")
        super().write(name, data)

    def append(self, name, data):
        self._count(name, data, "append")
        super().append(name, data)


def measure(scenario="eight-hours"):
    from simulator import clock
    from simulator.runner import OcppOptions, Simulation
    from simulator.scenario import parse_file
    from simulator.timeline import Timeline
    from tools import boardfile
    from tools.cli import _scenario_path
    board = boardfile.load(boardfile.find("sim"))
    steps = parse_file(_scenario_path(scenario))
    simulation = Simulation(board, timeline=Timeline(quiet=True), ocpp=OcppOptions())
    storage = simulation.storage = CountingStorage()
    ok = clock.run(simulation.run(steps))
    hours = simulation.now_ms() / 3600000
    total = sum(e["bytes"] for e in storage.by_file.values())
    per_hour = total / hours
    years = FREE_BYTES * ERASE_CYCLES / (per_hour * LITTLEFS_OVERHEAD) / (24 * 365)
    return {"scenario": scenario, "expectations_held": ok, "hours": round(hours, 2),
            "bytes_per_hour": int(per_hour),
            "operations_per_hour": int(sum(e["write"] + e["append"]
                                           for e in storage.by_file.values()) / hours),
            "by_file": storage.by_file,
            "years_of_continuous_charging": round(years, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_flash", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="eight-hours")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.scenario)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("%s: %.2f h simulated, %d bytes and %d operations per hour" % (
        result["scenario"], result["hours"], result["bytes_per_hour"],
        result["operations_per_hour"]))
    for name, entry in sorted(result["by_file"].items()):
        print("  %-14s %5d writes %6d appends %9d bytes" % (
            name, entry["write"], entry["append"], entry["bytes"]))
    print("flash wear: %.1f years of continuous charging on %d KB free LittleFS, %d erase "
          "cycles, x%d overhead" % (result["years_of_continuous_charging"],
                                    FREE_BYTES // 1024, ERASE_CYCLES, LITTLEFS_OVERHEAD))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())

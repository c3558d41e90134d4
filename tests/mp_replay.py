"""Replay a recorded controller trace (simulator/trace.py) and check the outputs match.

Runs on MicroPython and on CPython:

    MICROPYPATH=.frozen:. micropython -X heapsize=64k tests/mp_replay.py TRACE [BOARD.json]

Feeds every recorded input to a fresh `agent.evse.Evse` (configured like the recording's
board) and compares every command and event it gives with the recorded ones, as parsed JSON
(never as text: MicroPython orders dict keys differently). Prints heap figures and a last line
`N passed, M failed` (N = outputs that matched); exit status 1 on any mismatch.
"""
import gc
import json
import sys

try:
    _mem_alloc = gc.mem_alloc
except AttributeError:      # CPython: no GC heap figures
    _mem_alloc = None


def _heap():
    if _mem_alloc is None:
        return 0
    gc.collect()
    return _mem_alloc()


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def main(argv):
    trace_path = argv[1]
    board = {}
    if len(argv) > 2:
        with open(argv[2]) as file:
            board = json.load(file)
    heap_start = _heap()
    from agent.evse import Evse
    from agent.params import Params
    from hal.interfaces import MeterSample
    heap_imported = _heap()
    c = board.get("connectors", [{}])[0]
    evse = Evse(Params(board.get("timing")), connector_id=c.get("id", 1),
                max_current_ma=c.get("max_current", 32000), phases=c.get("phases", 3),
                socket=c.get("type", "socket") == "socket",
                cable_max_current_ma=c.get("cable_max_current"),
                ventilation=c.get("ventilation", False),
                contactor_feedback=c.get("contactor_feedback", True),
                lock_feedback=c.get("lock_feedback", True))
    heap_built = _heap()
    peak = heap_built
    inputs = 0
    want = {"cmd": [], "evt": []}
    got = {"cmd": [], "evt": []}

    def drain():
        for item in evse.take_commands():
            got["cmd"].append(["cmd"] + _plain(item))
        for item in evse.take_events():
            got["evt"].append(["evt"] + _plain(item))

    with open(trace_path) as file:
        for text in file:
            line = json.loads(text)
            if line[0] != "in":
                want[line[0]].append(line)
                continue
            name, now, args = line[1], line[2], line[3:]
            if name == "meter_sample":
                args = [MeterSample(*args[0])]
            getattr(evse, name)(now, *args)
            drain()
            inputs += 1
            if inputs % 64 == 0:
                heap = _heap()
                if heap > peak:
                    peak = heap
    matched = failed = 0
    # the runtime drains outputs per service pass, not per input: compare each kind's
    # whole sequence in order (events carry their time)
    for kind in ("cmd", "evt"):
        for index in range(max(len(want[kind]), len(got[kind]))):
            w = want[kind][index] if index < len(want[kind]) else None
            g = got[kind][index] if index < len(got[kind]) else None
            if w == g:
                matched += 1
            else:
                failed += 1
                if failed <= 5:
                    print("%s #%d differs:\n  want %r\n  got  %r" % (kind, index, w, g))
    heap_end = _heap()
    if heap_end > peak:
        peak = heap_end
    if _mem_alloc is not None:
        print("heap: interpreter %d B, core imported +%d B, controller +%d B, peak live %d B"
              " (+%d B over start) over %d inputs" % (
                  heap_start, heap_imported - heap_start, heap_built - heap_imported, peak,
                  peak - heap_start, inputs))
    print("%d passed, %d failed" % (matched, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

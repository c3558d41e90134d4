"""Record every input a controller receives and every output it gives (CPython).

A trace is JSON lines: `["in", method, now, args...]` and `["out", command-or-event...]`.
`tests/mp_replay.py` feeds the inputs to the same controller under MicroPython and checks
that it gives the same outputs, so "the same core on both interpreters" is a measured fact,
and the replay measures the core's heap on MicroPython for a real session.
"""
import json

from hal.interfaces import MeterSample

INPUTS = ("pilot_sample", "contactor_feedback", "lock_feedback", "rcd_status",
          "rcd_selftest_result", "meter_sample", "meter_failed", "pp_reading", "temperature",
          "authorize", "stop", "set_limit", "set_available", "reset_faults", "poll")


def sample_to_list(sample):
    return [getattr(sample, name) for name in MeterSample.__slots__]


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class Recorder:
    def __init__(self, evse):
        self.evse = evse
        self.lines = []
        for name in INPUTS:
            self._wrap(name)
        self._wrap_output("take_commands", "cmd")
        self._wrap_output("take_events", "evt")

    def _wrap(self, name):
        original = getattr(self.evse, name)
        lines = self.lines

        def recorded(now, *args):
            if name == "meter_sample":
                logged = [sample_to_list(args[0])]
            else:
                logged = list(args)
            lines.append(["in", name, now] + logged)
            return original(now, *args)
        setattr(self.evse, name, recorded)

    def _wrap_output(self, name, tag):
        original = getattr(self.evse, name)
        lines = self.lines

        def taken():
            items = original()
            for item in items:
                lines.append([tag] + _plain(item))
            return items
        setattr(self.evse, name, taken)

    def dump(self, path):
        with open(path, "w") as file:
            for line in self.lines:
                file.write(json.dumps(line, separators=(",", ":")) + "\n")
        return len(self.lines)

"""Quantities written in scenario and board files: text with a unit in, an integer out.

Integers in fixed units (ms, mA, Wh, 0.1 degC, W, ohm, %) because the agent counts in integer
milli-units (DESIGN.md decision 1: MCU floats are single precision). The number is read as an
exact decimal, so `0.1s` is exactly 100 ms; a value finer than the target unit is an error, not
silently rounded. A bare number is an error too: `wait 30` is ambiguous, `wait 30s` is not.
"""

import operator
import re
from decimal import Decimal
from fractions import Fraction

# ASCII digits only: `\d` would also accept e.g. Arabic-Indic digits, which no file means.
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"

_SECOND = 1000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE


class Quantity:
    """One kind of quantity: how each unit spelling converts to the integer target unit.

    With `compound`, several number+unit parts add up, largest unit first (`1h30m`), which is
    how durations are written by people and by `format_duration`.
    """

    def __init__(self, what, examples, units, resolution, signed=False, compound=False):
        self.what = what                  # "a duration", used in every message
        self.examples = examples          # "500ms, 30s or 2h"
        self.units = dict(units)          # spelling -> how many target units one of it is
        self.resolution = resolution      # "1 ms", for the "too fine" message
        self.signed = signed
        self.compound = compound
        # Longest spelling first, so `1ms` is not read as one minute and a stray `s`.
        spellings = "|".join(re.escape(u) for u in sorted(self.units, key=len, reverse=True))
        self._part = re.compile(r"\s*(%s)\s*(%s)" % (_NUMBER, spellings))

    def __repr__(self):
        return "Quantity(%r)" % self.what

    def expected(self, text, hint=""):
        return "expected %s like %s, got %r%s" % (self.what, self.examples, text, hint)

    def parse(self, text):
        """The integer value of `text` in the target unit; ValueError naming what was expected."""
        if not isinstance(text, str):
            raise ValueError(self.expected(text))
        body = text.strip()
        negative = body[:1] == "-"
        if body[:1] in ("-", "+"):
            body = body[1:]
        if re.fullmatch(_NUMBER, body.strip()):
            raise ValueError(self.expected(text, " (the unit is required)"))
        total = Fraction(0)
        factors = []
        position = 0
        while position < len(body):
            part = self._part.match(body, position)
            if part is None:
                raise ValueError(self.expected(text))
            factors.append(self.units[part.group(2)])
            # Decimal reads the literal exactly; Fraction keeps the sum exact.
            total += Fraction(Decimal(part.group(1))) * factors[-1]
            position = part.end()
        if not factors:
            raise ValueError(self.expected(text))
        if len(factors) > 1:
            if not self.compound:
                raise ValueError(self.expected(text))
            if any(a <= b for a, b in zip(factors, factors[1:])):
                raise ValueError(self.expected(text, " (each unit once, largest first)"))
        if negative and total and not self.signed:
            raise ValueError("%s cannot be negative, got %r" % (self.what, text))
        if total.denominator != 1:
            raise ValueError("%r is finer than the %s resolution of %s"
                             % (text, self.resolution, self.what))
        return -int(total) if negative else int(total)


DURATION = Quantity("a duration", "500ms, 30s or 2h",
                    {"ms": 1, "s": _SECOND, "min": _MINUTE, "m": _MINUTE, "h": _HOUR},
                    "1 ms", compound=True)
CURRENT = Quantity("a current", "16A, 6.5A or 500mA", {"mA": 1, "A": 1000}, "1 mA")
ENERGY = Quantity("an energy", "1500Wh or 10kWh", {"Wh": 1, "kWh": 1000}, "1 Wh")
TEMPERATURE = Quantity("a temperature", "66C, 66.5C or -5C", {"C": 10, "°C": 10}, "0.1 °C",
                       signed=True)
POWER = Quantity("a power", "7400W or 11kW", {"W": 1, "kW": 1000}, "1 W")
# U+03A9 (Greek capital omega) and U+2126 (ohm sign) look alike; editors produce either.
RESISTANCE = Quantity("a resistance", "220ohm, 220R or 1.5kohm",
                      {"ohm": 1, "R": 1, "\u03a9": 1, "\u2126": 1,
                       "kohm": 1000, "kR": 1000, "k\u03a9": 1000, "k\u2126": 1000},
                      "1 ohm")
PERCENT = Quantity("a percentage", "80%", {"%": 1}, "1 %")

parse_duration = DURATION.parse          # -> ms
parse_current = CURRENT.parse            # -> mA
parse_energy = ENERGY.parse              # -> Wh
parse_temperature = TEMPERATURE.parse    # -> 0.1 degC
parse_power = POWER.parse                # -> W
parse_resistance = RESISTANCE.parse      # -> ohm
parse_percent = PERCENT.parse            # -> %


def _milliseconds(ms):
    ms = operator.index(ms)   # a float here is a bug upstream, not something to round
    if ms < 0:
        raise ValueError("expected a non-negative number of milliseconds, got %r" % ms)
    return ms


def format_duration(ms):
    """`300ms`, `4.5s`, `2m03s`, `1h02m03.004s`: short for people; parse_duration reads it back."""
    ms = _milliseconds(ms)
    if ms < _SECOND:
        return "%dms" % ms
    hours, rest = divmod(ms, _HOUR)
    minutes, millis = divmod(rest, _MINUTE)
    seconds, fraction = divmod(millis, _SECOND)
    fields = [(hours, "h"), (minutes, "m"), (seconds, "s")]
    while fields[0][0] == 0:
        del fields[0]
    # Zero seconds are dropped only when there is no fraction to show (`1h`, but `1m00.5s`).
    while fields[-1][0] == 0 and not (fields[-1][1] == "s" and fraction):
        del fields[-1]
    text = "%d%s" % fields[0]
    for value, unit in fields[1:]:
        text += "%02d%s" % (value, unit)
    if fraction and fields[-1][1] == "s":
        text = text[:-1] + (".%03d" % fraction).rstrip("0") + "s"
    return text


def format_time(ms):
    """`01:02:03.004`: time since the start of a run, fixed width so timelines line up."""
    ms = _milliseconds(ms)
    hours, rest = divmod(ms, _HOUR)
    minutes, millis = divmod(rest, _MINUTE)
    seconds, fraction = divmod(millis, _SECOND)
    return "%02d:%02d:%02d.%03d" % (hours, minutes, seconds, fraction)

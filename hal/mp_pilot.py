"""The portable half of the microcontroller pilot and PP drivers: plain integer functions.

hal/mp_pilot_esp32.py and hal/mp_pilot_rp2.py own the few lines that touch `machine`; what
they measure is judged here, so it is unit-tested on CPython and under the MicroPython unix
port (tests/portable/test_mp_pilot.py). Integers only: ESP32 and RP2 builds have
single-precision floats.

How a pilot is sampled (both ports; spec/embedded.md §B.2). One ADC input reads the pilot
through a divider that maps -12..+12 V into the ADC's range. The generator is a 1 kHz PWM:
the pilot sits on its high plateau for `duty` of the period, from the rising edge on, and on
its low plateau for the rest. A sample counts only if the ADC read lay wholly inside one
plateau, away from the edges:

    rising edge                 falling edge                     next rising edge
    |<- settle ->|== high ==|   |<- settle ->|======= low =========|<- guard ->|
    0            SETTLE_US      high_us      high_us + SETTLE_US     PERIOD_US

- `sample_offsets()` plans where, counted from the rising edge, a read of `read_us` (the
  port's measured ADC read time) starts: the high plateau right after its settling time (as
  SmartEVSE: shortly after the rising edge, spec/standards.md §1.2 "never in the first
  10 us"); the low plateau late in the period, where a filtered front-end has settled most
  (SmartEVSE and the CH32 of SmartEVSE v4 sample at 95-96 %), but no later than LOW_GUARD_US
  before the next edge. A plateau too short for settle + read gets no sample (None).
- whether a read really lay inside its plateau is judged from what was measured around it,
  never from the plan, so interrupts, garbage collection or a late wake-up cost a sample,
  never a wrong one. RP2: `classify_sample()` on the PWM counter read before and after the
  ADC (the counter IS the phase): HIGH or LOW when the read lies wholly within that
  plateau, else EDGE (thrown away). ESP32: `bracket_ok()`: the PWM level (a GPIO wired
  back) checked `settle` before the read and again after it, the whole bracket shorter
  than the other plateau, proves the same without trusting any edge time stamp.
- `PlateauTracker` turns one read()'s valid samples into the (high_mv, low_mv) the HAL
  contract wants: the median per plateau. A plateau with no valid sample keeps its last
  value for up to `max_stale` reads, then reads UNREADABLE_MV (0 V). 0 V is state E for the
  high plateau and a diode fault for the low one: a pilot the board cannot see removes power
  (the agent's debounce still applies), it never keeps an old "C" alive.
- `calibrate()` is the front-end's two-point line (as hal/linux.py `Calibration`, in integer
  arithmetic): [[mV at the ADC pin, mV on the pilot], [..., ...]], from the board file's
  `pilot_calibration`. `u16_mv()` scales a `read_u16()` count to mV at the pin.

PP (IEC 61851-1 Annex B): `pp_ohms()` is hal/linux.py AdcProximityPilot's pull-up divider,
R = R_up * V / (V_ref - V), with "no resistor" above 95 % of the reference.

Pins in a board's `[connectors.mcu]`/`[mcu]` tables (hal/mp_drivers.py lists the keys) are
parsed by `parse_pin()`: an integer GPIO number, or a string "N", "!N" (active low), with an
optional "+up" / "+down" for an input's internal pull resistor ("!22+up"); a name instead of
a number is passed on to machine.Pin as it is ("LED").
"""
from agent.compat import const

PERIOD_US = const(1000)        # IEC 61851-1 Annex A: 1 kHz (spec/standards.md §1.1)
SETTLE_US = const(15)          # never sample in the first 10 us after an edge (rise time < 10 us
#                                in B, fall time < 13 us: spec/standards.md §1.1-1.2)
LOW_GUARD_US = const(40)       # a planned low-plateau read ends this long before the next edge
MAX_STALE_READS = const(10)    # reads without a valid sample before a plateau reads 0 V
UNREADABLE_MV = const(0)       # what a plateau that cannot be sampled reads: E / diode fault

HIGH = const(1)
LOW = const(2)
EDGE = const(0)                # a read that touched an edge or left its plateau: discarded

PULLS = ("up", "down")


def _div_round(numerator, denominator):
    """numerator / denominator rounded half away from zero, in integers (denominator > 0)."""
    half = denominator // 2
    if numerator >= 0:
        return (numerator + half) // denominator
    return -((-numerator + half) // denominator)


# -- calibration and scaling ----------------------------------------------------------------

def check_calibration(points):
    """((adc_mv, value_mv), (adc_mv, value_mv)) as integers, or ValueError saying why."""
    try:
        (adc_a, value_a), (adc_b, value_b) = points
    except (TypeError, ValueError):
        raise ValueError("calibration must be [[adc_mv, pilot_mv], [adc_mv, pilot_mv]], "
                         "got %r" % (points,))
    for number in (adc_a, value_a, adc_b, value_b):
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError("calibration points must be integers (mV), got %r" % (points,))
    if adc_a == adc_b:
        raise ValueError("calibration points need two different ADC readings, got %r"
                         % (points,))
    return ((adc_a, value_a), (adc_b, value_b))


def calibrate(adc_mv, points):
    """The input's mV for `adc_mv` at the ADC pin: the straight line through the two
    calibration points, rounded half away from zero."""
    (adc_a, value_a), (adc_b, value_b) = points
    numerator = (adc_mv - adc_a) * (value_b - value_a)
    denominator = adc_b - adc_a
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    return value_a + _div_round(numerator, denominator)


def u16_mv(raw, reference_mv):
    """mV at the ADC pin for a `read_u16()` count (0..65535 spans 0..reference_mv)."""
    return _div_round(raw * reference_mv, 65535)


# -- where to sample, and what a sample was ------------------------------------------------

def high_us(duty_permille, period_us=PERIOD_US):
    """How long the high plateau lasts, in us, at `duty_permille`."""
    return duty_permille * period_us // 1000


def sample_offsets(high, read_us, settle_us=SETTLE_US, period_us=PERIOD_US):
    """(high start, low start): when to start an ADC read of `read_us`, in us after the
    rising edge, for each plateau; None for a plateau too short to hold settle + read."""
    high_at = settle_us if settle_us + read_us <= high else None
    low_at = max(high + settle_us, period_us - LOW_GUARD_US - read_us)
    if low_at + read_us > period_us:
        low_at = None
    return high_at, low_at


def classify_sample(start_us, end_us, high, settle_us=SETTLE_US, period_us=PERIOD_US):
    """HIGH, LOW or EDGE for an ADC read that started `start_us` and ended `end_us` after the
    rising edge (the conversion lies in between) with a high plateau of `high` us."""
    if end_us < start_us:
        return EDGE
    if settle_us <= start_us and end_us <= high:
        return HIGH
    if high + settle_us <= start_us and end_us <= period_us:
        return LOW
    return EDGE


def bracket_ok(checked_us, start_us, end_us, other_us, settle_us=SETTLE_US):
    """Whether a read bracketed by two level checks lay wholly inside one plateau, at least
    `settle_us` after its edge, whatever interrupts did meanwhile (the ESP32 method). Times
    in us from a tick taken just BEFORE the first level check:
        0 <= first check <= checked_us; start_us <= conversion <= second check <= end_us.
    Both checks showed the plateau's level (the caller's part). No edge then lies between
    the checks: two edges (out of the plateau and back) need the other plateau's length,
    more than the `end_us` the whole bracket took; and the read started at least
    `settle_us` after the first check, so at least that long after the plateau began."""
    return start_us - checked_us >= settle_us and end_us < other_us


def median(values):
    """The middle value (the lower middle's and upper middle's mean, rounded, for an even
    count); None for no values."""
    count = len(values)
    if not count:
        return None
    ordered = sorted(values)
    middle = count // 2
    if count % 2:
        return ordered[middle]
    return _div_round(ordered[middle - 1] + ordered[middle], 2)


class PlateauTracker:
    """The (high_mv, low_mv) a pilot read() returns, from each read's valid samples."""
    __slots__ = ("high", "low", "stale_high", "stale_low", "max_stale")

    def __init__(self, max_stale=MAX_STALE_READS):
        self.max_stale = max_stale
        self.high = self.low = UNREADABLE_MV
        # no sample yet: the first read without one already reads 0 V
        self.stale_high = self.stale_low = max_stale

    def update(self, highs, lows):
        """Feed one read's samples (mV lists); returns (high_mv, low_mv)."""
        value = median(highs)
        if value is None:
            self.stale_high += 1
            if self.stale_high > self.max_stale:
                self.high = UNREADABLE_MV
        else:
            self.high, self.stale_high = value, 0
        value = median(lows)
        if value is None:
            self.stale_low += 1
            if self.stale_low > self.max_stale:
                self.low = UNREADABLE_MV
        else:
            self.low, self.stale_low = value, 0
        return self.high, self.low


# -- proximity pilot -----------------------------------------------------------------------

OPEN_PERMILLE = const(950)     # above 95 % of the reference: no resistor in the plug


def pp_ohms(mv, pullup_ohms, reference_mv):
    """PP resistance through a pull-up to `reference_mv`: R = R_up * V / (V_ref - V);
    None for an open circuit (no plug, broken cable)."""
    if mv is None or mv * 1000 >= reference_mv * OPEN_PERMILLE:
        return None
    if mv <= 0:
        return 0
    return _div_round(pullup_ohms * mv, reference_mv - mv)


# -- pins ----------------------------------------------------------------------------------

def parse_pin(spec, what="pin"):
    """(id, active_low, pull) for a pin spec: 17, "17", "!17", "!22+up", "5+down", "LED".
    `id` is an int for a number (a name stays a str); pull is None, "up" or "down"."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError("%s: a GPIO number is >= 0, got %d" % (what, spec))
        return spec, False, None
    if not isinstance(spec, str) or not spec:
        raise ValueError("%s: expected a GPIO number or a string like \"!22+up\", got %r"
                         % (what, spec))
    text = spec
    active_low = text.startswith("!")
    if active_low:
        text = text[1:]
    pull = None
    plus = text.find("+")
    if plus >= 0:
        pull = text[plus + 1:]
        text = text[:plus]
        if pull not in PULLS:
            raise ValueError("%s: %r: the pull after + is \"up\" or \"down\"" % (what, spec))
    if not text:
        raise ValueError("%s: %r names no pin" % (what, spec))
    return (int(text) if text.isdigit() else text), active_low, pull


def plain_pin_id(spec, what):
    """The pin of a spec that may not be active-low (a PWM output, an ADC input)."""
    pin_id, active_low, _ = parse_pin(spec, what)
    if active_low:
        raise ValueError("%s: %r: an active-low mark means nothing here" % (what, spec))
    return pin_id


READ_TIME_PROBES = 8            # ADC reads timed to learn how long one takes


# -- the generator side both ports share ------------------------------------------------------

PWM_FREQ_HZ = 1000              # IEC 61851-1: the pilot's 1 kHz


class PwmOutput:
    """Duty in permille onto a machine.PWM at 1 kHz (`self.pwm`): +12 V (state x1) is 100 %,
    -12 V (F) is 0 % with the PWM running (an idle PWM pin's level differs between ports).
    An inverting amplifier is handled by the PWM itself (`invert=`), so the duty here is the
    one the pilot line shows, and `self.duty` is what the samplers time their reads by."""

    def __init__(self, pwm):
        self.pwm = pwm              # started at 100 %: +12 V, no offer
        self.duty = 1000

    def set_pwm(self, duty_permille):
        self._write(min(max(int(duty_permille), 0), 1000))

    def set_static(self, level):
        if level == "x1":
            self._write(1000)
        elif level == "f":
            self._write(0)
        else:
            raise ValueError("pilot level %r: this front-end drives x1 (+12 V) and f (-12 V) "
                             "only" % (level,))

    def _write(self, duty):
        self.duty = duty
        if duty in (0, 1000):
            self.pwm.duty_u16(65535 if duty else 0)     # fully on or off, no glitch per period
        else:
            self.pwm.duty_ns(duty * (1000000000 // PWM_FREQ_HZ) // 1000)

"""Control pilot: plateau voltages -> CP state, and duty cycle <-> current (IEC 61851-1 Annex A).

Units are integers: millivolts, milliamps, duty cycle in permille (266 = 26.6 %), so the same
arithmetic holds on MCUs with single-precision floats.
"""
from agent.compat import const

# CP states as the high plateau shows them. "unknown" is the CP layer's state before the
# first reading and after the EVSE itself drove F or E (the EV could not be seen then).
STATES = ("A", "B", "C", "D", "E", "F")

# Windows of the high plateau, [low, high) in mV. The IEC windows are +-1 V around 12/9/6/3/0
# and -12 V (spec/standards.md §1.2); the gaps between them are split at the midpoints, as
# esp32-evse's calibration does, so every voltage belongs to exactly one state. A reading
# between 0 V and -12 V is not a state a healthy pilot can show: it lands in E (short), which
# removes power like a real short would.
WINDOWS = (
    ("A", 10500, 10 ** 9),
    ("B", 7500, 10500),
    ("C", 4500, 7500),
    ("D", 1500, 4500),
    ("E", -10500, 1500),
    ("F", -(10 ** 9), -10500),
)
_WINDOW = {}
for _state, _low, _high in WINDOWS:
    _WINDOW[_state] = (_low, _high)

# With PWM on, the low plateau must sit near -12 V (generator -12 V +-5 % -> >= 11.4 V in
# magnitude). A shorted EV diode lets it rise to -R/(R+1k)*12 V: -9.86 V at the largest
# state-B resistor (4.61 kOhm), less in C and D. The midpoint of -11.4 and -9.86 is the limit.
DIODE_FAULT_LOW_MV = const(-10600)


def classify(high_mv, previous=None, hysteresis_mv=0):
    """The CP state for a high-plateau voltage; `previous` keeps its window widened."""
    if previous in _WINDOW and hysteresis_mv:
        low, high = _WINDOW[previous]
        if low - hysteresis_mv <= high_mv < high + hysteresis_mv:
            return previous
    for state, low, high in WINDOWS:
        if low <= high_mv < high:
            return state
    return "E"  # unreachable: the windows cover every integer


def diode_ok(low_mv):
    return low_mv <= DIODE_FAULT_LOW_MV


# -- duty cycle <-> current (spec/standards.md §1.3) ---------------------------------------

MIN_CURRENT_MA = const(6000)
MAX_CURRENT_MA = const(80000)
NO_PWM = const(0)           # duty 0 from the encoder: do not run PWM at all (X1)


def duty_for_current(current_ma):
    """EVSE side (Table A.7, EVerest `ampere_to_duty_cycle`): permille, or NO_PWM below 5.9 A.

    The standard has a gap between 51 A and 52.5 A (85 % encodes both), so requests inside it
    are offered as 51 A. Above 80 A there is no encoding: ValueError.
    """
    if current_ma < 0 or current_ma > MAX_CURRENT_MA:
        raise ValueError("current %d mA outside 0..80 A" % current_ma)
    if current_ma < 5900:
        return NO_PWM
    if current_ma <= 6100:
        return 100
    if current_ma < 52500:
        if current_ma > 51000:
            current_ma = 51000
        return (current_ma + 30) // 60            # d % = I / 0.6 A
    return (current_ma + 125) // 250 + 640        # d % = I / 2.5 A + 64


def offer_for_current(current_ma):
    """The current actually offered for a request: 0 below 5.9 A (no PWM), 6 A for 5.9-6.1 A,
    51 A inside the 51-52.5 A gap; otherwise the request itself."""
    if current_ma < 5900:
        return 0
    if current_ma <= 6100:
        return 6000
    if 51000 < current_ma < 52500:
        return 51000
    return current_ma


def current_for_duty(duty_permille):
    """EV side (Table A.8): the current the EV may draw, in mA; 0 where no charging is allowed.

    3-7 % means digital communication: no current is offered through the PWM (0 here; see
    `is_digital`). 8-10 % is 6 A, 96-97 % is 80 A.
    """
    if duty_permille < 80 or duty_permille > 970:
        return 0
    if duty_permille < 100:
        return 6000
    if duty_permille <= 850:
        return duty_permille * 60
    if duty_permille <= 960:
        return (duty_permille - 640) * 250
    return 80000


def is_digital(duty_permille):
    return 30 <= duty_permille <= 70


# -- debounce ---------------------------------------------------------------------------------

RELEASING = {
    # transitions that take power away: confirmed after the short release debounce
    ("C", "B"), ("D", "B"), ("C", "A"), ("D", "A"), ("B", "A"),
    ("A", "E"), ("B", "E"), ("C", "E"), ("D", "E"),
    ("A", "F"), ("B", "F"), ("C", "F"), ("D", "F"), ("E", "F"),
    ("unknown", "A"), ("unknown", "E"), ("unknown", "F"),
    ("E", "A"), ("F", "A"),
}


class PilotReader:
    """Turns a stream of plateau samples into confirmed CP states (sans-I/O).

    Works the same whether samples arrive every millisecond from an ADC or only when a
    simulator's voltage changes: a candidate state is confirmed once it has been the latest
    classification for its debounce time, at `deadline()` if no sample comes in between.
    """

    def __init__(self, params):
        self.params = params
        self.state = "unknown"
        self.diode_fault = False
        self._candidate = None
        self._since = 0
        self._diode_candidate = False
        self._diode_since = 0

    def reset(self):
        """Forget the confirmed state (after the EVSE drove F or E and could not see the EV)."""
        self.state = "unknown"
        self._candidate = None
        # nor can it see the diode; the controller latches a diode fault until unplug
        self.diode_fault = False
        self._diode_candidate = False

    def _debounce(self, candidate):
        if (self.state, candidate) in RELEASING:
            return self.params.pilot_release_debounce_ms
        return self.params.pilot_debounce_ms

    def sample(self, now, high_mv, low_mv, pwm_on):
        """Feed one reading; the low plateau only means something while PWM runs.
        `poll` confirms it once it has lasted its debounce time."""
        seen = classify(high_mv, self.state, self.params.pilot_hysteresis_mv)
        if seen == self.state:
            self._candidate = None
        elif seen != self._candidate:
            self._candidate = seen
            self._since = now
        bad_diode = pwm_on and seen in ("B", "C", "D") and not diode_ok(low_mv)
        if bad_diode != self._diode_candidate:
            self._diode_candidate = bad_diode
            self._diode_since = now

    def settled(self):
        """No different reading is waiting for its debounce (nor a diode change)."""
        return self._candidate is None and self._diode_candidate == self.diode_fault

    def poll(self, now):
        """Confirm what has been stable long enough. Returns True if anything changed."""
        changed = False
        if self._candidate is not None and now - self._since >= self._debounce(self._candidate):
            self.state = self._candidate
            self._candidate = None
            changed = True
        if self._diode_candidate != self.diode_fault and \
                now - self._diode_since >= self.params.pilot_release_debounce_ms:
            self.diode_fault = self._diode_candidate
            changed = True
        return changed

    def deadline(self):
        deadline = None
        if self._candidate is not None:
            deadline = self._since + self._debounce(self._candidate)
        if self._diode_candidate != self.diode_fault:
            d = self._diode_since + self.params.pilot_release_debounce_ms
            if deadline is None or d < deadline:
                deadline = d
        return deadline

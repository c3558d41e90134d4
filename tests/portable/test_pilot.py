"""agent.pilot against spec/standards.md §1.2-§1.3 (IEC 61851-1 Annex A).

Portable: plain functions and asserts, integer math only, so pytest runs this file on CPython
and tests/mp_run.py runs it on MicroPython.
"""
from agent.params import Params
from agent.pilot import (
    NO_PWM, STATES, WINDOWS, PilotReader, classify, current_for_duty, diode_ok,
    duty_for_current, is_digital,
)


def _raises(exc_type, func, *args):
    try:
        func(*args)
    except exc_type:
        return True
    return False


# -- duty cycle <-> current ----------------------------------------------------------------

# §1.3 "Reference values", amps -> duty in permille (16.7 % = 167)
REFERENCE = (
    (6, 100), (10, 167), (13, 217), (16, 267), (20, 333), (25, 417), (32, 533),
    (40, 667), (48, 800), (51, 850), (63, 892), (70, 920), (80, 960),
)


def test_duty_reference_values():
    for amps, permille in REFERENCE:
        got = duty_for_current(amps * 1000)
        assert got == permille, "%d A -> %d, want %d" % (amps, got, permille)


def test_duty_below_5900_ma_is_no_pwm():
    assert NO_PWM == 0
    for ma in (0, 1, 3000, 5000, 5899):
        assert duty_for_current(ma) == NO_PWM, ma


def test_duty_5900_to_6100_ma_is_ten_percent():
    for ma in (5900, 5950, 6000, 6050, 6100):
        assert duty_for_current(ma) == 100, ma


def test_duty_gap_51_to_52_5_a_clamps_to_51_a():
    # 85 % encodes both 51 A (formula 1) and 52.5 A (formula 2): offer 51 A inside the gap
    for ma in (51000, 51001, 51500, 52000, 52499):
        assert duty_for_current(ma) == 850, ma


def test_duty_above_the_gap_uses_second_formula():
    assert duty_for_current(52500) == 850      # 52.5 / 2.5 + 64 = 85.0 %
    assert duty_for_current(55000) == 860
    assert duty_for_current(60000) == 880
    assert duty_for_current(75000) == 940


def test_duty_above_80_a_or_negative_is_invalid():
    for ma in (80001, 81000, 100000):
        assert _raises(ValueError, duty_for_current, ma), ma
    assert _raises(ValueError, duty_for_current, -1)
    assert duty_for_current(80000) == 960


def test_current_below_3_percent_is_zero():
    for d in (-1, 0, 10, 29):
        assert current_for_duty(d) == 0, d
        assert not is_digital(d), d


def test_current_3_to_7_percent_is_digital_with_no_current():
    for d in (30, 31, 50, 69, 70):
        assert current_for_duty(d) == 0, d
        assert is_digital(d), d
    assert not is_digital(29)
    assert not is_digital(71)


def test_current_7_to_8_percent_is_zero():
    for d in (71, 75, 79):
        assert current_for_duty(d) == 0, d
        assert not is_digital(d), d


def test_current_8_to_10_percent_is_6_a():
    for d in (80, 85, 90, 99):
        assert current_for_duty(d) == 6000, d


def test_current_10_to_85_percent_is_d_times_0_6_a():
    for d in (100, 101, 167, 267, 533, 800, 849, 850):
        assert current_for_duty(d) == d * 60, d
    assert current_for_duty(100) == 6000
    assert current_for_duty(850) == 51000


def test_current_85_to_96_percent_is_d_minus_64_times_2_5_a():
    for d in (851, 860, 892, 920, 959, 960):
        assert current_for_duty(d) == (d - 640) * 250, d
    assert current_for_duty(851) == 52750
    assert current_for_duty(960) == 80000


def test_current_96_to_97_percent_is_80_a():
    for d in (961, 965, 970):
        assert current_for_duty(d) == 80000, d


def test_current_above_97_percent_is_zero():
    for d in (971, 980, 999, 1000):
        assert current_for_duty(d) == 0, d


def test_reference_values_decode_close_to_their_current():
    # the EV reads back at most half a step more or less than the EVSE meant
    for amps, permille in REFERENCE:
        got = current_for_duty(permille)
        step = 60 if permille <= 850 else 250
        assert abs(got - amps * 1000) <= step // 2, (amps, got)


# -- plateau voltage -> state ------------------------------------------------------------

def test_classify_nominal_plateaus():
    for mv, state in ((12000, "A"), (9000, "B"), (6000, "C"), (3000, "D"), (0, "E"),
                      (-12000, "F")):
        assert classify(mv) == state, mv


def test_classify_simulated_ev_plateaus():
    # spec/standards.md §1.1 physics check with a 0.7 V diode
    assert classify(8980) == "B"
    assert classify(6000) == "C"
    assert classify(2930) == "D"


def test_classify_iec_windows_are_inside_their_state():
    # +-1 V around the nominal plateau (§1.2), both ends
    for nominal, state in ((12000, "A"), (9000, "B"), (6000, "C"), (3000, "D"), (0, "E"),
                           (-12000, "F")):
        assert classify(nominal - 1000) == state, nominal
        assert classify(nominal + 1000) == state, nominal


def test_classify_window_edges():
    edges = (
        (10500, "A", "B"), (7500, "B", "C"), (4500, "C", "D"), (1500, "D", "E"),
        (-10500, "E", "F"),
    )
    for edge, at_and_above, below in edges:
        assert classify(edge) == at_and_above, edge
        assert classify(edge - 1) == below, edge


def test_classify_extremes():
    assert classify(20000) == "A"
    assert classify(-20000) == "F"
    assert classify(-6000) == "E"   # between 0 V and -12 V: treated like a short


def test_windows_are_contiguous():
    for i in range(len(WINDOWS) - 1):
        assert WINDOWS[i][1] == WINDOWS[i + 1][2], WINDOWS[i]
    assert tuple(w[0] for w in WINDOWS) == STATES


def test_hysteresis_keeps_previous_state_inside_widened_window():
    # B is [7500, 10500) mV; widened by 300 mV it is [7200, 10800)
    assert classify(10799, "B", 300) == "B"
    assert classify(10800, "B", 300) == "A"
    assert classify(7200, "B", 300) == "B"
    assert classify(7199, "B", 300) == "C"
    # C keeps 7500..7799, which without hysteresis is B
    assert classify(7500) == "B"
    assert classify(7799, "C", 300) == "C"
    assert classify(7800, "C", 300) == "B"
    # A's window has no top; its bottom moves down
    assert classify(10200, "A", 300) == "A"
    assert classify(10199, "A", 300) == "B"
    # E's bottom moves towards F
    assert classify(-10800, "E", 300) == "E"
    assert classify(-10801, "E", 300) == "F"


def test_hysteresis_does_not_apply_without_a_known_previous_state():
    assert classify(10700, None, 300) == "A"
    assert classify(10700, "unknown", 300) == "A"
    assert classify(10700, "B", 0) == "A"


def test_hysteresis_never_holds_a_state_far_outside_its_window():
    assert classify(12000, "B", 300) == "A"
    assert classify(6000, "B", 300) == "C"
    assert classify(-12000, "C", 300) == "F"


def test_diode_ok():
    assert diode_ok(-12000)
    assert diode_ok(-11400)            # generator -12 V - 5 %
    assert diode_ok(-10600)            # the limit itself
    assert not diode_ok(-10599)
    assert not diode_ok(-9860)         # shorted diode, largest state-B resistor
    assert not diode_ok(-8800)         # shorted diode, nominal state-B resistor
    assert not diode_ok(0)


# -- debounce ------------------------------------------------------------------------------

class _Timing:
    """Only the attributes PilotReader reads; values apart from Params' defaults."""
    pilot_debounce_ms = 40
    pilot_release_debounce_ms = 10
    pilot_hysteresis_mv = 300


NO_PWM_LOW = -12000    # low plateau reading when PWM is off (not looked at)
GOOD_LOW = -12000
SHORTED_LOW = -8800


def _reader_in(state, now=0):
    """A reader that has confirmed `state` at time `now` (from unknown, via A if needed)."""
    volts = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0, "F": -12000}
    reader = PilotReader(_Timing())
    reader.sample(now, volts[state], NO_PWM_LOW, False)
    reader.poll(now + 1000)
    assert reader.state == state
    return reader


def test_reader_starts_unknown():
    reader = PilotReader(_Timing())
    assert reader.state == "unknown"
    assert not reader.diode_fault
    assert reader.deadline() is None
    assert not reader.poll(1000)


def test_reader_confirms_only_after_debounce():
    reader = _reader_in("A")
    reader.sample(2000, 9000, NO_PWM_LOW, False)          # A -> B: plug-in, full debounce
    assert reader.deadline() == 2040
    assert not reader.poll(2039)
    assert reader.state == "A"
    assert reader.poll(2040)
    assert reader.state == "B"
    assert reader.deadline() is None
    assert not reader.poll(5000)


def test_reader_power_request_uses_full_debounce():
    reader = _reader_in("B")
    reader.sample(2000, 6000, GOOD_LOW, True)             # B -> C
    assert reader.deadline() == 2040
    assert not reader.poll(2039)
    assert reader.poll(2040)
    assert reader.state == "C"


def test_reader_release_uses_short_debounce():
    for start, volts, end in (("C", 9000, "B"), ("D", 9000, "B"), ("C", 12000, "A"),
                              ("B", 12000, "A"), ("C", 0, "E"), ("B", -12000, "F")):
        reader = _reader_in(start)
        reader.sample(2000, volts, NO_PWM_LOW, False)
        assert reader.deadline() == 2010, (start, end)
        assert not reader.poll(2009)
        assert reader.state == start
        assert reader.poll(2010)
        assert reader.state == end, (start, end)


def test_reader_first_reading_towards_a_uses_short_debounce():
    reader = PilotReader(_Timing())
    reader.sample(0, 12000, NO_PWM_LOW, False)             # unknown -> A
    assert reader.deadline() == 10
    reader = PilotReader(_Timing())
    reader.sample(0, 9000, NO_PWM_LOW, False)              # unknown -> B
    assert reader.deadline() == 40


def test_reader_ignores_glitch_shorter_than_debounce():
    reader = _reader_in("B")
    reader.sample(2000, 6000, GOOD_LOW, True)              # C for 39 ms...
    reader.sample(2039, 9000, GOOD_LOW, True)              # ...then back to B
    assert reader.deadline() is None
    assert not reader.poll(2040)
    assert not reader.poll(3000)
    assert reader.state == "B"


def test_reader_ignores_release_glitch_shorter_than_release_debounce():
    reader = _reader_in("C")
    reader.sample(2000, 9000, GOOD_LOW, True)
    reader.sample(2009, 6000, GOOD_LOW, True)
    assert not reader.poll(2010)
    assert not reader.poll(3000)
    assert reader.state == "C"


def test_reader_repeated_samples_do_not_restart_debounce():
    reader = _reader_in("B")
    reader.sample(2000, 6000, GOOD_LOW, True)
    reader.sample(2020, 6100, GOOD_LOW, True)
    reader.sample(2039, 5900, GOOD_LOW, True)
    assert reader.deadline() == 2040
    assert reader.poll(2040)
    assert reader.state == "C"


def test_reader_new_candidate_restarts_debounce():
    reader = _reader_in("B")
    reader.sample(2000, 6000, GOOD_LOW, True)              # C ...
    reader.sample(2030, 3000, GOOD_LOW, True)              # ... then D before C confirmed
    assert reader.deadline() == 2070
    assert not reader.poll(2069)
    assert reader.state == "B"
    assert reader.poll(2070)
    assert reader.state == "D"


def test_reader_confirms_at_deadline_without_further_samples():
    reader = _reader_in("A")
    reader.sample(2000, 9000, NO_PWM_LOW, False)
    assert reader.poll(reader.deadline())
    assert reader.state == "B"


def test_reader_applies_hysteresis_around_confirmed_state():
    reader = _reader_in("B")
    reader.sample(2000, 10700, NO_PWM_LOW, False)          # A without hysteresis
    assert reader.deadline() is None
    assert not reader.poll(3000)
    assert reader.state == "B"
    reader.sample(3000, 10800, NO_PWM_LOW, False)          # outside the widened window
    assert reader.poll(3010)
    assert reader.state == "A"


def test_reader_reset_forgets_state():
    reader = _reader_in("C")
    reader.sample(2000, 9000, NO_PWM_LOW, False)
    reader.reset()
    assert reader.state == "unknown"
    assert reader.deadline() is None
    reader.sample(3000, 6000, NO_PWM_LOW, False)           # unknown -> C: full debounce
    assert reader.deadline() == 3040


def test_reader_diode_fault_while_pwm_on():
    reader = _reader_in("B")
    reader.sample(2000, 9000, SHORTED_LOW, True)
    assert not reader.diode_fault
    assert reader.deadline() == 2010                       # confirmed after the release debounce
    assert not reader.poll(2009)
    assert reader.poll(2010)
    assert reader.diode_fault
    assert reader.state == "B"
    reader.sample(3000, 9000, GOOD_LOW, True)              # diode healthy again
    assert reader.deadline() == 3010
    assert reader.poll(3010)
    assert not reader.diode_fault


def test_reader_diode_glitch_is_ignored():
    reader = _reader_in("C")
    reader.sample(2000, 6000, SHORTED_LOW, True)
    reader.sample(2005, 6000, GOOD_LOW, True)
    assert reader.deadline() is None
    assert not reader.poll(3000)
    assert not reader.diode_fault


def test_reader_diode_not_checked_without_pwm():
    reader = _reader_in("B")
    reader.sample(2000, 9000, SHORTED_LOW, False)
    assert reader.deadline() is None
    assert not reader.poll(3000)
    assert not reader.diode_fault


def test_reader_diode_not_checked_in_a_e_f():
    # no EV (A), or a pilot that is shorted (E) or driven negative (F): no diode to see
    for state, volts in (("A", 12000), ("E", 0), ("F", -12000)):
        reader = _reader_in(state)
        reader.sample(2000, volts, SHORTED_LOW, True)
        assert not reader.poll(3000), state
        assert not reader.diode_fault, state


def test_reader_with_default_params():
    params = Params()
    reader = PilotReader(params)
    reader.sample(0, 12000, NO_PWM_LOW, False)
    assert reader.poll(params.pilot_release_debounce_ms)
    assert reader.state == "A"
    reader.sample(100, 9000, NO_PWM_LOW, False)
    assert not reader.poll(100 + params.pilot_debounce_ms - 1)
    assert reader.poll(100 + params.pilot_debounce_ms)
    assert reader.state == "B"
    assert params.pilot_release_debounce_ms < params.pilot_debounce_ms <= 50

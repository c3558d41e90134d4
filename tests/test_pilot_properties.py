"""Properties of agent.pilot over whole input ranges (CPython only: hypothesis).

The exact table values are pinned in tests/portable/test_pilot.py, which also runs on
MicroPython; here the claims are about every input.
"""
from hypothesis import given, strategies as st

from agent.pilot import (
    MAX_CURRENT_MA, NO_PWM, STATES, WINDOWS, classify, current_for_duty, duty_for_current,
)

# EVSE-side encoding steps (spec/standards.md §1.3): 0.1 % of duty is 60 mA below 85 %,
# 250 mA above; rounding to the nearest step is off by at most half of one.
STEP_LOW_MA = 60
STEP_HIGH_MA = 250
GAP_LOW_MA = 51000
GAP_HIGH_MA = 52500

# Every state the classifier may be told was the previous one.
PREVIOUS = st.sampled_from((None, "unknown") + STATES)
HYSTERESIS = st.integers(min_value=0, max_value=1000)     # agent/params.py range
VOLTAGE = st.integers(min_value=-20000, max_value=20000)


def _window(state):
    for name, low, high in WINDOWS:
        if name == state:
            return low, high
    raise KeyError(state)


# -- duty <-> current ------------------------------------------------------------------------

@given(st.integers(min_value=6000, max_value=6100))
def test_round_trip_at_ten_percent(current_ma):
    # 5.9-6.1 A are all sent as 10 %, which the EV reads as 6 A
    assert current_for_duty(duty_for_current(current_ma)) == 6000


@given(st.integers(min_value=6101, max_value=GAP_LOW_MA))
def test_round_trip_first_formula(current_ma):
    offered = current_for_duty(duty_for_current(current_ma))
    assert abs(offered - current_ma) <= STEP_LOW_MA // 2


@given(st.integers(min_value=GAP_LOW_MA, max_value=GAP_HIGH_MA))
def test_round_trip_in_the_gap_is_51_a(current_ma):
    # 85 % is the one duty both formulas reach; Table A.8 reads it as 51 A, so 52.5 A
    # itself (85.0 % by the second formula) is also seen by the EV as 51 A
    assert duty_for_current(current_ma) == 850
    assert current_for_duty(850) == 51000


@given(st.integers(min_value=GAP_HIGH_MA, max_value=MAX_CURRENT_MA))
def test_round_trip_second_formula(current_ma):
    duty = duty_for_current(current_ma)
    offered = current_for_duty(duty)
    if duty == 850:
        # 52.5 A up to just below 52.625 A rounds to 85.0 %: the gap's 51 A
        assert current_ma < GAP_HIGH_MA + STEP_HIGH_MA // 2
        assert offered == 51000
    else:
        assert abs(offered - current_ma) <= STEP_HIGH_MA // 2


@given(st.integers(min_value=0, max_value=MAX_CURRENT_MA),
       st.integers(min_value=0, max_value=MAX_CURRENT_MA))
def test_duty_for_current_is_monotonic(a, b):
    if a > b:
        a, b = b, a
    assert duty_for_current(a) <= duty_for_current(b)


@given(st.integers(min_value=0, max_value=MAX_CURRENT_MA))
def test_duty_for_current_is_no_pwm_or_a_valid_analogue_duty(current_ma):
    duty = duty_for_current(current_ma)
    if current_ma < 5900:
        assert duty == NO_PWM
    else:
        assert 100 <= duty <= 960
        assert current_for_duty(duty) >= 6000


@given(st.integers(min_value=MAX_CURRENT_MA + 1, max_value=10 ** 9))
def test_duty_for_current_above_80_a_raises(current_ma):
    try:
        duty_for_current(current_ma)
    except ValueError:
        return
    raise AssertionError("no ValueError for %d mA" % current_ma)


@given(st.integers(min_value=80, max_value=970), st.integers(min_value=80, max_value=970))
def test_current_for_duty_is_monotonic(a, b):
    # the analogue range 8 %..97 %; outside it the EV may not charge at all
    if a > b:
        a, b = b, a
    assert current_for_duty(a) <= current_for_duty(b)


@given(st.integers(min_value=80, max_value=970))
def test_current_for_duty_stays_within_6_to_80_a(duty):
    assert 6000 <= current_for_duty(duty) <= MAX_CURRENT_MA


@given(st.integers(min_value=100, max_value=960))
def test_encoding_a_decoded_duty_gives_the_same_duty(duty):
    # every duty the EVSE can send survives decode -> encode (85 % as 51 A), except that
    # 10.1 % (6.06 A) falls in the 5.9-6.1 A band, which is always sent as 10 %
    expected = 100 if duty == 101 else duty
    assert duty_for_current(current_for_duty(duty)) == expected


# -- voltage -> state -----------------------------------------------------------------------

@given(VOLTAGE, PREVIOUS, HYSTERESIS)
def test_every_voltage_has_exactly_one_state(mv, previous, hysteresis_mv):
    state = classify(mv, previous, hysteresis_mv)
    assert state in STATES
    # the plain windows hold each voltage exactly once
    assert sum(1 for _, low, high in WINDOWS if low <= mv < high) == 1


@given(VOLTAGE, PREVIOUS, HYSTERESIS)
def test_hysteresis_only_ever_keeps_the_previous_state(mv, previous, hysteresis_mv):
    state = classify(mv, previous, hysteresis_mv)
    assert state in (classify(mv), previous)
    if state != classify(mv):
        low, high = _window(previous)
        assert low - hysteresis_mv <= mv < high + hysteresis_mv


@given(st.sampled_from(STATES), st.integers(min_value=0, max_value=2 ** 31), PREVIOUS,
       HYSTERESIS)
def test_hysteresis_does_not_change_a_voltage_well_inside_a_window(state, offset, previous,
                                                                   hysteresis_mv):
    low, high = _window(state)
    low = max(low, -20000)
    high = min(high, 20000)
    inner_low = low + hysteresis_mv + 1          # more than hysteresis_mv inside
    inner_high = high - hysteresis_mv            # exclusive: the last one is h + 1 inside
    if inner_low >= inner_high:
        return
    mv = inner_low + offset % (inner_high - inner_low)
    assert classify(mv) == state
    assert classify(mv, previous, hysteresis_mv) == state


@given(VOLTAGE, st.sampled_from(STATES))
def test_zero_hysteresis_ignores_the_previous_state(mv, previous):
    assert classify(mv, previous, 0) == classify(mv)

"""simulator.electrics: control-pilot physics (spec/standards.md §1.1), and agent.pilot on it."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import pilot
from agent.params import DEFAULTS
from simulator import electrics
from simulator.electrics import ev_resistance, line_mv, plateaus

R_B = ev_resistance(False, False)      # S2 open
R_C = ev_resistance(True, False)       # S2 closed, R3 = 1.3 kOhm
R_D = ev_resistance(True, True)        # S2 closed, R3 = 270 Ohm (ventilation)
HYSTERESIS = DEFAULTS["pilot_hysteresis_mv"]


def spec_high_mv(r_ev, generator_v=12.0):
    """spec §1.1: V_high = Vf + (12 - Vf) * R_ev / (R_ev + 1000), in mV (float)."""
    return 1000 * (0.7 + (generator_v - 0.7) * r_ev / (r_ev + 1000))


# ------------------------------------------------------------------------------ circuit values

def test_resistances():
    assert (electrics.SOURCE_OHMS, electrics.DIODE_MV) == (1000, 700)
    assert R_B == 2740
    assert R_C == 881                  # 2740 || 1300 = 881.7 Ohm
    assert R_D == 245                  # 2740 || 270 = 245.8 Ohm
    assert ev_resistance(False, True) == 2740   # ventilation only matters with S2 closed


def test_spec_values_b_c_d():
    # "B: 8.98 V, C: 6.0 V, D: 2.93 V" (spec/standards.md §1.1)
    assert plateaus("pwm", R_B) == (8978, -12000)
    assert plateaus("pwm", R_C) == (5992, -12000)
    assert plateaus("pwm", R_D) == (2923, -12000)
    for load, volts in ((R_B, 8.98), (R_C, 6.0), (R_D, 2.93)):
        assert abs(plateaus("pwm", load)[0] - volts * 1000) <= 10


@pytest.mark.parametrize("r_ev", [1870, 2740, 4610, 611, 881, 1254, 245])
def test_line_voltage_matches_the_formula(r_ev):
    exact = spec_high_mv(r_ev)
    assert line_mv(12000, r_ev, False) == int(exact)        # integer floor of the formula
    assert exact - 1 < line_mv(12000, r_ev, False) <= exact


def test_shorted_diode_state_b():
    # "With the EV diode shorted and R2 = 2.74 kOhm the low plateau becomes ~ -8.8 V instead
    #  of -12 V, and the waveform becomes symmetric (high ~ -low)."
    high, low = plateaus("pwm", R_B, diode_shorted=True)
    assert (high, low) == (8791, -8792)
    assert abs(low - -8800) <= 10
    assert abs(high + low) <= 1


@pytest.mark.parametrize("load, expected", [(R_B, (8791, -8792)), (R_C, (5620, -5621)),
                                            (R_D, (2361, -2362))])
def test_shorted_diode_symmetric_for_every_load(load, expected):
    high, low = plateaus("pwm", load, diode_shorted=True)
    assert (high, low) == expected
    assert abs(high + low) <= 1        # the YetiSimulator's diode-fault test: |high + low| < 1.1 V


# every pilot mode, with and without an EV
PLATEAUS = [
    # mode, load, (high, low)
    ("pwm", None, (12000, -12000)),
    ("x1", None, (12000, 12000)),
    ("f", None, (-12000, -12000)),
    ("e", None, (0, 0)),
    ("pwm", R_B, (8978, -12000)),
    ("x1", R_B, (8978, 8978)),
    ("f", R_B, (-12000, -12000)),       # the diode blocks: no current, no drop
    ("e", R_B, (0, 0)),
    ("pwm", R_C, (5992, -12000)),
    ("x1", R_C, (5992, 5992)),
    ("f", R_C, (-12000, -12000)),
    ("e", R_C, (0, 0)),
    ("pwm", R_D, (2923, -12000)),
    ("x1", R_D, (2923, 2923)),
    ("f", R_D, (-12000, -12000)),
    ("e", R_D, (0, 0)),
]


@pytest.mark.parametrize("mode, load, expected", PLATEAUS)
def test_plateaus(mode, load, expected):
    assert plateaus(mode, load) == expected


@pytest.mark.parametrize("mode, load, expected", [
    ("pwm", R_B, (8791, -8792)),
    ("x1", R_B, (8791, 8791)),
    ("f", R_B, (-8792, -8792)),        # a shorted diode conducts the negative level too
    ("e", R_B, (0, 0)),
    ("x1", R_C, (5620, 5620)),
    ("f", R_D, (-2362, -2362)),
])
def test_plateaus_with_shorted_diode(mode, load, expected):
    assert plateaus(mode, load, diode_shorted=True) == expected


@pytest.mark.parametrize("mode", sorted(electrics.GENERATOR_MV))
@pytest.mark.parametrize("load", [None, R_B, R_C, R_D])
@pytest.mark.parametrize("diode_shorted", [False, True])
def test_cp_short_is_zero(mode, load, diode_shorted):
    assert plateaus(mode, load, diode_shorted=diode_shorted, cp_shorted=True) == (0, 0)


def test_diode_short_without_ev_changes_nothing():
    assert plateaus("pwm", None, diode_shorted=True) == (12000, -12000)


def test_noise_is_reproducible_and_zero_noise_is_exact():
    a = plateaus("pwm", R_C, noise_mv=100, rng=random.Random(7))
    b = plateaus("pwm", R_C, noise_mv=100, rng=random.Random(7))
    assert a == b
    assert a != (5992, -12000)
    rng = random.Random(7)
    assert plateaus("pwm", R_C, noise_mv=0, rng=rng) == (5992, -12000)
    assert rng.random() == random.Random(7).random()   # no noise: the rng is not used


# ------------------------------------------------------------------------------ classification

@pytest.mark.parametrize("mode, load, state", [
    ("x1", None, "A"), ("pwm", None, "A"),
    ("x1", R_B, "B"), ("pwm", R_B, "B"),
    ("x1", R_C, "C"), ("pwm", R_C, "C"),
    ("x1", R_D, "D"), ("pwm", R_D, "D"),
    ("e", None, "E"), ("e", R_C, "E"),
    ("f", None, "F"), ("f", R_B, "F"),
])
def test_classify_simulator_plateaus(mode, load, state):
    high, low = plateaus(mode, load)
    assert pilot.classify(high) == state
    # a confirmed neighbour state with hysteresis does not hold on to the wrong state
    for previous in pilot.STATES:
        assert pilot.classify(high, previous, HYSTERESIS) == state


@pytest.mark.parametrize("state, load", [("B", R_B), ("C", R_C), ("D", R_D)])
def test_cp_short_classifies_as_e(state, load):
    high, _ = plateaus("pwm", load, cp_shorted=True)
    assert pilot.classify(high) == "E"
    assert pilot.classify(high, state, HYSTERESIS) == "E"


@pytest.mark.parametrize("load", [R_B, R_C, R_D])
def test_diode_check_healthy(load):
    _, low = plateaus("pwm", load)
    assert pilot.diode_ok(low)


@pytest.mark.parametrize("state, load", [("B", R_B), ("C", R_C), ("D", R_D)])
def test_diode_check_flags_shorted_diode(state, load):
    high, low = plateaus("pwm", load, diode_shorted=True)
    assert pilot.classify(high) == state       # the high plateau still shows the state
    assert not pilot.diode_ok(low)


def test_diode_threshold_between_generator_and_worst_shorted_case():
    # -12 V - 5 %: still healthy; shorted diode on the largest state-B resistor: a fault
    assert pilot.diode_ok(-11400)
    assert not pilot.diode_ok(plateaus("pwm", 4610, diode_shorted=True)[1])   # -9861 mV
    assert plateaus("pwm", 4610, diode_shorted=True)[1] == -9861


# ------------------------------------------------------------------------------ properties
# spec §1.1: "state B: 1870 / 2740 / 4610 Ohm; S2 resistor for C: 909 / 1300 / 1723 Ohm"

R2 = st.integers(1870, 4610)
R3_C = st.integers(909, 1723)
NOISE = st.integers(-300, 300)


@given(R2)
def test_any_state_b_resistor_is_b(r2):
    high, low = plateaus("pwm", r2)
    assert pilot.classify(high) == "B"
    assert pilot.diode_ok(low)


@given(R3_C)
def test_any_s2_resistor_with_nominal_r2_is_c(r3):
    high, low = plateaus("pwm", electrics.parallel(electrics.R2_OHMS, r3))
    assert pilot.classify(high) == "C"


@given(R2, R3_C)
def test_any_state_c_combination_is_c(r2, r3):
    high, _ = plateaus("pwm", electrics.parallel(r2, r3))
    assert pilot.classify(high) == "C"


@given(R2, NOISE)
def test_state_b_with_noise_and_hysteresis(r2, noise):
    high, _ = plateaus("pwm", r2)
    assert pilot.classify(high + noise, "B", HYSTERESIS) == "B"


@given(R2, R3_C, NOISE)
def test_state_c_with_noise_and_hysteresis(r2, r3, noise):
    high, _ = plateaus("pwm", electrics.parallel(r2, r3))
    assert pilot.classify(high + noise, "C", HYSTERESIS) == "C"


@given(R3_C, NOISE)
def test_state_c_nominal_r2_with_noise_and_hysteresis(r3, noise):
    high, _ = plateaus("pwm", electrics.parallel(electrics.R2_OHMS, r3))
    assert pilot.classify(high + noise, "C", HYSTERESIS) == "C"


@given(R2, R3_C, st.integers(11400, 12600), NOISE)
def test_generator_tolerance_with_noise_and_hysteresis(r2, r3, generator, noise):
    # spec §1.1: generator +12 V +-5 %; classification still holds from the right state
    b = line_mv(generator, r2, False)
    c = line_mv(generator, electrics.parallel(r2, r3), False)
    assert pilot.classify(b + noise, "B", HYSTERESIS) == "B"
    assert pilot.classify(c + noise, "C", HYSTERESIS) == "C"


@settings(max_examples=200)
@given(st.sampled_from(["B", "C", "D"]), R2, R3_C)
def test_shorted_diode_always_flagged(state, r2, r3):
    load = r2 if state == "B" else electrics.parallel(r2, r3 if state == "C" else 270)
    high, low = plateaus("pwm", load, diode_shorted=True)
    assert not pilot.diode_ok(low)
    healthy_high, healthy_low = plateaus("pwm", load)
    assert pilot.diode_ok(healthy_low)

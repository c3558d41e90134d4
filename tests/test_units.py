"""simulator.units: quantities in scenario and board files, read exactly into integers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator import units
from simulator.units import (
    format_duration, format_time, parse_current, parse_duration, parse_energy, parse_percent,
    parse_power, parse_resistance, parse_temperature,
)

VALID = [
    # durations -> ms
    (parse_duration, "500ms", 500),
    (parse_duration, "30s", 30_000),
    (parse_duration, "2h", 7_200_000),
    (parse_duration, "1.5s", 1_500),
    (parse_duration, "10min", 600_000),
    (parse_duration, "10m", 600_000),
    (parse_duration, "1h30m", 5_400_000),
    (parse_duration, "1h02m03.004s", 3_723_004),
    (parse_duration, "2m30s", 150_000),
    (parse_duration, "1s500ms", 1_500),
    (parse_duration, "0.1s", 100),
    (parse_duration, "0.001s", 1),
    (parse_duration, "0.25h", 900_000),
    (parse_duration, "0ms", 0),
    (parse_duration, " 30s ", 30_000),
    (parse_duration, "1h 30m", 5_400_000),
    (parse_duration, "+5s", 5_000),
    (parse_duration, "-0s", 0),
    # currents -> mA
    (parse_current, "16A", 16_000),
    (parse_current, "6.5A", 6_500),
    (parse_current, "500mA", 500),
    (parse_current, "0A", 0),
    (parse_current, "0.1A", 100),
    (parse_current, "16 A", 16_000),
    # energies -> Wh
    (parse_energy, "1500Wh", 1_500),
    (parse_energy, "10kWh", 10_000),
    (parse_energy, "2.5kWh", 2_500),
    (parse_energy, "0.001kWh", 1),
    # temperatures -> 0.1 degC
    (parse_temperature, "66C", 660),
    (parse_temperature, "66.5C", 665),
    (parse_temperature, "-5C", -50),
    (parse_temperature, "-0.1C", -1),
    (parse_temperature, "20°C", 200),
    # power -> W
    (parse_power, "11kW", 11_000),
    (parse_power, "7400W", 7_400),
    (parse_power, "3.7kW", 3_700),
    # resistance -> ohm
    (parse_resistance, "220ohm", 220),
    (parse_resistance, "1.5kohm", 1_500),
    (parse_resistance, "220R", 220),
    (parse_resistance, "220\u03a9", 220),       # Greek capital omega
    (parse_resistance, "680\u2126", 680),       # ohm sign
    (parse_resistance, "2.7k\u03a9", 2_700),
    (parse_resistance, "1.5kR", 1_500),
    # percent
    (parse_percent, "80%", 80),
    (parse_percent, "0%", 0),
    (parse_percent, "100%", 100),
]


@pytest.mark.parametrize("parse, text, expected", VALID)
def test_parses_exactly(parse, text, expected):
    value = parse(text)
    assert value == expected
    assert type(value) is int


DURATION_EXPECTED = "expected a duration like 500ms, 30s or 2h, got "

INVALID = [
    (parse_duration, "30x", DURATION_EXPECTED + "'30x'"),
    (parse_duration, "30", DURATION_EXPECTED + "'30' (the unit is required)"),
    (parse_duration, "1.5", DURATION_EXPECTED + "'1.5' (the unit is required)"),
    (parse_duration, "", DURATION_EXPECTED + "''"),
    (parse_duration, "s", DURATION_EXPECTED + "'s'"),
    (parse_duration, "-", DURATION_EXPECTED + "'-'"),
    (parse_duration, "1h30", DURATION_EXPECTED + "'1h30'"),
    (parse_duration, ".5s", DURATION_EXPECTED + "'.5s'"),
    (parse_duration, "1.s", DURATION_EXPECTED + "'1.s'"),
    (parse_duration, "1e3ms", DURATION_EXPECTED + "'1e3ms'"),
    (parse_duration, "30S", DURATION_EXPECTED + "'30S'"),
    (parse_duration, "\u0663s", DURATION_EXPECTED + "'\u0663s'"),   # Arabic-Indic three
    (parse_duration, "30m1h", DURATION_EXPECTED + "'30m1h' (each unit once, largest first)"),
    (parse_duration, "1m1min", DURATION_EXPECTED + "'1m1min' (each unit once, largest first)"),
    (parse_duration, "1s1s", DURATION_EXPECTED + "'1s1s' (each unit once, largest first)"),
    (parse_duration, "-5s", "a duration cannot be negative, got '-5s'"),
    (parse_duration, "-1h30m", "a duration cannot be negative, got '-1h30m'"),
    (parse_duration, "1.5ms", "'1.5ms' is finer than the 1 ms resolution of a duration"),
    (parse_duration, "0.0001s", "'0.0001s' is finer than the 1 ms resolution of a duration"),
    (parse_duration, 30, DURATION_EXPECTED + "30"),
    (parse_duration, None, DURATION_EXPECTED + "None"),
    (parse_current, "16",
     "expected a current like 16A, 6.5A or 500mA, got '16' (the unit is required)"),
    (parse_current, "16W", "expected a current like 16A, 6.5A or 500mA, got '16W'"),
    (parse_current, "16a", "expected a current like 16A, 6.5A or 500mA, got '16a'"),
    (parse_current, "1A500mA", "expected a current like 16A, 6.5A or 500mA, got '1A500mA'"),
    (parse_current, "-1A", "a current cannot be negative, got '-1A'"),
    (parse_current, "0.5mA", "'0.5mA' is finer than the 1 mA resolution of a current"),
    (parse_energy, "10kW", "expected an energy like 1500Wh or 10kWh, got '10kW'"),
    (parse_energy, "1.5Wh", "'1.5Wh' is finer than the 1 Wh resolution of an energy"),
    (parse_temperature, "66",
     "expected a temperature like 66C, 66.5C or -5C, got '66' (the unit is required)"),
    (parse_temperature, "66F", "expected a temperature like 66C, 66.5C or -5C, got '66F'"),
    (parse_temperature, "66.55C", "'66.55C' is finer than the 0.1 °C resolution of a temperature"),
    (parse_power, "11kWh", "expected a power like 7400W or 11kW, got '11kWh'"),
    (parse_power, "-1W", "a power cannot be negative, got '-1W'"),
    (parse_resistance, "220",
     "expected a resistance like 220ohm, 220R or 1.5kohm, got '220' (the unit is required)"),
    (parse_resistance, "220Ohm",
     "expected a resistance like 220ohm, 220R or 1.5kohm, got '220Ohm'"),
    (parse_resistance, "0.5ohm", "'0.5ohm' is finer than the 1 ohm resolution of a resistance"),
    (parse_percent, "80", "expected a percentage like 80%, got '80' (the unit is required)"),
    (parse_percent, "80.5%", "'80.5%' is finer than the 1 % resolution of a percentage"),
    (parse_percent, "-5%", "a percentage cannot be negative, got '-5%'"),
]


@pytest.mark.parametrize("parse, text, message", INVALID)
def test_rejects_with_a_message_naming_what_was_expected(parse, text, message):
    with pytest.raises(ValueError) as caught:
        parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("ms, text", [
    (0, "0ms"),
    (300, "300ms"),
    (999, "999ms"),
    (1_000, "1s"),
    (4_500, "4.5s"),
    (1_001, "1.001s"),
    (59_999, "59.999s"),
    (60_000, "1m"),
    (60_500, "1m00.5s"),
    (61_000, "1m01s"),
    (123_000, "2m03s"),
    (3_600_000, "1h"),
    (3_600_001, "1h00m00.001s"),
    (3_660_000, "1h01m"),
    (3_723_004, "1h02m03.004s"),
    (5_400_000, "1h30m"),
    (100 * 3_600_000, "100h"),
])
def test_format_duration(ms, text):
    assert format_duration(ms) == text


@pytest.mark.parametrize("ms, text", [
    (0, "00:00:00.000"),
    (4, "00:00:00.004"),
    (3_723_004, "01:02:03.004"),
    (8 * 3_600_000 + 59_999, "08:00:59.999"),
    (100 * 3_600_000, "100:00:00.000"),
])
def test_format_time(ms, text):
    assert format_time(ms) == text


@pytest.mark.parametrize("format_", [format_duration, format_time])
def test_formatting_rejects_negative_and_non_integer_times(format_):
    with pytest.raises(ValueError, match="expected a non-negative number of milliseconds, got -1"):
        format_(-1)
    with pytest.raises(TypeError):
        format_(1.5)


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_reads_back_exactly(ms):
    assert parse_duration(format_duration(ms)) == ms


@given(st.integers(min_value=0, max_value=10**12))
def test_format_time_fields_add_up(ms):
    hours, minutes, rest = format_time(ms).split(":")
    seconds, millis = rest.split(".")
    assert len(minutes) == len(seconds) == 2 and len(millis) == 3 and len(hours) >= 2
    assert ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis) == ms


@given(st.integers(min_value=0, max_value=10**9))
def test_decimal_seconds_are_exact(ms):
    # 0.1s, 0.3s, 2.675s ... are not exact in binary floating point; they must be here.
    assert parse_duration("%d.%03ds" % divmod(ms, 1000)) == ms


@given(st.integers(0, 10**4), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_compound_duration_is_the_sum_of_its_parts(h, m, s, ms):
    assert parse_duration("%dh%dm%ds%dms" % (h, m, s, ms)) == ((h * 60 + m) * 60 + s) * 1000 + ms


@given(st.integers(-10**6, 10**6))
def test_signed_tenths_of_a_degree(deci):
    text = "%s%d.%dC" % ("-" if deci < 0 else "", abs(deci) // 10, abs(deci) % 10)
    assert parse_temperature(text) == deci


@given(st.text(max_size=20))
def test_junk_is_a_value_error_or_a_value(text):
    for quantity in (units.DURATION, units.CURRENT, units.ENERGY, units.TEMPERATURE,
                     units.POWER, units.RESISTANCE, units.PERCENT):
        try:
            value = quantity.parse(text)
        except ValueError as error:
            assert quantity.what in str(error)
        else:
            assert type(value) is int

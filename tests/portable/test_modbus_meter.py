"""hal/modbus_meter.py: the reads a profile plans and the integers it decodes.

Portable: plain functions and asserts, words built with `struct`, so pytest runs this file
on CPython and tests/mp_run.py runs it on MicroPython (the decoder's target).
tests/test_meter_profiles.py proves every profile against its datasheet on CPython.
"""
import struct

from hal import modbus_meter as mm
from hal.interfaces import MeterSample
from hal.meter_profiles import PROFILES


def _words(fmt, value, low_word_first=False):
    data = struct.pack(fmt, value)
    words = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
    if low_word_first:
        words.reverse()
    return words


def _put(table, function, address, words):
    for i in range(len(words)):
        table[(function, address + i)] = words[i]


def _raises(exc_type, func, *args):
    try:
        func(*args)
    except exc_type as error:
        return str(error)
    return None


def test_every_profile_passes_check_profile():
    assert len(PROFILES) == 12
    for name in PROFILES:
        mm.check_profile(PROFILES[name])


def test_plan_merges_only_exactly_contiguous_registers():
    profile = {"rows": (
        ("voltage_l1", 4, 0, mm.F32, mm.ABCD, 1),
        ("voltage_l2", 4, 2, mm.F32, mm.ABCD, 1),
        ("current_l1", 4, 6, mm.F32, mm.ABCD, 3),      # gap at 4..5: a new read
        ("power", 3, 8, mm.S32, mm.CDAB, 0),           # other function: a new read
        ("frequency", 4, 8, mm.U16, mm.ABCD, 1),
    )}
    assert mm.plan(profile) == [(3, 8, 2), (4, 0, 4), (4, 6, 3)]


def test_plan_respects_max_registers_without_splitting_a_value():
    rows = tuple(("current_l%d" % (i + 1), 4, 2 * i, mm.F32, mm.ABCD, 3) for i in range(3))
    assert mm.plan({"rows": rows, "max_registers": 5}) == [(4, 0, 4), (4, 4, 2)]
    assert mm.plan({"rows": rows}) == [(4, 0, 6)]


def test_plan_of_sdm630():
    assert mm.plan(PROFILES["sdm630"]) == [(4, 0x0000, 18), (4, 0x0034, 2), (4, 0x003E, 2),
                                           (4, 0x0046, 6)]


def test_plan_reads_a_shared_scale_factor_once():
    profile = {"rows": (
        ("current_l1", 3, 40191, mm.S16, mm.ABCD, "40194:3"),
        ("current_l2", 3, 40192, mm.S16, mm.ABCD, "40194:3"),
        ("current_l3", 3, 40193, mm.S16, mm.ABCD, "40194:3"),
    )}
    assert mm.plan(profile) == [(3, 40191, 4)]
    table = {(3, 40191): 160, (3, 40192): 159, (3, 40193): 0x8000, (3, 40194): 0xFFFF}
    sample = MeterSample()
    assert mm.decode(profile, table, sample) == []
    assert sample.current_ma == (16000, 15900, None)       # 160 x 10^(3-1); 0x8000: n/a


def test_decode_floats_and_integers_in_both_word_orders():
    profile = {"rows": (
        ("energy_import", 4, 0, mm.F32, mm.ABCD, 3),        # kWh
        ("energy_export", 4, 2, mm.U64, mm.CDAB, 1),        # 0.01 kWh
        ("power", 4, 6, mm.S32, mm.CDAB, -1),               # 0.1 W
        ("power_factor", 4, 8, mm.S16, mm.ABCD, 0),         # 0.001
        ("voltage_l1", 4, 9, mm.U32, mm.ABCD, 0),           # 0.1 V
        ("frequency", 4, 11, mm.F32, mm.CDAB, 3),           # Hz
    )}
    table = {}
    _put(table, 4, 0, _words(">f", 1234.567))
    _put(table, 4, 2, _words(">Q", 123456, low_word_first=True))
    _put(table, 4, 6, _words(">i", -110400, low_word_first=True))
    _put(table, 4, 8, _words(">h", -980))
    _put(table, 4, 9, _words(">I", 2301))
    _put(table, 4, 11, _words(">f", 50.0, low_word_first=True))
    sample = MeterSample()
    assert mm.decode(profile, table, sample) == []
    assert sample.energy_import_wh == 1234567
    assert sample.energy_export_wh == 1234560
    assert sample.power_w == -11040
    assert sample.power_factor_permille == -980
    assert sample.voltage_dv == (2301, None, None)
    assert sample.frequency_mhz == 50000
    assert sample.current_ma is None and sample.power_w_phases is None


def test_negative_scales_round_half_away_from_zero():
    cases = ((15, -1, 2), (14, -1, 1), (-15, -1, -2), (-14, -1, -1), (149, -2, 1),
             (150, -2, 2), (-150, -2, -2))
    for raw, scale, want in cases:
        assert mm.decode_value(_words(">i", raw), mm.S32, mm.ABCD, scale) == want, raw
    assert mm.decode_value(_words(">f", -2.5), mm.F32, mm.ABCD, 0) == -3
    assert mm.decode_value(_words(">f", 2.5), mm.F32, mm.ABCD, 0) == 3


def test_not_available_patterns_decode_to_none():
    nan = [0x7FC0, 0x0000]
    cases = (([0xFFFF], mm.U16), ([0x8000], mm.S16), ([0x7FFF], mm.S16),
             ([0xFFFF, 0xFFFF], mm.U32), ([0x8000, 0], mm.S32), ([0x7FFF, 0xFFFF], mm.S32),
             ([0xFFFF] * 4, mm.U64), ([0x8000, 0, 0, 0], mm.S64),
             ([0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], mm.S64),
             (nan, mm.F32), ([0x7F80, 0], mm.F32), ([0xFF80, 0], mm.F32))
    for words, kind in cases:
        assert mm.decode_value(words, kind, mm.ABCD, 0) is None, (words, kind)


def test_implausible_values_are_reported_and_left_none():
    profile = {"rows": (("voltage_l1", 3, 0, mm.U16, mm.ABCD, 0),
                        ("energy_import", 3, 1, mm.S32, mm.ABCD, 0))}
    table = {(3, 0): 12000}                                 # 1200.0 V
    _put(table, 3, 1, _words(">i", -5))                    # negative energy
    sample = MeterSample()
    assert mm.decode(profile, table, sample) == ["voltage_l1", "energy_import"]
    assert sample.voltage_dv == (None, None, None) and sample.energy_import_wh is None


def test_a_failed_read_leaves_its_quantities_none():
    profile = PROFILES["sdm120"]
    blocks = mm.plan(profile)
    answers = []
    for function, start, count in blocks:
        if start == 0x0046:
            answers.append(None)                            # timed out
        elif start == 0x000C:
            answers.append(_words(">f", 3680.0)[:1])        # short answer: ignored
        else:
            answers.append(_words(">f", {0x0000: 230.1, 0x0006: 16.0, 0x001E: 0.98}[start]))
    sample = MeterSample()
    assert mm.decode(profile, mm.registers_of(blocks, answers), sample) == []
    assert sample.voltage_dv == (2301, None, None) and sample.current_ma == (16000, None, None)
    assert sample.power_factor_permille == 980
    assert sample.power_w is None and sample.energy_import_wh is None


def test_check_profile_names_the_bad_row():
    bad = (
        ("power", 5, 0, mm.F32, mm.ABCD, 0),
        ("power", 3, -1, mm.F32, mm.ABCD, 0),
        ("power", 3, 0xFFFF, mm.F32, mm.ABCD, 0),
        ("power", 3, 0, "f16", mm.ABCD, 0),
        ("power", 3, 0, mm.F32, "badc", 0),
        ("power", 3, 0, mm.F32, mm.ABCD, 10),
        ("power", 3, 0, mm.F32, mm.ABCD, "x:1"),
    )
    for row in bad:
        message = _raises(mm.ProfileError, mm.check_profile, {"rows": (row,)})
        assert message and message.startswith("power"), (row, message)
    message = _raises(mm.ProfileError, mm.check_profile, {"rows": (
        ("power", 3, 0, mm.F32, mm.ABCD, 0), ("power_l1", 3, 1, mm.F32, mm.ABCD, 0))})
    assert message == "power_l1 overlaps power at register 1"
    assert _raises(mm.ProfileError, mm.check_profile, {"rows": (
        ("volts", 3, 0, mm.F32, mm.ABCD, 0),)}).startswith("volts: unknown quantity")


def test_a_boards_meters_share_one_bus_at_consecutive_unit_ids():
    from hal.modbus_meter import unit_ids
    profile = {"defaults": {"id": 1}, "rows": ()}
    board = {"meter": {"id": None}, "connectors": [{"id": 2}, {"id": 1}]}
    assert unit_ids(board, profile) == {1: 1, 2: 2}
    board["meter"]["id"] = 11
    assert unit_ids(board, profile) == {1: 11, 2: 12}

"""tools.boardfile: board TOML files load, normalise to integers, and fail with FILE:LINE: key."""
import os
import re

import pytest

from agent import params as params_table
from tools import boardfile
from tools.boardfile import BoardError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_TOML = os.path.join(ROOT, "boards", "sim.toml")

# A minimal valid board: 5 lines, the [[connectors]] header on line 3.
MINIMAL = '''\
name = "t"
hal = "simulator"
[[connectors]]
id = 1
max_current = "16A"
'''


def write(tmp_path, text, name="board.toml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(BoardError) as caught:
        boardfile.load(path)
    problems = caught.value.problems
    # every problem is one `FILE:LINE: ...` line, and str() lists them all
    for problem in problems:
        assert problem.startswith(path + ":"), problem
        assert re.match(re.escape(path) + r":\d+: \S", problem), problem
    assert str(caught.value) == "\n".join(problems)
    return path, problems


def only_problem(tmp_path, text):
    path, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return path, problems[0]


# ------------------------------------------------------------------------------ the sim board

def test_sim_board_normalises_to_integers():
    board = boardfile.load(SIM_TOML)
    assert board == {
        "path": SIM_TOML,
        "name": "sim",
        "description": "Simulated 22 kW Type 2 socket charger (one connector)",
        "hal": "simulator",
        "station": {"vendor": "evse-agent", "model": "SIM-22", "serial": "SIM-0001",
                    "firmware": "0.1.0"},
        "authorization": {"mode": "list", "id_tags": ["04A1B2C3", "DEADBEEF", "TAG-001"],
                          "free_tag": "FREE"},
        "meter": {"model": "sim", "on_failure": "stop", "tcp": None, "serial": None,
                  "baud": None, "parity": None, "stopbits": None, "id": None, "timeout": 500},
        "sim": {"noise_mv": 0, "seed": 1, "ev_capacity": 60000, "ev_soc": 20,
                "ev_max_current": 32000, "ev_phases": 3, "ev_delay": 500,
                "contactor_close": 30, "contactor_open": 20, "meter_link": "tcp"},
        "timing": {},
        "linux": {"sysfs": "/sys", "poll": 2, "idle_poll": 20, "watchdog": None},
        "ocpp": {"csms": None, "id": None, "auth_key": None, "ca": None},
        "storage": {"dir": None},
        "unix": {"tag": None, "plug_after": 1000, "charge": 30000, "ev_current": 16000},
        "mcu": {"port": None, "poll": 0, "watchdog_ms": None, "adc_reference_mv": None,
                "pilot_settle_us": None, "pilot_periods": None, "meter_uart": None,
                "meter_tx": None, "meter_rx": None, "meter_de": None, "reserved_pins": None},
        "connectors": [{"id": 1, "type": "socket", "max_current": 32000,
                        "cable_max_current": None, "phases": 3, "ventilation": False,
                        "contactor_feedback": True, "lock_feedback": True, "state_e": False}],
    }


def test_sim_board_numbers_are_plain_ints():
    board = boardfile.load(SIM_TOML)
    numbers = [v for k, v in board["sim"].items() if k != "meter_link"] + \
        [board["connectors"][0][k] for k in
                                             ("id", "max_current", "phases")]
    for value in numbers:
        assert type(value) is int, value


def test_find_bundled_board_by_name():
    assert os.path.samefile(boardfile.find("sim"), SIM_TOML)
    assert os.path.samefile(boardfile.find("sim.toml"), SIM_TOML)
    with pytest.raises(BoardError) as caught:
        boardfile.find("no-such-board")
    assert caught.value.problems == ["no-such-board: no such board file"]


def test_quantities_are_converted_exactly(tmp_path):
    path = write(tmp_path, MINIMAL.replace('"16A"', '"6.5A"') + '''\
type = "cable"
[sim]
ev_capacity = "75.5kWh"
ev_delay = "0.25s"
contactor_close = "1s"
contactor_open = "0ms"
ev_max_current = "500mA"
[timing]
pilot_debounce_ms = 50
power_off_under_load_ms = 6000
''')
    with pytest.raises(BoardError) as caught:      # 500 mA is below 6 A
        boardfile.load(path)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == ["%s:12" % path]
    assert caught.value.problems[0] == "%s:12: sim.ev_max_current: must be between 6A and 80A" \
        % path
    board = boardfile.load(write(tmp_path, open(path).read().replace('"500mA"', '"80A"')))
    assert board["connectors"][0]["max_current"] == 6500
    assert board["connectors"][0]["type"] == "cable"
    assert board["connectors"][0]["cable_max_current"] == 6500   # tethered: the cable's rating
    assert board["sim"]["ev_capacity"] == 75500
    assert board["sim"]["ev_delay"] == 250
    assert board["sim"]["contactor_close"] == 1000
    assert board["sim"]["contactor_open"] == 0
    assert board["sim"]["ev_max_current"] == 80000
    assert board["timing"] == {"pilot_debounce_ms": 50, "power_off_under_load_ms": 6000}


def test_defaults_of_a_minimal_board(tmp_path):
    board = boardfile.load(write(tmp_path, MINIMAL))
    assert board["authorization"] == {"mode": "free", "id_tags": [], "free_tag": "FREE"}
    assert board["connectors"] == [{"id": 1, "type": "socket", "max_current": 16000,
                                    "cable_max_current": None, "phases": 3,
                                    "ventilation": False, "contactor_feedback": True,
                                    "lock_feedback": True, "state_e": False}]
    assert board["timing"] == {}


# ------------------------------------------------------------------------------ one problem each

def test_missing_required_connector_key_points_at_its_table(tmp_path):
    path, problem = only_problem(tmp_path, 'name = "t"\nhal = "simulator"\n\n'
                                 '[[connectors]]\nid = 1\ntype = "socket"\n')
    assert problem == "%s:4: connectors.0.max_current: missing (required)" % path


def test_missing_required_top_level_key(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL.replace('name = "t"\n', '# no name\n'))
    assert problem == "%s:1: name: missing (required)" % path


def test_missing_connectors(tmp_path):
    path, problem = only_problem(tmp_path, 'name = "t"\nhal = "simulator"\n')
    assert problem == "%s:1: connectors: at least one [[connectors]] table is required" % path


@pytest.mark.parametrize("line, expected", [
    ('max_current = 16', 'connectors.0.max_current: must be a quoted quantity like "32A", got 16'),
    ('ventilation = "no"', "connectors.0.ventilation: must be true or false, got 'no'"),
    ('id = "1"', "connectors.0.id: must be an integer 1..32, got '1'"),
    ('phases = "3"', "connectors.0.phases: must be one of 1, 3, got '3'"),
])
def test_wrong_type_in_connector(tmp_path, line, expected):
    key = line.split(" ")[0]
    text = MINIMAL.replace("%s = " % key, "# %s = " % key) + line + "\n"
    path, problem = only_problem(tmp_path, text)
    assert problem == "%s:6: %s" % (path, expected)


def test_wrong_type_in_sim_table(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + '[sim]\nnoise_mv = 5\nev_soc = "20%"\n')
    assert problem == "%s:8: sim.ev_soc: must be an integer 0..100, got '20%%'" % path


def test_bare_number_needs_a_unit(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + '[sim]\nev_delay = "500"\n')
    assert problem == ("%s:7: sim.ev_delay: expected a duration like 500ms, 30s or 2h, "
                       "got '500' (the unit is required)" % path)


def test_out_of_range_current(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL.replace('"16A"', '"90A"'))
    assert problem == "%s:5: connectors.0.max_current: must be between 6A and 80A" % path


@pytest.mark.parametrize("value, ok", [("5.9A", False), ("6A", True), ("80A", True),
                                       ("80.001A", False)])
def test_current_range_bounds(tmp_path, value, ok):
    path = write(tmp_path, MINIMAL.replace('"16A"', '"%s"' % value))
    if ok:
        assert boardfile.load(path)["connectors"][0]["max_current"] == \
            int(float(value[:-1]) * 1000)
    else:
        with pytest.raises(BoardError) as caught:
            boardfile.load(path)
        assert caught.value.problems == [
            "%s:5: connectors.0.max_current: must be between 6A and 80A" % path]


def test_bad_choice_phases(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "phases = 2\n")
    assert problem == "%s:6: connectors.0.phases: must be one of 1, 3, got 2" % path


def test_bad_choice_hal(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL.replace('"simulator"', '"arduino"'))
    assert problem == ("%s:2: hal: must be one of simulator, linux, micropython, unix, "
                       "got 'arduino'" % path)


def test_unknown_key_in_known_table(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "[sim]\nev_soc = 50\nev_colour = 1\n")
    assert problem == ("%s:8: sim.ev_colour: unknown key (known: contactor_close, "
                       "contactor_open, ev_capacity, ev_delay, ev_max_current, ev_phases, "
                       "ev_soc, meter_link, noise_mv, seed)" % path)


def test_unknown_key_in_connector(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "colour = \"red\"\n")
    assert problem == ("%s:6: connectors.0.colour: unknown key (known: id, type, max_current, "
                       "cable_max_current, phases, ventilation, contactor_feedback, "
                       "lock_feedback, state_e, linux, mcu)" % path)


def test_unknown_key_in_second_connector(tmp_path):
    text = MINIMAL + '[[connectors]]\nid = 2\nmax_current = "16A"\nmax_curent = "20A"\n'
    path, problem = only_problem(tmp_path, text)
    assert problem.startswith("%s:9: connectors.1.max_curent: unknown key (known: id, " % path)


def test_unknown_table(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "\n[statoin]\nvendor = \"x\"\n")
    assert problem == ("%s:7: statoin: unknown table [statoin] (known: [authorization], "
                       "[linux], [mcu], [meter], [ocpp], [sim], [station], [storage], [timing], [unix], "
                       "[[connectors]])" % path)


def test_unknown_timing_parameter(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "[timing]\npilot_debounce = 20\n")
    known = ", ".join(sorted(params_table.DEFAULTS))
    assert problem == "%s:7: timing.pilot_debounce: unknown key (known: %s)" % (path, known)


def _timing_cases():
    for name, (low, high) in sorted(params_table.RANGES.items()):
        yield pytest.param(name, low - 1, False, id="%s=%d" % (name, low - 1))
        yield pytest.param(name, low, True, id="%s=%d" % (name, low))
        yield pytest.param(name, high, True, id="%s=%d" % (name, high))
        yield pytest.param(name, high + 1, False, id="%s=%d" % (name, high + 1))


@pytest.mark.parametrize("name, value, ok", list(_timing_cases()))
def test_timing_value_range(tmp_path, name, value, ok):
    path = write(tmp_path, MINIMAL + "[timing]\n# override\n%s = %d\n" % (name, value))
    if ok:
        assert boardfile.load(path)["timing"] == {name: value}
    else:
        with pytest.raises(BoardError) as caught:
            boardfile.load(path)
        low, high = params_table.RANGES[name]
        assert caught.value.problems == ["%s:8: timing.%s: %s must be an integer %d..%d"
                                         % (path, name, name, low, high)]


@pytest.mark.parametrize("value", ["true", "20.0", '"20ms"'])
def test_timing_value_must_be_an_integer(tmp_path, value):
    path, problem = only_problem(tmp_path, MINIMAL + "[timing]\npilot_debounce_ms = %s\n"
                                 % value)
    assert problem == "%s:7: timing.pilot_debounce_ms: pilot_debounce_ms must be an " \
        "integer 1..50" % path


def test_duplicate_connector_id(tmp_path):
    text = MINIMAL + '\n[[connectors]]\nmax_current = "32A"\nid = 1\n'
    path, problem = only_problem(tmp_path, text)
    assert problem == "%s:9: connectors.1.id: duplicate connector id 1" % path


def test_two_distinct_connectors_load(tmp_path):
    board = boardfile.load(write(tmp_path, MINIMAL + '[[connectors]]\nid = 2\n'
                                 'max_current = "32A"\nphases = 1\n'))
    assert [(c["id"], c["max_current"], c["phases"]) for c in board["connectors"]] == \
        [(1, 16000, 3), (2, 32000, 1)]


def test_list_mode_without_id_tags(tmp_path):
    text = MINIMAL + '[authorization]\nfree_tag = "X"\nmode = "list"\n'
    path, problem = only_problem(tmp_path, text)
    assert problem == '%s:8: authorization.mode: mode "list" needs id_tags' % path


def test_list_mode_with_empty_id_tags(tmp_path):
    text = MINIMAL + '[authorization]\nmode = "list"\nid_tags = []\n'
    path, problem = only_problem(tmp_path, text)
    assert problem == '%s:7: authorization.mode: mode "list" needs id_tags' % path


def test_bad_id_tags(tmp_path):
    text = MINIMAL + '[authorization]\nmode = "list"\nid_tags = ["A", "%s"]\n' % ("X" * 21)
    path, problems = problems_of(tmp_path, text)
    assert problems == [
        "%s:8: authorization.id_tags: must be a list of id tags (strings of 1..20 characters)"
        % path,
        '%s:7: authorization.mode: mode "list" needs id_tags' % path]


def test_toml_syntax_error_line_from_parser(tmp_path):
    text = MINIMAL + "[sim]\nnoise_mv = 0\nev_soc = = 3\n"
    path, problem = only_problem(tmp_path, text)
    assert problem.startswith("%s:8: TOML syntax: " % path)
    assert "(at line 8, column" in problem


def test_toml_unclosed_table_header(tmp_path):
    path, problem = only_problem(tmp_path, MINIMAL + "\n\n[sim\n")
    assert problem.startswith("%s:8: TOML syntax: " % path)


def test_non_utf8_file_on_line_one(tmp_path):
    path, problem = only_problem(tmp_path, b'name = "\xff"\n' + MINIMAL.encode()[10:])
    assert problem.startswith("%s:1: not UTF-8 text" % path)


def test_non_utf8_file_names_the_line_of_the_bad_byte(tmp_path):
    # Latin-1 text from an old editor: the bad byte is on line 6, as scenario files report it.
    text = MINIMAL.encode() + b'description = "Ladestation f\xfcr Garage"\n'
    path = write(tmp_path, text)
    with pytest.raises(BoardError) as caught:
        boardfile.load(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("%s:6: not UTF-8 text" % path), \
        caught.value.problems


# ------------------------------------------------------------------------------ all at once

def test_all_problems_reported_together(tmp_path):
    text = '''\
hal = "windows"
[station]
vendor = "a vendor name that is far too long"
[[connectors]]
id = 1
max_current = "90A"
phases = 2
plug_colour = "blue"
[[connectors]]
id = 1
max_current = "16A"
[sim]
ev_phases = 2
[timing]
pilot_debounce_ms = 99
not_a_parameter = 1
[extras]
x = 1
'''
    path, problems = problems_of(tmp_path, text)
    located = sorted((int(p.split(":")[len(path.split(":"))]), p[len(path) + 1:].split(": ")[1])
                     for p in problems)
    assert located == [
        (1, "hal"),
        (1, "name"),
        (3, "station.vendor"),
        (6, "connectors.0.max_current"),
        (7, "connectors.0.phases"),
        (8, "connectors.0.plug_colour"),
        (10, "connectors.1.id"),
        (13, "sim.ev_phases"),
        (15, "timing.pilot_debounce_ms"),
        (16, "timing.not_a_parameter"),
        (17, "extras"),
    ]
    assert len(problems) == 11


# ------------------------------------------------------------------------------ bugs

def test_misspelt_array_table_is_an_unknown_table(tmp_path):
    """A second connector written `[[connector]]` must not vanish silently."""
    text = MINIMAL + '[[connector]]\nid = 2\nmax_current = "16A"\n'
    path, problem = only_problem(tmp_path, text)
    assert problem.startswith("%s:6: connector: unknown table" % path)


def test_unknown_top_level_key(tmp_path):
    """A typo in a top-level key (`descripton`) is an unknown key like one in [sim]."""
    text = 'name = "t"\ndescripton = "typo"\n' + MINIMAL[len('name = "t"\n'):]
    path, problem = only_problem(tmp_path, text)
    assert problem.startswith("%s:2: descripton: unknown key" % path)


@pytest.mark.parametrize("line, key", [
    ("sim = 3", "sim"),
    ("timing = 3", "timing"),
    ('station = "x"', "station"),
    ("connectors = [1]", "connectors"),
])
def test_table_given_as_a_plain_value_is_an_error_not_a_crash(tmp_path, line, key):
    """Decision 9: a bad board file is an error with file:line; nothing crashes."""
    text = 'name = "t"\nhal = "simulator"\n%s\n' % line
    if key != "connectors":
        text += '[[connectors]]\nid = 1\nmax_current = "16A"\n'
    path, problems = problems_of(tmp_path, text)
    assert any(p.startswith("%s:3: %s" % (path, key)) for p in problems), problems


# ------------------------------------------------------------------------------ [meter]

def meter_problems(tmp_path, meter_text, base=MINIMAL):
    path = tmp_path / "board.toml"
    path.write_text(base + "\n" + meter_text)
    try:
        return boardfile.load(str(path)), []
    except BoardError as error:
        return None, error.problems


def test_a_custom_meter_is_its_registers_in_the_decoder_format(tmp_path):
    board, problems = meter_problems(tmp_path, """
[meter]
model = "custom"

[[meter.registers]]
quantity = "energy_import"
function = 4
address = 0x0048
type = "f32"
order = "abcd"
scale = 3

[[meter.registers]]
quantity = "power"
function = 4
address = 0x0034
type = "f32"
order = "abcd"
scale = 0
""")
    assert problems == []
    assert board["meter"]["registers"] == [("energy_import", 4, 0x48, "f32", "abcd", 3),
                                           ("power", 4, 0x34, "f32", "abcd", 0)]


def test_a_bad_custom_register_names_its_line_and_problem(tmp_path):
    _, problems = meter_problems(tmp_path, """
[meter]
model = "custom"

[[meter.registers]]
quantity = "energy_import"
function = 6
address = 0x0048
type = "f32"
order = "abcd"
scale = 3
""")
    line = (MINIMAL + "\n").count("\n") + 5
    assert len(problems) == 1
    assert problems[0].endswith(":%d: meter.registers.0: energy_import: function must be 3 or "
                                "4, got 6" % line), problems


def test_an_unknown_meter_model_lists_the_known_ones(tmp_path):
    _, problems = meter_problems(tmp_path, '[meter]\nmodel = "sdm999"\n')
    assert len(problems) == 1 and "meter.model: must be one of sim, none, custom, " in \
        problems[0] and "sdm630" in problems[0], problems


def test_a_modbus_meter_on_a_real_board_needs_a_link(tmp_path):
    text = open(os.path.join(os.path.dirname(SIM_TOML), "rpi-pilot-hat.toml")).read()
    text = text.replace('model = "none"', 'model = "sdm630"')
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(BoardError) as caught:
        boardfile.load(str(path))
    assert any("meter.model: a Modbus meter needs tcp = " in p for p in caught.value.problems)
    path.write_text(text.replace('model = "sdm630"',
                                 'model = "sdm630"\nserial = "/dev/ttyUSB0"\nbaud = 9600'))
    board = boardfile.load(str(path))
    assert (board["meter"]["serial"], board["meter"]["baud"]) == ("/dev/ttyUSB0", 9600)


# ------------------------------------------------------------------------------ pins

BOARDS = os.path.join(ROOT, "boards")
BOARD_WIDE_PINS = ("meter_tx", "meter_rx", "meter_de")


def with_pin(tmp_path, board, key, value):
    """A bundled board with one pin key set to `value` (as TOML): (path, text). The last
    `key = ` line is the pin's: [connectors.*] come after [[connectors]], whose
    `contactor_feedback = true` shares a pin key's name."""
    text = open(os.path.join(BOARDS, board + ".toml")).read()
    last = list(re.finditer(r"(?m)^%s = .*$" % key, text))[-1]
    text = text[:last.start()] + "%s = %s" % (key, value) + text[last.end():]
    return write(tmp_path, text), text


def pin_line(text, key):
    return [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(key + " = ")][-1]


def pin_name(board, key):
    """How a problem names a pin key of a bundled board."""
    if key in BOARD_WIDE_PINS:
        return "mcu." + key
    return "connectors.0.%s.%s" % ("linux" if board.startswith("rpi") else "mcu", key)


@pytest.mark.parametrize("path", sorted(os.path.join(BOARDS, name) for name in
                                        os.listdir(BOARDS) if name.endswith(".toml")))
def test_every_bundled_board_loads(path):
    assert boardfile.load(path)["connectors"]


# (board, key changed, its new value, the key the problem is reported at, the key it names,
#  the pin): the problem is at the later of the two keys in the file
SHARED_PINS = [
    ("rpi-pilot-hat", "lock", '"gpio17"', "lock", "contactor", "gpio17"),
    ("rpi-pilot-hat", "rcd_test", '"!gpio27"', "rcd_test", "contactor_feedback", "gpio27"),
    ("rpi-pilot-hat", "pp_adc", '"iio:device0/in_voltage0"', "pp_adc", "pilot_adc_high",
     "iio:device0/in_voltage0"),
    ("esp32-devkitc", "lock", "27", "lock", "contactor", "GPIO27"),
    ("esp32-devkitc", "meter_de", "25", "pilot_pwm", "meter_de", "GPIO25"),
    ("esp32-devkitc", "contactor", "34", "rcd_trip", "contactor", "GPIO34"),
    ("rp2040-pico", "meter_tx", "16", "pilot_pwm", "meter_tx", "GPIO16"),
    ("rp2040-pico", "pilot_adc", "5", "pilot_adc", "meter_rx", "GPIO5"),
    ("rp2040-pico", "lock_feedback", '"18"', "lock_feedback", "contactor_feedback", "GPIO18"),
]


@pytest.mark.parametrize("board, key, value, reported, named, pin", SHARED_PINS,
                         ids=["%s-%s=%s" % case[:3] for case in SHARED_PINS])
def test_a_pin_used_by_two_keys_is_refused_naming_both(tmp_path, board, key, value, reported,
                                                       named, pin):
    """A lock on the contactor's coil closes the contactor when the plug locks: a pin serves
    one key of the board only, a spelling ("!gpio27", "!18+up") making no new pin."""
    path, text = with_pin(tmp_path, board, key, value)
    _, problems = problems_of(tmp_path, text)
    assert "%s:%d: %s: %s is already %s (line %d); a pin serves one key only" % (
        path, pin_line(text, reported), pin_name(board, reported), pin, pin_name(board, named),
        pin_line(text, named)) in problems, problems


ESP32_ALL = "no such pin: the ESP32 has GPIO0-19, 21-23, 25-27, 32-39"
ESP32_ADC1 = "not on ADC1: an ADC input must be GPIO32-39, as ADC2 cannot be read while " \
    "Wi-Fi is on"
PICO_KEEPS = "the board keeps it for itself (on a Pico SMPS mode, VBUS sense, LED and " \
    "VSYS/3; on a Pico W the Wi-Fi chip); [mcu] reserved_pins says which pins a board keeps"
UNUSABLE_PINS = [
    ("esp32-devkitc", "pilot_adc", "99", "GPIO99: " + ESP32_ALL),
    ("esp32-devkitc", "lock", "24", "GPIO24: " + ESP32_ALL),
    ("esp32-devkitc", "contactor", "34", "GPIO34: input only (GPIO34-39), it cannot be driven"),
    ("esp32-devkitc", "meter_tx", "39", "GPIO39: input only (GPIO34-39), it cannot be driven"),
    ("esp32-devkitc", "pilot_adc", "4", "GPIO4: " + ESP32_ADC1),
    ("esp32-devkitc", "pp_adc", "27", "GPIO27: " + ESP32_ADC1),
    ("esp32-devkitc", "lock", "8", "GPIO8: wired to the module's SPI flash (GPIO6-11)"),
    ("esp32-devkitc", "lock_feedback", '"!35+up"', "GPIO35: has no internal pull resistor "
     "(GPIO34-39): fit one on the board and drop the +up/+down"),
    ("esp32-devkitc", "lock", "1", "GPIO1: the board keeps it for itself (UART0, the REPL and "
     "boot log); [mcu] reserved_pins says which pins a board keeps"),
    ("rp2040-pico", "pilot_adc", "5", "GPIO5: not an ADC pin: the RP2040's ADC inputs are "
     "GPIO26-29"),
    ("rp2040-pico", "pilot_pwm", "45", "GPIO45: no such pin: the RP2040 has GPIO0-29"),
    ("rp2040-pico", "pilot_adc", "29", "GPIO29: " + PICO_KEEPS),
    ("rp2040-pico", "lock", "25", "GPIO25: " + PICO_KEEPS),
    ("rp2040-pico", "pilot_pwm", '"!16"', "'!16': an active-low mark means nothing on a PWM "
     "output"),
    ("rp2040-pico", "pp_adc", '"!27"', "'!27': an active-low mark means nothing on an ADC "
     "input"),
    ("rp2040-pico", "lock", '"21+up"', "'21+up': a pull-up means nothing on an output"),
    ("rp2040-pico", "meter_rx", '"5+down"', "'5+down': a pull-down means nothing on a UART RX"),
]


@pytest.mark.parametrize("board, key, value, problem", UNUSABLE_PINS,
                         ids=["%s-%s=%s" % case[:3] for case in UNUSABLE_PINS])
def test_a_pin_the_port_cannot_use_for_its_key_is_refused(tmp_path, board, key, value,
                                                          problem):
    """Per port, from the datasheets (tools/boardfile.py MCU_PORT_RULES, MODULE_PINS), and a
    mark the key's driver would ignore or refuse only on the board."""
    path, text = with_pin(tmp_path, board, key, value)
    _, problems = problems_of(tmp_path, text)
    assert "%s:%d: %s: %s" % (path, pin_line(text, key), pin_name(board, key), problem) \
        in problems, problems


def test_gpio29_is_an_adc_input_on_a_board_that_keeps_it_free(tmp_path):
    """A Pico reads VSYS/3 on GPIO29; a board of its own around an RP2040 wires it out as ADC3
    and says so."""
    _, text = with_pin(tmp_path, "rp2040-pico", "pilot_adc", "29")
    text = text.replace('port = "rp2"\n', 'port = "rp2"\nreserved_pins = [23, 24, 25]\n')
    board = boardfile.load(write(tmp_path, text))
    assert (board["connectors"][0]["mcu"]["pilot_adc"], board["mcu"]["reserved_pins"]) == \
        (29, [23, 24, 25])
    # a bad list is a problem of its own, and the Pico's pins stay kept meanwhile
    text = text.replace("[23, 24, 25]", '"29"')
    path, problems = problems_of(tmp_path, text)
    assert problems == [
        "%s:%d: mcu.reserved_pins: must be a list of GPIO numbers, e.g. [23, 24, 25], got "
        "'29'" % (path, pin_line(text, "reserved_pins")),
        "%s:%d: connectors.0.mcu.pilot_adc: GPIO29: %s" % (path, pin_line(text, "pilot_adc"),
                                                          PICO_KEEPS)]


def test_connectors_do_not_share_a_pin(tmp_path):
    """Each AC charging point needs its own RCD (spec/standards.md §3.1): a second connector
    wired to the first one's trip output is refused; with its own it loads."""
    second = '''
[[connectors]]
id = 2
max_current = "32A"

[connectors.linux]
pilot_pwm = "pwmchip0/pwm1"
pilot_adc_high = "iio:device1/in_voltage0"
pilot_adc_low = "iio:device1/in_voltage1"
pilot_calibration = [[0, -12000], [3300, 12000]]
contactor = "gpio5"
contactor_feedback = "gpio6"
rcd_trip = "!gpio22"
lock = "gpio16"
lock_feedback = "gpio19"
pp_adc = "iio:device1/in_voltage2"
'''
    text = open(os.path.join(BOARDS, "rpi-pilot-hat.toml")).read() + second
    path, problem = only_problem(tmp_path, text)
    assert problem == "%s:%d: connectors.1.linux.rcd_trip: gpio22 is already " \
        "connectors.0.linux.rcd_trip (line %d); a pin serves one key only" % (
            path, pin_line(text, "rcd_trip"), pin_line(text[:-len(second)], "rcd_trip"))
    board = boardfile.load(write(tmp_path, text.replace('"!gpio22"\nlock = "gpio16"',
                                                        '"!gpio26"\nlock = "gpio16"')))
    assert [c["linux"]["rcd_trip"] for c in board["connectors"]] == ["!gpio22", "!gpio26"]


def test_evse_bundle_refuses_a_board_with_a_shared_pin(tmp_path, capsys):
    from tools.cli import main
    path, _ = with_pin(tmp_path, "esp32-devkitc", "lock", "27")
    out = tmp_path / "out"
    assert main(["bundle", "--board", path, "--out", str(out)]) == 2
    assert "connectors.0.mcu.lock: GPIO27 is already connectors.0.mcu.contactor" in \
        capsys.readouterr().err
    assert not out.exists()


def test_every_microcontroller_pin_key_has_a_role():
    pin_keys = {key for key, check, _ in boardfile.MCU_PINS if check is boardfile._mcu_pin} | \
        {key for _, key, check, _ in boardfile.TOP if check is boardfile._mcu_pin}
    assert set(boardfile.MCU_PIN_ROLES) == pin_keys
    assert set(boardfile.MCU_PIN_ROLES.values()) == set(boardfile.ROLE_MARKS)


@pytest.mark.parametrize("port", sorted(boardfile.MCU_PORT_RULES))
def test_port_rules_name_pins_the_port_has(port):
    """The first rule of a port is its GPIO list; every other rule and the module's pins are
    pins of that list, or a typo in the table would let a wrong pin through."""
    (_, gpio, must_be_one, _), *rules = boardfile.MCU_PORT_RULES[port]
    assert must_be_one
    for _, pins, _, why in rules:
        assert set(pins) <= set(gpio), why
    assert set(boardfile.MODULE_PINS[port][0]) <= set(gpio)


def test_a_folder_given_as_a_board_is_one_line(tmp_path, capsys):
    from tools.cli import main
    assert main(["bundle", "--board", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "Is a directory" in capsys.readouterr().err

"""Board files (`boards/NAME.toml`): load, validate, normalise (CPython).

The schema is a table. Validation collects every problem and reports each as
`FILE:LINE: key: problem`, so a charger maker fixes a file in one pass. The result is a plain
dict of integers and strings (mA, ms, ...) that the portable core takes as it is, and that
`evse bundle` writes as JSON for a microcontroller.
"""
import os
import re
import tomllib

from agent import params as params_table
from hal import linux as linux_names
from simulator import units

HALS = ("simulator", "linux", "micropython", "unix")


def _choice(*allowed):
    def check(value):
        if value not in allowed:
            raise ValueError("must be one of %s, got %r" % (", ".join(map(str, allowed)), value))
        return value
    return check


def _string(max_len=None):
    def check(value):
        if not isinstance(value, str):
            raise ValueError("must be a string, got %r" % (value,))
        if max_len is not None and len(value) > max_len:
            raise ValueError("must be at most %d characters" % max_len)
        return value
    return check


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError("must be true or false, got %r" % (value,))
    return value


def _integer(low, high):
    def check(value):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError("must be an integer %d..%d, got %r" % (low, high, value))
        return value
    return check


def _quantity(parse, low, high, unit):
    def check(value):
        if not isinstance(value, str):
            raise ValueError("must be a quoted quantity like \"32A\", got %r" % (value,))
        amount = parse(value)
        if not low <= amount <= high:
            raise ValueError("must be between %s and %s" % (low_text, high_text))
        return amount
    low_text, high_text = "%g%s" % (low / 1000, unit), "%g%s" % (high / 1000, unit)
    return check


def _path(value):
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute path, got %r" % (value,))
    return value


def _url(value):
    if not isinstance(value, str) or not re.match(r"^wss?://[^/\s]+", value):
        raise ValueError("must be a ws:// or wss:// URL, got %r" % (value,))
    return value


def _device(pattern, example):
    def check(value):
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError("must name a device like %r, got %r" % (example, value))
        return value
    return check


def _calibration(value):
    """Two [adc_mv, pilot_mv] points, e.g. [[0, -12000], [3300, 12000]]."""
    try:
        (a_adc, a_value), (b_adc, b_value) = value
        numbers = (a_adc, a_value, b_adc, b_value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 4 or not all(isinstance(n, (int, float)) and not isinstance(n, bool)
                                    for n in numbers):
        raise ValueError("must be two [adc_mv, pilot_mv] points, e.g. "
                         "[[0, -12000], [3300, 12000]]")
    if a_adc == b_adc or a_value == b_value:
        raise ValueError("the two points must differ in both adc_mv and pilot_mv")
    return [[a_adc, a_value], [b_adc, b_value]]


def _meter_model(value):
    from hal.meter_profiles import PROFILES
    known = ("sim", "none", "custom") + tuple(sorted(PROFILES))
    if value not in known:
        raise ValueError("must be one of %s, got %r (`evse meter models` lists the "
                         "meters)" % (", ".join(known), value))
    return value


def _host_port(value):
    if not isinstance(value, str) or not re.match(r"^[\w.\-]+:\d{1,5}$", value):
        raise ValueError("must be \"HOST:PORT\", e.g. \"192.168.1.50:502\", got %r" % (value,))
    return value


def _mcu_pin(value):
    from hal.mp_pilot import parse_pin
    parse_pin(value)        # ValueError with the reason
    return value


def _pin_numbers(value):
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool)
                                              and 0 <= n <= 63 for n in value):
        raise ValueError("must be a list of GPIO numbers, e.g. [23, 24, 25], got %r" % (value,))
    return value


def _id_tags(value):
    if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 20
                                              for t in value):
        raise ValueError("must be a list of id tags (strings of 1..20 characters)")
    return value


CURRENT = _quantity(units.parse_current, 6000, 80000, "A")
DURATION = _quantity(units.parse_duration, 1, 86400000, "s")

# (table, key, check, default) -- default REQUIRED means the key must be present
REQUIRED = object()
TOP = (
    ("", "name", _string(64), REQUIRED),
    ("", "description", _string(), ""),
    ("", "hal", _choice(*HALS), REQUIRED),
    ("station", "vendor", _string(20), "evse-agent"),
    ("station", "model", _string(20), "simulated"),
    ("station", "serial", _string(25), "SIM-0001"),
    ("station", "firmware", _string(50), "0.1.0"),
    ("authorization", "mode", _choice("free", "list", "csms"), "free"),
    ("authorization", "id_tags", _id_tags, []),
    ("authorization", "free_tag", _string(20), "FREE"),
    ("meter", "model", _meter_model, "sim"),
    ("meter", "on_failure", _choice("stop", "continue"), "stop"),
    ("meter", "tcp", _host_port, None),
    ("meter", "serial", _path, None),
    ("meter", "baud", _choice(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200), None),
    ("meter", "parity", _choice("N", "E", "O"), None),
    ("meter", "stopbits", _choice(1, 2), None),
    ("meter", "id", _integer(1, 247), None),
    ("meter", "timeout", _quantity(units.parse_duration, 10, 10000, "s"), 500),
    ("linux", "sysfs", _path, "/sys"),
    ("linux", "poll", _quantity(units.parse_duration, 1, 100, "s"), 2),         # charging
    ("linux", "idle_poll", _quantity(units.parse_duration, 1, 100, "s"), 20),   # no power
    ("linux", "watchdog", _path, None),        # e.g. "/dev/watchdog0"
    # the scripted EV of the MicroPython unix port's board (hal/unix_sim.py)
    ("unix", "tag", _string(20), None),
    ("unix", "plug_after", _quantity(units.parse_duration, 0, 3600000, "s"), 1000),
    ("unix", "charge", _quantity(units.parse_duration, 1000, 86400000, "s"), 30000),
    ("unix", "ev_current", CURRENT, 16000),
    # microcontroller boards (MicroPython, hal/mp_drivers.py): how often the inputs are read
    # (0: on events only, the unix port's scripted board); a sampled pilot needs >= 10 ms
    ("mcu", "port", _choice("esp32", "rp2"), None),
    ("mcu", "poll", _quantity(units.parse_duration, 0, 100, "s"), 0),
    ("mcu", "watchdog_ms", _integer(0, 8388), None),
    ("mcu", "adc_reference_mv", _integer(1000, 5000), None),
    ("mcu", "pilot_settle_us", _integer(1, 200), None),
    ("mcu", "pilot_periods", _integer(1, 20), None),
    ("mcu", "meter_uart", _integer(0, 3), None),
    ("mcu", "meter_tx", _mcu_pin, None),
    ("mcu", "meter_rx", _mcu_pin, None),
    ("mcu", "meter_de", _mcu_pin, None),
    ("mcu", "reserved_pins", _pin_numbers, None),   # absent: the port's MODULE_PINS
    ("ocpp", "csms", _url, None),
    ("ocpp", "id", _string(48), None),
    ("ocpp", "auth_key", _string(40), None),
    ("ocpp", "ca", _path, None),
    ("storage", "dir", _string(200), None),     # absolute on Linux; relative on a board's FS
    ("sim", "noise_mv", _integer(0, 2000), 0),
    ("sim", "seed", _integer(0, 2 ** 31), 1),
    ("sim", "ev_capacity", _quantity(units.parse_energy, 1000, 300000000, "kWh"), 60000),
    ("sim", "ev_soc", _integer(0, 100), 20),
    ("sim", "ev_max_current", CURRENT, 32000),
    ("sim", "ev_phases", _choice(1, 3), 3),
    ("sim", "ev_delay", _quantity(units.parse_duration, 0, 5000, "s"), 500),
    ("sim", "contactor_close", _quantity(units.parse_duration, 0, 1000, "s"), 30),
    ("sim", "contactor_open", _quantity(units.parse_duration, 0, 1000, "s"), 20),
    # a Modbus [meter] model is served on real Modbus: TCP on 127.0.0.1, or RTU on a pty pair
    # paced at the meter's baud rate
    ("sim", "meter_link", _choice("tcp", "rtu"), "tcp"),
)
CONNECTOR = (
    ("id", _integer(1, 32), REQUIRED),
    ("type", _choice("socket", "cable"), "socket"),
    ("max_current", CURRENT, REQUIRED),
    ("cable_max_current", CURRENT, None),
    ("phases", _choice(1, 3), 3),
    ("ventilation", _boolean, False),
    ("contactor_feedback", _boolean, True),
    ("lock_feedback", _boolean, True),
    ("state_e", _boolean, False),
)
TABLES = {"", "station", "authorization", "meter", "sim", "timing", "linux", "ocpp", "storage",
          "unix", "mcu"}

# [connectors.linux]: where a connector's parts are wired on a Linux board (hal/linux.py)
PWM, GPIO, IIO = (_device(linux_names.PWM_NAME, "pwmchip0/pwm0"),
                  _device(linux_names.GPIO_NAME, "gpio17"),
                  _device(linux_names.IIO_NAME, "iio:device0/in_voltage0"))
LINUX_PINS = (
    ("pilot_pwm", PWM, REQUIRED),
    ("pilot_adc_high", IIO, REQUIRED),       # peak-hold of the high plateau
    ("pilot_adc_low", IIO, REQUIRED),        # valley-hold of the low plateau
    ("pilot_calibration", _calibration, REQUIRED),
    ("pilot_inverted", _boolean, False),
    ("contactor", GPIO, REQUIRED),
    ("contactor_feedback", GPIO, None),
    ("rcd_trip", GPIO, None),
    ("rcd_test", GPIO, None),
    ("rcd_reset", GPIO, None),
    ("lock", GPIO, None),
    ("lock_feedback", GPIO, None),
    ("pp_adc", IIO, None),
    ("pp_pullup_ohms", _integer(100, 100000), 1000),
    ("pp_reference_mv", _integer(1000, 12000), 3300),
)
# [connectors.mcu]: where a connector's parts are wired on a microcontroller (hal/mp_drivers.py)
MCU_PINS = (
    ("pilot_pwm", _mcu_pin, REQUIRED),
    ("pilot_adc", _mcu_pin, REQUIRED),
    ("pilot_sense", _mcu_pin, None),         # ESP32: times the samples (see mp_pilot_esp32)
    ("pilot_calibration", _calibration, REQUIRED),
    ("pilot_inverted", _boolean, False),
    ("contactor", _mcu_pin, REQUIRED),
    ("contactor_feedback", _mcu_pin, None),
    ("rcd_trip", _mcu_pin, None),
    ("rcd_test", _mcu_pin, None),
    ("rcd_reset", _mcu_pin, None),
    ("lock", _mcu_pin, None),
    ("lock_unlock", _mcu_pin, None),
    ("lock_pulse_ms", _integer(50, 5000), 600),
    ("lock_feedback", _mcu_pin, None),
    ("pp_adc", _mcu_pin, None),
    ("pp_pullup_ohms", _integer(100, 100000), 1000),
    ("pp_reference_mv", _integer(1000, 12000), 3300),
)
# (connector key, value, pin that must then be wired, why): Linux and microcontroller boards
PIN_NEEDS = (
    ("contactor_feedback", True, "contactor_feedback", "contactor_feedback = true"),
    ("lock_feedback", True, "lock_feedback", "lock_feedback = true"),
    ("type", "socket", "lock", "a socket locks the plug"),
    ("type", "socket", "pp_adc", "a socket reads the cable's PP resistor"),
)

# -- which pins can do what ------------------------------------------------------------------
#
# One pin, one key, across [mcu] and every connector, with no exception: two outputs on one pin
# switch together (a lock that closes the contactor); two inputs on one pin read one signal as
# two facts (the contactor's mirror contact taken for the RCD's test input); an ADC channel read
# for two purposes reads one divider's voltage as two; and connectors may not share an RCD
# either, as each AC charging point needs its own (IEC 61851-1:2017 §8.5, spec/standards.md
# §3.1). A pin is named by what its driver opens: "!gpio17" and "gpio17" are one line.

OUTPUT, INPUT, PWM_OUTPUT, ADC_INPUT, UART_TX, UART_RX = (
    "an output", "an input", "a PWM output", "an ADC input", "a UART TX", "a UART RX")
# what each microcontroller pin key does with its pin (hal/mp_drivers.py, hal/mp_pilot_*.py)
MCU_PIN_ROLES = {
    "meter_tx": UART_TX, "meter_rx": UART_RX, "meter_de": OUTPUT,            # [mcu]
    "pilot_pwm": PWM_OUTPUT, "pilot_adc": ADC_INPUT, "pilot_sense": INPUT,  # [connectors.mcu]
    "contactor": OUTPUT, "contactor_feedback": INPUT,
    "rcd_trip": INPUT, "rcd_test": OUTPUT, "rcd_reset": OUTPUT,
    "lock": OUTPUT, "lock_unlock": OUTPUT, "lock_feedback": INPUT,
    "pp_adc": ADC_INPUT,
}
# the pin marks each role's driver honours: machine.UART, the PWM and the ADCs take the bare
# pin (plain_pin_id() refuses "!" there, but only once on the board), and an output has no
# use for a pull resistor
ROLE_MARKS = {OUTPUT: ("!",), INPUT: ("!", "+up", "+down"), PWM_OUTPUT: (), ADC_INPUT: (),
              UART_TX: (), UART_RX: ()}
MARK_NAMES = {"!": "an active-low mark", "+up": "a pull-up", "+down": "a pull-down"}
DRIVEN = frozenset((OUTPUT, PWM_OUTPUT, UART_TX))
ANY_ROLE = frozenset(ROLE_MARKS)
PULLED = "pulled"               # a use with "+up"/"+down", for the rules about pull resistors

ESP32_GPIO = frozenset(list(range(0, 20)) + [21, 22, 23, 25, 26, 27] + list(range(32, 40)))
# port -> (which uses the rule is about, pins, True: the pin must be one of them / False: must
# not, the problem otherwise); the first rule a pin breaks is the one reported
MCU_PORT_RULES = {
    # ESP32 Series Datasheet (pin description, ADC) and ESP-IDF's GPIO summary: 34 GPIO pads,
    # GPIO0-19, 21-23, 25-27, 32-39; GPIO6-11 carry the module's SPI flash; GPIO34-39 are input
    # only, without pull resistors; ADC2 cannot be used while Wi-Fi is on, so an ADC input must
    # be on ADC1, GPIO32-39 (boards/esp32-devkitc.toml says so too). The original ESP32 only:
    # MicroPython's esp32 port also runs the S2/S3/C3, whose pins would need rows of their own.
    "esp32": (
        (ANY_ROLE, ESP32_GPIO, True, "no such pin: the ESP32 has GPIO0-19, 21-23, 25-27, 32-39"),
        (ANY_ROLE, range(6, 12), False, "wired to the module's SPI flash (GPIO6-11)"),
        (DRIVEN, range(34, 40), False, "input only (GPIO34-39), it cannot be driven"),
        ({PULLED}, range(34, 40), False, "has no internal pull resistor (GPIO34-39): fit one "
                                         "on the board and drop the +up/+down"),
        ({ADC_INPUT}, range(32, 40), True, "not on ADC1: an ADC input must be GPIO32-39, as "
                                           "ADC2 cannot be read while Wi-Fi is on"),
    ),
    # RP2040 datasheet §1.4.3 (GPIO0-29) and §4.9 (ADC inputs 0-3 are GPIO26-29)
    "rp2": (
        (ANY_ROLE, range(0, 30), True, "no such pin: the RP2040 has GPIO0-29"),
        ({ADC_INPUT}, range(26, 30), True, "not an ADC pin: the RP2040's ADC inputs are "
                                           "GPIO26-29"),
    ),
}
# port -> (pins the module around the chip uses itself, what for): refused unless the board
# says otherwise with [mcu] reserved_pins (a custom RP2040 board with GPIO29 wired out as
# ADC3 says reserved_pins = []; an ESP32-WROVER [1, 3, 16, 17], its PSRAM on 16 and 17)
MODULE_PINS = {
    # ESP32 DevKitC: UART0 is the REPL `evse flash` talks through, and GPIO1 sends the boot log
    "esp32": ((1, 3), "UART0, the REPL and boot log"),
    # Pico datasheet (pinout): GPIO23 SMPS mode, 24 VBUS sense, 25 LED, 29 VSYS/3 on ADC3;
    # Pico W datasheet: the same four drive and read the Wi-Fi chip
    "rp2": ((23, 24, 25, 29), "on a Pico SMPS mode, VBUS sense, LED and VSYS/3; on a Pico W "
                              "the Wi-Fi chip"),
}


class BoardError(Exception):
    def __init__(self, problems):
        self.problems = problems
        super().__init__("\n".join(problems))


def _key_lines(text):
    """(table, index, key) -> line number, from a light scan of the TOML text."""
    lines = {}
    table, index, counts = "", None, {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        array = re.match(r"\[\[\s*([\w.]+)\s*\]\]", stripped)
        header = re.match(r"\[\s*([\w.]+)\s*\]", stripped)
        if array:
            table = array.group(1)
            index = counts.get(table, 0)
            counts[table] = index + 1
            lines[(table, index, "")] = number
        elif header:
            table, index = header.group(1), None
            parent = table.split(".")[0]
            if "." in table and counts.get(parent):
                index = counts[parent] - 1        # [connectors.linux] of the last connector
            lines[(table, index, "")] = number
        else:
            key = re.match(r"([\w\-]+)\s*=", stripped)
            if key:
                lines.setdefault((table, index, key.group(1)), number)
    return lines


def _dotted(table, key, index=None):
    """How problems name a key: `connectors.0.mcu.lock` is `lock` in the first connector's
    [connectors.mcu]."""
    parent, _, child = table.partition(".")
    return (parent + "." if parent else "") + ("%d." % index if index is not None else "") + \
        (child + "." if child else "") + key


def load(path):
    """Load and validate a board file; raises BoardError listing every problem."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:            # a folder, no permission, gone since it was found
        raise BoardError(["%s: %s" % (path, error.strerror or error)]) from None
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise BoardError(["%s:%d: not UTF-8 text (%s)" % (path, line, error.reason)])
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        raise BoardError(["%s:%s: TOML syntax: %s" % (path, match.group(1) if match else 1, error)])
    return validate(document, path, _key_lines(text))


def validate(document, path="<board>", key_lines=None):
    key_lines = key_lines or {}
    problems = []
    board = {"path": path}

    def line_of(table, key, index=None):
        return key_lines.get((table, index, key)) or key_lines.get((table, index, "")) or 1

    def where(table, key, index=None):
        return "%s:%d: %s" % (path, line_of(table, key, index), _dotted(table, key, index))

    top_keys = {key for table, key, _, _ in TOP if table == ""}
    for name in list(document):
        value = document[name]
        is_table = isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value))
        if name == "connectors" or name in top_keys:
            continue
        if name in TABLES:
            if not isinstance(value, dict):
                problems.append("%s: must be a table [%s], got %r" % (
                    where("", name), name, value))
                document[name] = {}
        elif is_table:
            shown = ("[%s]" if isinstance(value, dict) else "[[%s]]") % name
            problems.append("%s: unknown table %s (known: %s, [[connectors]])" % (
                where(name, "")[:-1].rstrip(".") if (name, None, "") in key_lines else
                where(name, "", 0)[:-2].rstrip("."), shown,
                ", ".join("[%s]" % t for t in sorted(TABLES - {""}))))
        else:
            problems.append("%s: unknown key (known: %s)" % (
                where("", name), ", ".join(sorted(top_keys))))
    for table, key, check, default in TOP:
        section = document.get(table, {}) if table else document
        target = board.setdefault(table, {}) if table else board
        if key in section:
            try:
                target[key] = check(section[key])
            except ValueError as error:
                problems.append("%s: %s" % (where(table, key), error))
        elif default is REQUIRED:
            problems.append("%s: missing (required)" % where(table, key))
        else:
            target[key] = default
    for table in TABLES - {""}:
        section = document.get(table, {})
        known = {k for t, k, _, _ in TOP if t == table}
        if table == "timing":
            known = set(params_table.DEFAULTS)
        elif table == "meter":
            known.add("registers")          # [[meter.registers]] of a custom meter
        for key in section:
            if key not in known:
                problems.append("%s: unknown key (known: %s)" % (where(table, key),
                                                               ", ".join(sorted(known))))
    timing = document.get("timing", {})
    board["timing"] = {}
    for key in timing:
        if key in params_table.DEFAULTS:
            try:
                params_table.Params({key: timing[key]})
                board["timing"][key] = timing[key]
            except ValueError as error:
                problems.append("%s: %s" % (where("timing", key), error))

    connectors = document.get("connectors")
    board["connectors"] = []
    if not isinstance(connectors, list) or not connectors or \
            not all(isinstance(c, dict) for c in connectors):
        problems.append("%s: at least one [[connectors]] table is required" % (
            where("", "connectors") if connectors is not None else path + ":1: connectors"))
        connectors = []
    seen = set()
    for index, section in enumerate(connectors):
        connector = _checked(section, CONNECTOR, ("linux", "mcu"),
                             lambda key: where("connectors", key, index), problems)
        for hal_name, table, schema in (("linux", "linux", LINUX_PINS),
                                        ("micropython", "mcu", MCU_PINS)):
            if board.get("hal") == hal_name:
                connector[table] = _pins(section.get(table), table, schema, connector, index,
                                         where, problems)
            elif table in section:
                problems.append("%s: only for hal = \"%s\"" % (
                    where("connectors." + table, "", index).rstrip("."), hal_name))
        if connector.get("id") in seen:
            problems.append("%s: duplicate connector id %d" % (
                where("connectors", "id", index), connector["id"]))
        seen.add(connector.get("id"))
        if connector.get("type") == "cable" and connector.get("cable_max_current") is None:
            connector["cable_max_current"] = connector.get("max_current")
        board["connectors"].append(connector)
    _meter_checks(document.get("meter", {}), board, where, key_lines, path, problems)
    _pin_checks(board, where, line_of, problems)
    if board.get("hal") == "micropython":
        mcu = board.get("mcu", {})
        if mcu.get("port") is None:
            problems.append("%s: hal = \"micropython\" needs port = \"esp32\" or \"rp2\"" %
                            where("mcu", "port"))
        elif mcu["port"] == "esp32" and any(c.get("mcu", {}).get("pilot_sense") is None
                                            for c in board["connectors"]):
            problems.append("%s: an ESP32 times its pilot samples from pilot_sense (see "
                            "hal/mp_pilot_esp32.py): wire it" % where("mcu", "port"))
        if mcu.get("poll", 0) < 10:
            problems.append("%s: a sampled pilot needs poll >= 10ms (a pilot read takes 2-3 "
                            "ms)" % where("mcu", "poll"))
    if board.get("authorization", {}).get("mode") == "list" and \
            not board["authorization"].get("id_tags"):
        problems.append("%s: mode \"list\" needs id_tags" % where("authorization", "mode"))
    if problems:
        raise BoardError(problems)
    return board


# [[meter.registers]] of a custom meter: one row of hal/modbus_meter.py's format each
REGISTER_KEYS = ("quantity", "function", "address", "type", "order", "scale")


def _meter_checks(section, board, where, key_lines, path, problems):
    """A Modbus meter on a real board needs a link; a custom one needs its registers."""
    from hal import modbus_meter
    meter = board.get("meter", {})
    rows = section.get("registers") if isinstance(section, dict) else None
    model = meter.get("model")
    if model == "custom":
        if not isinstance(rows, list) or not rows:
            problems.append("%s: model \"custom\" needs [[meter.registers]] tables (%s)" % (
                where("meter", "model"), ", ".join(REGISTER_KEYS)))
            return
        meter["registers"] = []
        for index, row in enumerate(rows):
            line = key_lines.get(("meter.registers", index, "")) or 1
            missing = [k for k in REGISTER_KEYS if k not in row]
            unknown = [k for k in row if k not in REGISTER_KEYS]
            if missing or unknown:
                problems.append("%s:%d: meter.registers.%d: %s" % (path, line, index, "; ".join(
                    ["missing %s" % ", ".join(missing)] * bool(missing) +
                    ["unknown %s" % ", ".join(unknown)] * bool(unknown))))
                continue
            entry = tuple(row[k] for k in REGISTER_KEYS)
            try:
                modbus_meter.check_profile({"rows": (entry,)})
            except modbus_meter.ProfileError as error:
                problems.append("%s:%d: meter.registers.%d: %s" % (path, line, index, error))
                continue
            meter["registers"].append(entry)
        if len(meter["registers"]) == len(rows):
            try:
                modbus_meter.check_profile({"rows": tuple(meter["registers"])})
            except modbus_meter.ProfileError as error:
                problems.append("%s: %s" % (where("meter", "model"), error))
    elif rows is not None:
        problems.append("%s: [[meter.registers]] only with model = \"custom\"" %
                        where("meter", "model"))
    modbus = model not in ("sim", "none")
    if modbus and board.get("hal") == "linux" and not meter.get("tcp") and \
            not meter.get("serial"):
        problems.append("%s: a Modbus meter needs tcp = \"HOST:PORT\" or serial = "
                        "\"/dev/...\"" % where("meter", "model"))
    if modbus and board.get("hal") == "unix" and not meter.get("serial"):
        problems.append("%s: a Modbus meter on the unix port needs serial = \"/dev/...\" "
                        "(it reads RTU only)" % where("meter", "model"))
    if modbus and board.get("hal") == "micropython":
        missing = [k for k in ("meter_uart", "meter_tx", "meter_rx")
                   if board.get("mcu", {}).get(k) is None]
        if missing:
            problems.append("%s: a Modbus meter on a microcontroller needs [mcu] %s" % (
                where("meter", "model"), ", ".join(missing)))
    if meter.get("tcp") and meter.get("serial"):
        problems.append("%s: tcp or serial, not both" % where("meter", "serial"))


def _checked(section, schema, also_known, where_key, problems):
    """The values of one table checked against its schema rows (key, check, default):
    a problem for every bad, missing required or unknown key."""
    values = {}
    for key, check, default in schema:
        if key in section:
            try:
                values[key] = check(section[key])
            except ValueError as error:
                problems.append("%s: %s" % (where_key(key), error))
        elif default is REQUIRED:
            problems.append("%s: missing (required)" % where_key(key))
        else:
            values[key] = default
    known = [k for k, _, _ in schema] + list(also_known)
    for key in section:
        if key not in known:
            problems.append("%s: unknown key (known: %s)" % (where_key(key), ", ".join(known)))
    return values


def _pins(section, table, schema, connector, index, where, problems):
    """A connector's [connectors.linux] or [connectors.mcu] table: every pin named, and
    every part the connector says it has is wired."""
    if not isinstance(section, dict):
        problems.append("%s: a [connectors.%s] table is required with this hal" % (
            where("connectors", "id", index), table))
        return {}
    pins = _checked(section, schema, (), lambda key: where("connectors." + table, key, index),
                    problems)
    for connector_key, value, pin, why in PIN_NEEDS:
        if connector.get(connector_key) == value and section.get(pin) is None:
            problems.append("%s: missing (%s)" % (where("connectors." + table, pin, index),
                                                  why))
    return pins


def _linux_device(name):
    """The device a [connectors.linux] name opens: "!gpio017" is the line gpio17."""
    gpio = linux_names.GPIO_NAME.match(name)
    return "gpio%d" % int(gpio.group(2)) if gpio else name


def _mcu_gpio(spec):
    """The pin a [mcu] or [connectors.mcu] spec opens: "!17+up" is GPIO17."""
    from hal.mp_pilot import parse_pin
    pin_id = parse_pin(spec)[0]
    return "GPIO%d" % pin_id if isinstance(pin_id, int) else "pin %r" % pin_id


def _port_rules(mcu):
    """The port's MCU_PORT_RULES, then its module's pins: MODULE_PINS, or the board's own."""
    port = mcu.get("port")
    if port not in MCU_PORT_RULES:
        return ()
    reserved, why = MODULE_PINS[port]
    if mcu.get("reserved_pins") is not None:
        reserved, why = mcu["reserved_pins"], "[mcu] reserved_pins"
    return MCU_PORT_RULES[port] + (
        (ANY_ROLE, reserved, False, "the board keeps it for itself (%s); [mcu] reserved_pins "
                                    "says which pins a board keeps" % why),)


def _mcu_pin_problem(mcu, key, spec):
    """Why the pin `spec` cannot do what `key` asks of it on this port, or None."""
    from hal.mp_pilot import parse_pin
    role = MCU_PIN_ROLES[key]
    pin_id, active_low, pull = parse_pin(spec)
    for mark in [m for m, present in (("!", active_low), ("+%s" % pull, pull)) if present]:
        if mark not in ROLE_MARKS[role]:
            return "%r: %s means nothing on %s" % (spec, MARK_NAMES[mark], role)
    if not isinstance(pin_id, int):
        return None             # a name machine.Pin resolves on the board ("LED")
    use = {role, PULLED} if pull else {role}
    for applies, pins, must_be_one, why in _port_rules(mcu):
        if use & applies and (pin_id in pins) != must_be_one:
            return "GPIO%d: %s" % (pin_id, why)
    return None


LINUX_PIN_KEYS = frozenset(key for key, check, _ in LINUX_PINS if check in (PWM, GPIO, IIO))
# hal -> (the table a connector's pins are in, which also holds the board-wide ones, the keys
# that name a pin, the pin a value opens, what is wrong with a pin for its key or None)
WIRING = {
    "linux": ("linux", LINUX_PIN_KEYS, _linux_device, lambda board_wide, key, value: None),
    "micropython": ("mcu", MCU_PIN_ROLES, _mcu_gpio, _mcu_pin_problem),
}


def _pin_checks(board, where, line_of, problems):
    """Every pin serves one key of the board only, and can do what that key asks of it."""
    if board.get("hal") not in WIRING:
        return
    table, pin_keys, pin_of, pin_problem = WIRING[board["hal"]]
    board_wide = board.get(table) or {}
    sections = [(table, None, board_wide)] + [
        ("connectors." + table, index, connector.get(table) or {})
        for index, connector in enumerate(board["connectors"])]
    # in file order, so a conflict is reported at the later of the two keys
    uses = sorted([(line_of(name, key, index), name, index, key, value)
                   for name, index, section in sections
                   for key, value in section.items() if key in pin_keys and value is not None],
                  key=lambda use: use[0])
    first_use = {}
    for line, name, index, key, value in uses:
        problem = pin_problem(board_wide, key, value)
        if problem:
            problems.append("%s: %s" % (where(name, key, index), problem))
        pin = pin_of(value)
        if pin in first_use:
            problems.append("%s: %s is already %s (line %d); a pin serves one key only" % (
                where(name, key, index), pin, _dotted(*first_use[pin][1:]), first_use[pin][0]))
        else:
            first_use[pin] = (line, name, key, index)


def find(name_or_path):
    """A board by path, or by name from the bundled boards/ folder."""
    if os.path.exists(name_or_path):
        return name_or_path
    bundled = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "boards", name_or_path if name_or_path.endswith(".toml")
                           else name_or_path + ".toml")
    if os.path.exists(bundled):
        return bundled
    raise BoardError(["%s: no such board file" % name_or_path])

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


def load(path):
    """Load and validate a board file; raises BoardError listing every problem."""
    with open(path, "rb") as file:
        raw = file.read()
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

    def where(table, key, index=None):
        line = key_lines.get((table, index, key)) or key_lines.get((table, index, "")) or 1
        parent, _, child = table.partition(".")
        name = (parent + "." if parent else "") + ("%d." % index if index is not None else "") + \
            (child + "." if child else "")
        return "%s:%d: %s%s" % (path, line, name, key)

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

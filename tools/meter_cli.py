"""`evse meter`: a Modbus energy meter on the bench, read the way the agent reads it.

    evse meter models                                         the meters evse-agent knows
    evse meter read --model sdm630 --serial /dev/ttyUSB0      one reading (--json for scripts)
    evse meter watch --model sdm630 --tcp 192.168.1.50:502    a live view, one line a reading
    evse meter probe --serial /dev/ttyUSB0 --ids 1-20         who answers, and as which model
    evse meter serve --model sdm630 --tcp 127.0.0.1:5020      a simulated meter to try it on

Flags follow the usual Modbus tools (mbpoll, modpoll): --tcp HOST[:PORT], --serial DEVICE,
--baud, --parity N|E|O, --stopbits, --id (the unit id), --timeout (seconds). Line settings
left out come from the model's defaults (`evse meter models`). The reading goes through the
very code the agent uses (hal/modbus_client.py), so what works here works in `evse run`.
Exit status: 0 done, 1 the meter did not answer properly (the reason on stderr), 2 bad
arguments.
"""
import argparse
import asyncio
import json
import sys
import textwrap
import time

EXIT_OK, EXIT_METER, EXIT_USAGE = 0, 1, 2
PROBE_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DESIGN_KEYS = ("energy_import_wh", "energy_export_wh", "power_w", "voltage_v", "current_a",
               "frequency_hz")

EXAMPLES = {
    "models": """examples:
  evse meter models
  evse meter models --json""",
    "read": """examples:
  evse meter read --model sdm630 --serial /dev/ttyUSB0            model defaults (id 1, 9600 8N1)
  evse meter read --model em340 --serial /dev/ttyUSB0 --id 11 --baud 9600 --parity N
  evse meter read --model sdm630 --tcp 192.168.1.50:502 --id 1 --json

--json prints one object: energy_import_wh, energy_export_wh (integers), power_w, voltage_v
and current_a (lists L1, L2, L3), frequency_hz, power_w_phases, power_factor; null where
the meter has no such value. No answer? Check the unit id, baud rate and parity (`evse
meter probe`), and the A/B wires (ABB and Carlo Gavazzi label them the other way round).""",
    "watch": """examples:
  evse meter watch --model sdm630 --serial /dev/ttyUSB0 --interval 0.5
  evse meter watch --model sdm630 --tcp 127.0.0.1:5020 --count 10 --json   (JSON Lines)

One line per reading; a failed reading prints its reason and the watch goes on. Ctrl-C
stops it (exit 0). With --count, exit 1 if any reading failed.""",
    "probe": """examples:
  evse meter probe --serial /dev/ttyUSB0                      ids 1-20 at 9600 8N1
  evse meter probe --serial /dev/ttyUSB0 --ids 1-247 --bauds 2400,9600,19200
  evse meter probe --serial /dev/ttyUSB0 --bauds all --parity E
  evse meter probe --tcp 192.168.1.50:502 --ids 1-10 --model sdm630

For each unit id (and baud rate) one or two short requests tell whether anybody answers;
a unit that answers is then read with every model's register map (or only --model's), and
the maps that give a complete, plausible reading are listed ("realistic" when a voltage or
frequency looks like a live grid). Meters with the same register map all match. Each try
takes at most --timeout (longer at low baud rates: the answer's wire time is added).
Exit 0 if some unit answered, 1 if none did. A pseudo-terminal ignores the baud rate: every
rate "works" on `evse meter serve --pty`.""",
    "serve": """examples:
  evse meter serve --model sdm630 --tcp 127.0.0.1:5020
  evse meter serve --model em340 --pty --baud 9600            prints the device to open
  evse meter serve --model sdm630 --tcp 127.0.0.1:0 --current 32 --phases 1

The meter measures a steady load (--current per phase at --voltage, energy counting up in
real time) and serves the model's register map with pymodbus: over TCP, or as RTU on a
pseudo-terminal pair paced at the line's baud rate (--no-pace: as fast as the pty goes).
Runs until Ctrl-C.""",
}


class UsageError(Exception):
    """Arguments that parse but cannot work together: exit 2 with the message."""


# -- argument types ------------------------------------------------------------------------

def _host_port(text, any_port=False):
    from hal.modbus_client import parse_host_port
    try:
        return parse_host_port(text, any_port=any_port)
    except ValueError as error:
        raise argparse.ArgumentTypeError("%s (expected HOST:PORT, e.g. 192.168.1.50:502)"
                                         % error) from None


def _server_host_port(text):
    return _host_port(text, any_port=True)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError("%r: expected a positive whole number" % text)
    return value


def _unit_id(text):
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(
            "%r: a unit id is 1..247 (0..255 behind a TCP gateway)" % text)
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("%r: expected seconds, more than 0 and at most 60"
                                         % text)
    return value


def _parity(text):
    value = text.upper()[:1]
    if value not in ("N", "E", "O") or len(text) > 4:
        raise argparse.ArgumentTypeError("%r: parity is N (none), E (even) or O (odd)" % text)
    return value


def _id_range(text):
    """'1-10,20,30-32' -> [1..10, 20, 30, 31, 32]."""
    ids = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            low, high = int(low), int(high or low)
        except ValueError:
            raise argparse.ArgumentTypeError("%r: expected ids like 1-10,20" % text) from None
        if not 0 <= low <= high <= 255:
            raise argparse.ArgumentTypeError("%r: ids run 1..247 (0..255 on TCP), low-high"
                                             % text)
        ids.extend(i for i in range(low, high + 1) if i not in ids)
    return ids


def _bauds(text):
    if text.lower() == "all":
        return list(PROBE_BAUDS)
    try:
        bauds = [int(b) for b in text.split(",")]
    except ValueError:
        bauds = []
    if not bauds or min(bauds) <= 0:
        raise argparse.ArgumentTypeError("%r: expected baud rates like 9600,19200 or all"
                                         % text)
    return bauds


# -- the parser ----------------------------------------------------------------------------

def _link_flags(parser, required=True):
    link = parser.add_argument_group("link (one of)")
    where = link.add_mutually_exclusive_group(required=required)
    where.add_argument("--tcp", metavar="HOST[:PORT]", type=_host_port,
                       help="Modbus/TCP meter or RS-485 gateway (port 502 if left out)")
    where.add_argument("--serial", metavar="DEVICE",
                       help="serial port of the RS-485 adapter, e.g. /dev/ttyUSB0")
    line = parser.add_argument_group("serial line (default: the model's settings)")
    line.add_argument("--baud", type=_positive_int, metavar="N",
                      help="baud rate, e.g. 9600")
    line.add_argument("--parity", type=_parity, metavar="N|E|O",
                      help="N (none), E (even) or O (odd)")
    line.add_argument("--stopbits", type=int, choices=(1, 2), help="1 or 2")


def _request_flags(parser, timeout=1.0, retries=2):
    parser.add_argument("--timeout", type=_seconds, default=timeout, metavar="SECONDS",
                        help="wait this long for each answer (default %g; raised to the "
                        "answer's wire time at low baud rates)" % timeout)
    parser.add_argument("--retries", type=int, choices=range(0, 6), default=retries,
                        metavar="N", help="ask again this many times, with a growing pause "
                        "(default %d)" % retries)


def add_parser(subparsers):
    """Register `evse meter` and its actions on the `evse` command's subparsers."""
    from hal.meter_profiles import PROFILES
    models = sorted(PROFILES)
    meter = subparsers.add_parser(
        "meter", help="read, watch, probe or simulate a Modbus energy meter",
        description=textwrap.fill(
            "Talk to a Modbus energy meter (RTU over RS-485, or TCP) with the agent's own "
            "meter code, or serve a simulated one. `evse meter ACTION --help` explains each "
            "action.", 88),
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    meter.set_defaults(func=run, meter_parser=meter)
    actions = meter.add_subparsers(dest="meter_action", metavar="ACTION")

    def action(name, help_text, description):
        parser = actions.add_parser(name, help=help_text,
                                    description=textwrap.fill(description, 88),
                                    epilog=EXAMPLES[name],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.set_defaults(action_parser=parser)
        return parser

    listing = action("models", "list the meter models and their default line settings",
                     "List the meters evse-agent has register maps for, with their "
                     "default unit id and serial settings.")
    listing.add_argument("--json", action="store_true", help="print a JSON list")

    read = action("read", "read the meter once",
                  "Read every value of the model's register map in one snapshot and print "
                  "it as a table (or --json).")
    read.add_argument("--model", required=True, choices=models, metavar="MODEL",
                      help="meter model: %s" % ", ".join(models))
    _link_flags(read)
    read.add_argument("--id", type=_unit_id, metavar="N",
                      help="unit id (default: the model's, usually 1)")
    _request_flags(read)
    read.add_argument("--json", action="store_true", help="print one JSON object")

    watch = action("watch", "read the meter again and again",
                   "Read the meter every --interval seconds and print one line per "
                   "reading, until Ctrl-C or --count readings.")
    watch.add_argument("--model", required=True, choices=models, metavar="MODEL",
                       help="meter model: %s" % ", ".join(models))
    _link_flags(watch)
    watch.add_argument("--id", type=_unit_id, metavar="N", help="unit id (default: the "
                       "model's)")
    _request_flags(watch)
    watch.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                       help="time between readings (default 1)")
    watch.add_argument("--count", type=_positive_int, metavar="N",
                       help="stop after N readings")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")

    probe = action("probe", "find which unit ids (and baud rates) answer, and as what",
                   "Scan unit ids, and on a serial line baud rates, for meters, and tell "
                   "which known register maps they answer to.")
    _link_flags(probe)
    probe.add_argument("--ids", type=_id_range, default=None, metavar="RANGE",
                       help="unit ids to try, e.g. 1-10,20 (default 1-20)")
    probe.add_argument("--bauds", type=_bauds, metavar="LIST",
                       help="serial only: baud rates to try, e.g. 9600,19200, or all "
                       "(%s); default --baud, else 9600" % ",".join(map(str, PROBE_BAUDS)))
    probe.add_argument("--model", choices=models, metavar="MODEL",
                       help="only try this model's register map")
    _request_flags(probe, timeout=0.2, retries=0)
    probe.add_argument("-v", "--verbose", action="store_true",
                       help="also list silent ids and why each model was ruled out")
    probe.add_argument("--json", action="store_true", help="print one JSON object")

    serve = action("serve", "run a simulated meter on TCP or on a pseudo-terminal",
                   "Serve a simulated meter of MODEL: over Modbus/TCP, or as Modbus RTU on "
                   "a pseudo-terminal (its path is printed) paced at the baud rate.")
    serve.add_argument("--model", required=True, choices=models, metavar="MODEL",
                       help="meter model: %s" % ", ".join(models))
    where = serve.add_argument_group("where (one of)").add_mutually_exclusive_group(
        required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", type=_server_host_port,
                       help="listen on this address (port 0: any free port)")
    where.add_argument("--pty", action="store_true",
                       help="RTU on a new pseudo-terminal pair; prints the path to open")
    serve.add_argument("--id", type=_unit_id, metavar="N",
                       help="unit id (default: the model's)")
    serve.add_argument("--baud", type=_positive_int, metavar="N", help="--pty line rate "
                       "(default: the model's)")
    serve.add_argument("--parity", type=_parity, metavar="N|E|O", help="--pty parity")
    serve.add_argument("--stopbits", type=int, choices=(1, 2), help="--pty stop bits")
    serve.add_argument("--no-pace", action="store_true",
                       help="--pty: no line timing, bytes go as fast as the pty allows")
    serve.add_argument("--current", type=float, default=16.0, metavar="A",
                       help="load current per phase (default 16)")
    serve.add_argument("--voltage", type=float, default=230.0, metavar="V",
                       help="phase voltage (default 230)")
    serve.add_argument("--phases", type=int, choices=(1, 2, 3), default=None,
                       help="loaded phases (default: as many as the model measures)")
    return meter


ACTIONS = {}


def run(args):
    """`evse meter ...` as dispatched by tools/cli.py: the action's exit status."""
    if not args.meter_action:
        args.meter_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return ACTIONS[args.meter_action](args)
    except UsageError as error:
        args.action_parser.error(str(error))     # usage + message, exit 2


def main(argv=None):
    """`python -m tools.meter_cli ACTION ...` (the same as `evse meter ACTION ...`)."""
    top = argparse.ArgumentParser(prog="evse")
    add_parser(top.add_subparsers(dest="command"))
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = top.parse_args(["meter"] + argv)
        return args.func(args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE


# -- models --------------------------------------------------------------------------------

def cmd_models(args):
    from hal.meter_profiles import PROFILES
    rows = []
    for name in sorted(PROFILES):
        profile = PROFILES[name]
        d = profile.get("defaults", {})
        rows.append({"model": name, "title": profile.get("title", name),
                     "id": d.get("id", 1), "baud": d.get("baud", 9600),
                     "parity": d.get("parity", "N"), "stopbits": d.get("stopbits", 1),
                     "quantities": [row[0] for row in profile["rows"]],
                     "notes": profile.get("notes", "")})
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    width = max(len(r["model"]) for r in rows)
    title_width = max(len(r["title"]) for r in rows)
    print("%-*s  %-*s  %s" % (width, "MODEL", title_width, "METER", "DEFAULTS"))
    for r in rows:
        print("%-*s  %-*s  id %d, %d 8%s%d" % (width, r["model"], title_width, r["title"],
                                               r["id"], r["baud"], r["parity"], r["stopbits"]))
    return EXIT_OK


# -- read and watch ------------------------------------------------------------------------

def _meter_config(args):
    """The [meter] table these flags describe (hal.modbus_client.meter_from_config)."""
    if args.tcp and (args.baud or args.parity or args.stopbits):
        raise UsageError("--baud, --parity and --stopbits are for --serial; a TCP link "
                         "has no line settings")
    config = {"model": args.model, "id": args.id, "baud": args.baud, "parity": args.parity,
              "stopbits": args.stopbits, "timeout_ms": int(args.timeout * 1000),
              "retries": args.retries}
    if args.tcp:
        config["tcp"] = args.tcp            # (host, port), already checked
    else:
        config["serial"] = args.serial
        if args.id is not None and not 1 <= args.id <= 247:
            raise UsageError("--id %d: on a serial line a unit id is 1..247" % args.id)
    return config


def _meter(args):
    from hal.modbus_client import meter_from_config
    try:
        return meter_from_config(_meter_config(args))
    except ValueError as error:
        raise UsageError(str(error)) from None


def _scaled(value, divisor):
    """An integer reading in display units (dV -> V, mA -> A, mHz -> Hz, Wh -> kWh)."""
    return None if value is None else value / divisor


def _phases(values, divisor):
    values = values or (None, None, None)
    return [_scaled(v, divisor) for v in values]


def sample_json(sample, meter):
    """The `--json` object: DESIGN.md's keys first (floats in V, A, Hz; integers in W and
    Wh; null where the meter has no such value), then the rest of the snapshot."""
    return {
        "energy_import_wh": sample.energy_import_wh,
        "energy_export_wh": sample.energy_export_wh,
        "power_w": sample.power_w,
        "voltage_v": _phases(sample.voltage_dv, 10),
        "current_a": _phases(sample.current_ma, 1000),
        "frequency_hz": _scaled(sample.frequency_mhz, 1000),
        "power_w_phases": list(sample.power_w_phases or (None, None, None)),
        "power_factor": _scaled(sample.power_factor_permille, 1000),
        "model": meter.model,
        "title": meter.profile.get("title", meter.model),
        "id": meter.unit_id,
        "link": meter.bus.link,
        "timestamp_ms": sample.timestamp_ms,
    }


def _fmt(value, digits, width):
    text = "-" if value is None else "%.*f" % (digits, value)
    return text.rjust(width)


def sample_table(sample, meter):
    """The human view: per-phase columns, units in the row names, "-" where the meter has
    no such value."""
    w = 10
    lines = ["%s (%s), id %d on %s" % (meter.profile.get("title", meter.model), meter.model,
                                      meter.unit_id, meter.bus.link),
             "%-20s%s" % ("", "".join(c.rjust(w) for c in ("L1", "L2", "L3", "total")))]
    phased = [("voltage (V)", _phases(sample.voltage_dv, 10), 1, ""),
              ("current (A)", _phases(sample.current_ma, 1000), 3, ""),
              ("power (W)", list(sample.power_w_phases or (None, None, None)), 0,
               _fmt(sample.power_w, 0, w))]
    for name, values, digits, total in phased:
        lines.append("%-20s%s%s" % (name, "".join(_fmt(x, digits, w) for x in values),
                                    total))
    singles = [("power factor", _scaled(sample.power_factor_permille, 1000), 3),
               ("frequency (Hz)", _scaled(sample.frequency_mhz, 1000), 2),
               ("energy import (kWh)", _scaled(sample.energy_import_wh, 1000), 3),
               ("energy export (kWh)", _scaled(sample.energy_export_wh, 1000), 3)]
    for name, value, digits in singles:
        lines.append("%-20s%s%s" % (name, " " * (3 * w), _fmt(value, digits, w)))
    return "\n".join(lines)


def cmd_read(args):
    from hal.interfaces import MeterError
    meter = _meter(args)

    async def once():
        try:
            return await meter.read()
        finally:
            meter.bus.close()
    try:
        sample = asyncio.run(once())
    except MeterError as error:
        print("evse meter read: %s" % error, file=sys.stderr)
        return EXIT_METER
    if args.json:
        print(json.dumps(sample_json(sample, meter)))
    else:
        print(sample_table(sample, meter))
    return EXIT_OK


WATCH_HEADER = "%-8s %6s %6s %6s %7s %7s %7s %8s %12s %6s" % (
    "time", "V L1", "V L2", "V L3", "A L1", "A L2", "A L3", "P (W)", "import kWh", "Hz")


def watch_line(sample):
    v = _phases(sample.voltage_dv, 10)
    a = _phases(sample.current_ma, 1000)
    when = None if sample.timestamp_ms is None else sample.timestamp_ms / 1000
    return "%-8s %s %s %s %s %s %s %s %s %s" % (
        time.strftime("%H:%M:%S", time.localtime(when)),
        _fmt(v[0], 1, 6), _fmt(v[1], 1, 6), _fmt(v[2], 1, 6),
        _fmt(a[0], 3, 7), _fmt(a[1], 3, 7), _fmt(a[2], 3, 7),
        _fmt(sample.power_w, 0, 8), _fmt(_scaled(sample.energy_import_wh, 1000), 3, 12),
        _fmt(_scaled(sample.frequency_mhz, 1000), 2, 6))


def cmd_watch(args):
    from hal.interfaces import MeterError
    meter = _meter(args)
    failures = [0]

    async def loop():
        if not args.json:
            print(WATCH_HEADER, flush=True)
        done = 0
        next_at = time.monotonic()
        try:
            while args.count is None or done < args.count:
                try:
                    sample = await meter.read()
                except MeterError as error:
                    failures[0] += 1
                    print("%s  %s" % (time.strftime("%H:%M:%S"), error), file=sys.stderr,
                          flush=True)
                else:
                    print(json.dumps(sample_json(sample, meter)) if args.json
                          else watch_line(sample), flush=True)
                done += 1
                if args.count is not None and done >= args.count:
                    break
                # a slow reading shifts the schedule rather than bunching the next ones
                next_at = max(next_at + args.interval, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())
        finally:
            meter.bus.close()
    try:
        asyncio.run(loop())
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_METER if failures[0] else EXIT_OK


# -- probe ---------------------------------------------------------------------------------

REALISTIC_VOLTS_DV = (800, 5000)        # 80..500 V: a live grid, not an accident
REALISTIC_MHZ = (45000, 65000)


async def probe_unit(bus, unit, models):
    """What answers at `unit` on `bus`: None if nobody, else {"answer": ..., "models":
    [...plausible maps...], "rejected": {model: why}}."""
    from hal import modbus_meter
    from hal.interfaces import MeterSample, MeterError
    from hal.meter_profiles import PROFILES
    from hal.modbus_client import (ABSENT_CODES, ModbusExceptionResponse, ModbusFrameError,
                                   ModbusLinkError, ModbusMeter, ModbusTimeout)
    # is anybody there? one request per function code the candidate maps read
    first = {}
    for model in models:
        function, start, count = modbus_meter.plan(PROFILES[model])[0]
        first.setdefault(function, (start, count))
    answer = None
    for function, (start, count) in sorted(first.items(), reverse=True):
        try:
            await bus.read_registers(unit, function, start, count)
            answer = "registers"
        except ModbusExceptionResponse as error:
            if error.code in ABSENT_CODES:
                continue
            answer = "exception %02X" % error.code
        except ModbusFrameError:
            answer = "garbled"          # someone talks, at another speed or parity?
            continue
        except ModbusTimeout:
            continue
        except ModbusLinkError:
            raise
        break
    if answer is None or answer == "garbled":
        return None if answer is None else {"answer": answer, "models": [], "rejected": {}}
    matches, rejected = [], {}
    for model in models:
        profile = PROFILES[model]
        meter = ModbusMeter(profile, unit, bus, model=model)
        try:
            table = await meter.read_table()
        except ModbusLinkError:
            raise
        except MeterError as error:
            rejected[model] = str(error).split(": ", 2)[-1]
            continue
        sample = MeterSample()
        implausible = modbus_meter.decode(profile, table, sample)
        if implausible:
            rejected[model] = "implausible %s" % ", ".join(implausible)
            continue
        present = sum(1 for value in _values(sample) if value is not None)
        if not present:
            rejected[model] = "every value \"not available\""
            continue
        realistic = any(v is not None and REALISTIC_VOLTS_DV[0] <= v <= REALISTIC_VOLTS_DV[1]
                        for v in sample.voltage_dv or ()) or (
            sample.frequency_mhz is not None and
            REALISTIC_MHZ[0] <= sample.frequency_mhz <= REALISTIC_MHZ[1])
        matches.append({"model": model, "title": profile.get("title", model),
                        "values": present, "of": len(profile["rows"]),
                        "realistic": realistic})
    matches.sort(key=lambda m: (not m["realistic"], -m["values"], m["model"]))
    return {"answer": answer, "models": matches, "rejected": rejected}


def _values(sample):
    for field in ("energy_import_wh", "energy_export_wh", "power_w", "frequency_mhz",
                  "power_factor_permille"):
        yield getattr(sample, field)
    for field in ("power_w_phases", "current_ma", "voltage_dv"):
        for value in getattr(sample, field) or ():
            yield value


def cmd_probe(args):
    from hal import modbus_meter
    from hal.interfaces import MeterError
    from hal.meter_profiles import PROFILES
    from hal.modbus_client import Bus, min_timeout_ms
    models = [args.model] if args.model else sorted(PROFILES)
    if args.tcp:
        if args.baud or args.parity or args.stopbits or args.bauds:
            raise UsageError("--baud, --bauds, --parity and --stopbits are for --serial")
        lines = [None]
    else:
        defaults = PROFILES[args.model].get("defaults", {}) if args.model else {}
        bauds = args.bauds or [args.baud or defaults.get("baud", 9600)]
        parity = args.parity or defaults.get("parity", "N")
        stopbits = args.stopbits or defaults.get("stopbits", 1)
        lines = [(baud, parity, stopbits) for baud in bauds]
    ids = args.ids or list(range(1, 21))
    if not args.tcp and not all(1 <= i <= 247 for i in ids):
        raise UsageError("--ids: on a serial line unit ids are 1..247")
    blocks = [b for m in models for b in modbus_meter.plan(PROFILES[m])]
    found = []
    report = {"link": None, "ids": ids, "models": models, "found": found}

    def say(text):
        if not args.json:
            print(text, flush=True)

    async def scan():
        for line in lines:
            if line is None:
                bus = Bus(tcp=args.tcp, timeout_ms=int(args.timeout * 1000),
                          retries=args.retries)
            else:
                baud, parity, stopbits = line
                timeout_ms = max(int(args.timeout * 1000),
                                 min_timeout_ms(blocks, baud, parity, stopbits))
                bus = Bus(serial=args.serial, baud=baud, parity=parity, stopbits=stopbits,
                          timeout_ms=timeout_ms, retries=args.retries)
            report["link"] = bus.link if line is None else "serial %s" % args.serial
            say("probing %s: ids %s, %s, %.2g s per try" % (
                bus.link, _ranges(ids), "model %s" % args.model if args.model else
                "%d models" % len(models), bus.timeout_ms / 1000))
            try:
                for unit in ids:
                    result = await probe_unit(bus, unit, models)
                    if result is None:
                        if args.verbose:
                            say("  id %d: no answer" % unit)
                        continue
                    result = dict({"id": unit}, **result)
                    if line is not None:
                        result.update(baud=line[0], parity=line[1], stopbits=line[2])
                    found.append(result)
                    say("  " + _describe(result))
                    if args.verbose:
                        for model, why in sorted(result["rejected"].items()):
                            say("      not %s: %s" % (model, why))
            finally:
                bus.close()

    try:
        asyncio.run(scan())
    except MeterError as error:         # the link itself: no such device, refused
        print("evse meter probe: %s" % error, file=sys.stderr)
        return EXIT_METER
    if args.json:
        print(json.dumps(report))
    else:
        named = [r for r in found if r["models"]]
        say("%d unit%s answered%s" % (len(found), "" if len(found) == 1 else "s",
                                       "" if not named else ": " + ", ".join(
                                           "%s = %s" % (_where(r), r["models"][0]["model"])
                                           for r in named)))
    return EXIT_OK if found else EXIT_METER


def _where(result):
    where = "id %d" % result["id"]
    if "baud" in result:
        where += " at %d 8%s%d" % (result["baud"], result["parity"], result["stopbits"])
    return where


def _describe(result):
    where = _where(result)
    if result["answer"] == "garbled":
        return "%s: garbled answers (another baud rate or parity?)" % where
    if not result["models"]:
        return "%s: answers (%s) but matches no known register map" % (
            where, result["answer"])
    return "%s: answers; %s" % (where, "; ".join(
        "%s (%s): %d of %d values%s" % (m["model"], m["title"], m["values"], m["of"],
                                         ", realistic" if m["realistic"] else "")
        for m in result["models"]))


def _ranges(ids):
    """[1, 2, 3, 7] -> '1-3,7'."""
    parts, start = [], None
    for i, unit in enumerate(ids):
        if start is None:
            start = unit
        if i + 1 == len(ids) or ids[i + 1] != unit + 1:
            parts.append(str(start) if start == unit else "%d-%d" % (start, unit))
            start = None
    return ",".join(parts)


# -- serve ---------------------------------------------------------------------------------

def cmd_serve(args):
    from hal.meter_profiles import PROFILES
    from simulator.meter_server import serve_forever
    defaults = PROFILES[args.model].get("defaults", {})
    if args.tcp and (args.baud or args.parity or args.stopbits or args.no_pace):
        raise UsageError("--baud, --parity, --stopbits and --no-pace are for --pty")
    if args.id is not None and not 1 <= args.id <= 247:
        raise UsageError("--id %d: a simulated unit id is 1..247" % args.id)
    tcp = None if args.tcp is None else (
        "[%s]:%d" % args.tcp if ":" in args.tcp[0] else "%s:%d" % args.tcp)
    try:
        asyncio.run(serve_forever(
            args.model, tcp=tcp, pty=args.pty,
            unit_id=args.id if args.id is not None else defaults.get("id", 1),
            baud=args.baud or defaults.get("baud", 9600),
            parity=args.parity or defaults.get("parity", "N"),
            stopbits=args.stopbits or defaults.get("stopbits", 1), pace=not args.no_pace,
            current_a=args.current, voltage_v=args.voltage, phases=args.phases,
            print_fn=lambda text: print(text, flush=True)))
    except KeyboardInterrupt:
        return EXIT_OK
    except ValueError as error:
        raise UsageError(str(error)) from None
    except (OSError, RuntimeError) as error:     # address in use, pty trouble
        print("evse meter serve: %s" % error, file=sys.stderr)
        return EXIT_METER
    return EXIT_OK


ACTIONS.update(models=cmd_models, read=cmd_read, watch=cmd_watch, probe=cmd_probe,
               serve=cmd_serve)

if __name__ == "__main__":
    sys.exit(main())

"""Scenario files (`*.scn`): the steps `evse sim` plays against the agent (DESIGN.md, Interfaces).

    verb [args] [key=value ...]    # comment

The whole file is checked before anything runs, and every mistake in it is reported at once as
`file:line: message`, so a user fixes them in one go instead of one run per typo.

Verbs and condition subjects are tables (`VERBS`, `SUBJECTS`); the parser is one loop over them,
so adding a verb is adding a row, and `describe()` prints the same rows as help.
"""

import difflib
import operator
import re

from agent.faults import CODES as FAULT_CODES
from simulator import units

# A word starting with `#` starts a comment, as in a shell: a tag like `AB#12` stays a tag.
_COMMENT = "#"
# `key=value`, but not `soc==80%`, which is a condition written without spaces.
_OPTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(?!=)(.*)", re.S)
_LINE_END = re.compile(r"\r\n|\r|\n")

OPERATORS = {
    "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
EQUALITY = ("==", "!=")

# What `fault KIND` injects into the world -> the fault code (agent/faults.py) the agent
# raises for it, which is what `expect fault == CODE` compares: the two name spaces differ.
FAULT_CODE_OF_KIND = {
    "diode_short": "diode_fault", "cp_short": "state_e", "rcd_ac": "rcd_ac",
    "rcd_dc": "rcd_dc", "contactor_weld": "contactor_welded",
    "contactor_stuck_open": "contactor_not_closed", "meter_lost": "meter_lost",
    "over_temperature": "over_temperature", "pp_open": "pp_fault",
    "ventilation": "ventilation_unavailable", "overcurrent": "over_current",
}
FAULT_KINDS = tuple(FAULT_CODE_OF_KIND)
CP_STATES = ("A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2", "E", "F")
CP_LETTERS = ("A", "B", "C", "D")      # either suffix: the PWM may or may not be on
SESSION_STATES = ("idle", "authorizing", "ready", "charging", "suspended_ev", "suspended_evse",
                  "finishing", "faulted", "unavailable")
CONTACTOR_STATES = ("open", "closed")
# OCPP 1.6 ChargePointStatus plus 2.0.1 ConnectorStatus (Occupied): one name space for both.
OCPP_STATUSES = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV",
                 "Finishing", "Reserved", "Unavailable", "Faulted", "Occupied")
ID_TOKEN_MAX = 20      # OCPP 1.6 IdToken is CiString20Type


def _did_you_mean(word, known):
    # compared in lower case: to difflib `PLUG` shares nothing with `plug`
    spellings = {}
    for name in known:
        spellings.setdefault(name.lower(), name)
    close = difflib.get_close_matches(word.lower(), list(spellings), n=1)
    return " (did you mean %r?)" % spellings[close[0]] if close else ""


class Kind:
    """How one argument or option value is written (`name`, `hint`) and read (`parse`).

    `parse` takes the text and returns the typed value, or raises ValueError with a message
    that says what was expected. A `greedy` kind takes all remaining positional words at once.
    """

    def __init__(self, name, parse, hint, greedy=False):
        self.name = name
        self.parse = parse
        self.hint = hint
        self.greedy = greedy

    def __repr__(self):
        return "Kind(%r)" % self.name


def _labelled(label, kind, text):
    """kind.parse(text), with what the value was for in front of any error message."""
    try:
        return kind.parse(text)
    except ValueError as error:
        raise ValueError("%s: %s" % (label, error)) from None


def _choice(name, values, what=None):
    """A kind with a fixed set of spellings; `values` maps each spelling to its parsed value."""
    values = dict(values)
    listed = "one of " + " ".join(values)

    def parse(text):
        if text not in values:
            raise ValueError("expected %s, got %r%s"
                             % (what or listed, text, _did_you_mean(text, values)))
        return values[text]

    return Kind(name, parse, listed)


def _enum(name, names, what=None):
    return _choice(name, {n: n for n in names}, what)


def _integer(name, what, minimum):
    def parse(text):
        if re.fullmatch("[0-9]+", text) is None or int(text) < minimum:
            raise ValueError("expected %s, got %r" % (what, text))
        return int(text)

    return Kind(name, parse, what)


def _quantity(name, quantity, example, bounds=None):
    """A kind read by simulator.units; `bounds` is (lowest, highest, how to say them)."""

    def parse(text):
        value = quantity.parse(text)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise ValueError("expected %s from %s, got %r" % (quantity.what, bounds[2], text))
        return value

    return Kind(name, parse, "%s, e.g. %s" % (quantity.what, example))


def _pattern(name, what, regex, example):
    def parse(text):
        if re.fullmatch(regex, text) is None:
            raise ValueError("expected %s like %s, got %r" % (what, example, text))
        return text

    return Kind(name, parse, "%s, e.g. %s" % (what, example))


def _fault_code(text):
    if text == "none" or text in FAULT_CODES:
        return text
    if text in FAULT_CODE_OF_KIND:
        # `fault diode_short` then `expect fault == diode_short` would never hold
        raise ValueError("%r is a fault kind (what `fault` injects), not a fault code: the "
                         "agent reports it as %r" % (text, FAULT_CODE_OF_KIND[text]))
    raise ValueError("expected none or a fault code (%s), got %r%s" % (
        " ".join(FAULT_CODES), text, _did_you_mean(text, ("none",) + FAULT_CODES)))


def _tag(text):
    if len(text) > ID_TOKEN_MAX:
        raise ValueError("expected a tag of at most %d characters (OCPP idToken), got %r (%d)"
                         % (ID_TOKEN_MAX, text, len(text)))
    return text


YEAR_MS = 365 * 24 * 3600 * 1000
# A year of simulated time is more than any session or soak test needs; far beyond it a
# typo (`wait 30000h`) would keep the run busy for hours of wall time.
DURATION = _quantity("DURATION", units.DURATION, "500ms, 30s, 1h30m",
                     bounds=(0, YEAR_MS, "0ms to 8760h (a year of simulated time)"))
CURRENT = _quantity("CURRENT", units.CURRENT, "16A")
ENERGY = _quantity("ENERGY", units.ENERGY, "10kWh")
# the EV's state of charge is energy / capacity: an empty battery divides by zero
CAPACITY = _quantity("ENERGY", units.ENERGY, "60kWh",
                     bounds=(1, 10_000_000, "1Wh to 10000kWh"))
TEMPERATURE = _quantity("TEMP", units.TEMPERATURE, "66C",
                        bounds=(-2730, 10_000, "-273C to 1000C"))
RESISTANCE = _quantity("RESISTANCE", units.RESISTANCE, "220ohm")
PERCENT = _quantity("PERCENT", units.PERCENT, "80%", bounds=(0, 100, "0% to 100%"))
CONNECTOR = _integer("N", "a connector number (1, 2, ...)", 1)
CONNECTOR_OR_STATION = _integer("N", "a connector number, or 0 for the whole station", 0)
COUNT = _integer("COUNT", "a count (0, 1, 2, ...)", 0)
PHASES = _choice("1|3", {"1": 1, "3": 3}, "1 or 3")
BOOL = _choice("yes|no", {"yes": True, "no": False}, "yes or no")
TAG = Kind("TAG", _tag, "an RFID tag (idToken), at most %d characters" % ID_TOKEN_MAX)
FAULT_KIND = _enum("KIND", FAULT_KINDS, "a fault kind: " + " ".join(FAULT_KINDS))
# which end of the cable `unplug` pulls out (simulator.world.UNPLUG_ENDS)
CABLE_END = _enum("both|ev|socket", ("both", "ev", "socket"))
FAULT_CODE = Kind("CODE", _fault_code, "none or a fault code, e.g. rcd_dc")
ACTION = _pattern("ACTION", "an OCPP action", "[A-Z][A-Za-z0-9]*", "StartTransaction")


# ------------------------------------------------------------------------------- conditions

def _cp_state_matches(expected, actual):
    # A bare letter leaves the suffix open: `C` is "the EV asks for power", PWM on or not.
    if expected in CP_LETTERS:
        return isinstance(actual, str) and actual[:1] == expected
    return expected == actual


def _fault_matches(expected, actual):
    # The agent may hold several faults at once: accept its whole set as well as one code.
    if actual is None or isinstance(actual, (list, tuple, set, frozenset)):
        active = set(actual or ())
        return not active if expected == "none" else expected in active
    return expected == actual


class Subject:
    """What a condition can look at, and how its value is written and compared."""

    def __init__(self, name, value, help, ordered=False, action=False, matches=operator.eq,
                 ocpp=False):
        self.name = name
        self.value = value              # Kind of the VALUE word
        self.help = help
        self.operators = tuple(OPERATORS) if ordered else EQUALITY
        self.action = action            # takes an ACTION word after the name (`sent X`)
        self.matches = matches          # expected, actual -> bool, for == and !=
        self.ocpp = ocpp                # only a run with OCPP has it

    def usage(self):
        action = ("ACTION",) if self.action else ()
        return " ".join((self.name,) + action + ("OP", self.value.name))


SUBJECTS = {s.name: s for s in (
    Subject("cp_state", _enum("STATE", CP_STATES + CP_LETTERS),
            "IEC 61851 pilot state; a bare letter A B C D matches either suffix",
            matches=_cp_state_matches),
    Subject("session", _enum("STATE", SESSION_STATES), "session state"),
    Subject("contactor", _enum("STATE", CONTACTOR_STATES), "open or closed"),
    Subject("offered_current", CURRENT, "current offered by PWM", ordered=True),
    Subject("ev_current", CURRENT, "current the EV draws", ordered=True),
    Subject("energy", ENERGY, "energy delivered in the session", ordered=True),
    Subject("soc", PERCENT, "EV state of charge", ordered=True),
    Subject("fault", FAULT_CODE, "active fault, or none", matches=_fault_matches),
    Subject("ocpp_status", _enum("STATUS", OCPP_STATUSES),
            "connector status last reported over OCPP", ocpp=True),
    Subject("sent", COUNT, "CALLs of ACTION transmitted to the CSMS", ordered=True, action=True,
            ocpp=True),
    Subject("received", COUNT, "CALLs of ACTION received from the CSMS", ordered=True,
            action=True, ocpp=True),
)}


class Condition:
    """`SUBJECT [ACTION] OP VALUE`, e.g. `cp_state == C2`, `sent StartTransaction == 1`.

    `value` is typed (mA, Wh, %, a count, or the state name); `holds(actual)` compares the
    world's value of the subject with it. `text` is how the condition was written (`16A`
    reads better in a timeline than 16000).
    """

    def __init__(self, subject, action, op, value, text=None):
        self.subject = subject
        self.action = action
        self.op = op
        self.value = value
        self.text = text

    def holds(self, actual):
        if self.op in EQUALITY:
            return SUBJECTS[self.subject].matches(self.value, actual) == (self.op == "==")
        if actual is None:      # not known yet (no meter reading, no OCPP): cannot be ordered
            return False
        return OPERATORS[self.op](actual, self.value)

    def _key(self):
        return (self.subject, self.action, self.op, self.value)

    def __eq__(self, other):
        return isinstance(other, Condition) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Condition(%r, %r, %r, %r)" % self._key()

    def __str__(self):
        if self.text is not None:
            return self.text
        action = (self.action,) if self.action else ()
        return " ".join((self.subject,) + action + (self.op, str(self.value)))


def parse_condition(words):
    """The Condition written as `words` (already split); ValueError saying what is wrong."""
    words = list(words)
    for word in words:
        # `soc>=80%` arrives as one word; say so rather than "unknown subject 'soc>=80%'".
        if re.search("[=!<>]", word) and re.fullmatch("[=!<>]+", word) is None:
            raise ValueError("write spaces around the operator, e.g. cp_state == C2, got %r"
                             % word)
    if not words:
        raise ValueError("expected SUBJECT OP VALUE, e.g. cp_state == C2")
    name, rest = words[0], words[1:]
    subject = SUBJECTS.get(name)
    if subject is None:
        raise ValueError("unknown subject %r%s" % (name, _did_you_mean(name, SUBJECTS)))
    action = None
    if subject.action:
        if not rest:
            raise ValueError("expected %s, e.g. %s StartTransaction == 1"
                             % (subject.usage(), name))
        action = _labelled(name, ACTION, rest.pop(0))
    if len(rest) < 2:
        raise ValueError("expected %s" % subject.usage())
    if len(rest) > 2:
        raise ValueError("unexpected %r after the condition (expected %s)"
                         % (rest[2], subject.usage()))
    op, text = rest
    if op not in OPERATORS:
        raise ValueError("expected an operator (%s), got %r" % (" ".join(OPERATORS), op))
    if op not in subject.operators:
        raise ValueError("%s can only be compared with %s, got %r"
                         % (name, " or ".join(subject.operators), op))
    value = _labelled(name, subject.value, text)
    return Condition(name, action, op, value, text=" ".join(words))


CONDITION = Kind("SUBJECT OP VALUE", parse_condition, "a condition, e.g. cp_state == C2",
                 greedy=True)


# ------------------------------------------------------------------------------------ verbs

# One meaning per option name, whatever the verb.
OPTION_KINDS = {
    "connector": CONNECTOR,
    "soc": PERCENT,
    "capacity": CAPACITY,
    "max_current": CURRENT,
    "phases": PHASES,
    "pp": RESISTANCE,
    "sleepy": BOOL,
    "delay": DURATION,
    "ignore_pwm_off": BOOL,
    "timeout": DURATION,
    "end": CABLE_END,
}
# What an EV model is made of, at plug-in or changed later by `ev`.
EV_KEYS = ("max_current", "phases", "soc", "delay", "sleepy")


STATION = 0        # `connector=0`: the whole station


class Verb:
    """One step kind: its positional argument kinds, its options, and help for describe().

    `connector` is the connector the step acts on when it has no `connector=`: 1, STATION, or
    None (no connector: a swipe goes to whichever connector takes it). `ocpp`: only a run with
    OCPP can do it. `needs_ev`: the connector must have an EV plugged in."""

    def __init__(self, name, help, args=(), options=(), defaults=None, needs_one_of=(),
                 kinds=None, connector=1, ocpp=False, needs_ev=False):
        self.name = name
        self.help = help
        self.args = tuple(args)
        self.options = {key: (kinds or {}).get(key, OPTION_KINDS[key]) for key in options}
        self.defaults = dict(defaults or {})       # filled in when the option is not given
        self.needs_one_of = tuple(needs_one_of)    # at least one of these options is required
        self.connector = connector
        self.ocpp = ocpp
        self.needs_ev = needs_ev

    def usage(self):
        words = [self.name] + [kind.name for kind in self.args]
        words += ["[%s=%s]" % (key, kind.name) for key, kind in self.options.items()]
        return " ".join(words)


VERBS = {v.name: v for v in (
    Verb("plug", "plug an EV in", options=("connector",) + EV_KEYS + ("capacity", "pp")),
    Verb("unplug", "pull the cable out of the car and the socket (end=both, the default);"
         " end=ev: out of the car only, a socket's cable stays in with its PP coded;"
         " end=socket: out of the socket", options=("connector", "end")),
    Verb("ev_ready", "the EV closes S2 and asks for power", options=("connector",),
         needs_ev=True),
    Verb("ev_pause", "the EV opens S2 and stops asking for power", options=("connector",),
         needs_ev=True),
    Verb("swipe", "present an RFID tag", args=(TAG,), options=("connector",), connector=None),
    Verb("wait", "let time pass", args=(DURATION,), connector=None),
    Verb("wait_for", "wait until the condition holds; a timeout is a failed expectation",
         args=(CONDITION,), options=("timeout", "connector"), defaults={"timeout": 60_000}),
    Verb("expect", "the condition must hold now", args=(CONDITION,), options=("connector",)),
    Verb("fault", "inject a fault", args=(FAULT_KIND,), options=("connector",)),
    Verb("clear", "remove an injected fault", args=(FAULT_KIND,), options=("connector",)),
    Verb("limit", "set the station current limit (as smart charging would)", args=(CURRENT,),
         options=("connector",)),
    Verb("temperature", "set the EVSE temperature", args=(TEMPERATURE,)),
    Verb("available", "make a connector (or with 0, the station) available",
         options=("connector",), kinds={"connector": CONNECTOR_OR_STATION}, connector=STATION),
    Verb("unavailable", "make a connector (or with 0, the station) unavailable",
         options=("connector",), kinds={"connector": CONNECTOR_OR_STATION}, connector=STATION),
    Verb("ev", "change the plugged EV", options=EV_KEYS + ("ignore_pwm_off", "connector"),
         needs_one_of=EV_KEYS + ("ignore_pwm_off",), needs_ev=True),
    Verb("csms_offline", "the CSMS connection drops for DURATION", args=(DURATION,),
         connector=None, ocpp=True),
    Verb("csms_online", "the CSMS connection comes back now", connector=None, ocpp=True),
)}


# ------------------------------------------------------------------------------------ steps

class ScenarioError(Exception):
    """Every mistake found in a scenario, one `file:line: message` per line of str()."""

    def __init__(self, errors):
        self.errors = list(errors)      # (file, line, message)
        super().__init__("\n".join("%s:%d: %s" % error for error in self.errors))


class Step:
    """One parsed line: `verb`, typed `args` and `options`, and where it came from."""

    def __init__(self, file, line, verb, args, options, text):
        self.file = file
        self.line = line
        self.verb = verb
        self.args = tuple(args)
        self.options = dict(options)
        self.text = text

    def __repr__(self):
        return "Step(%s:%d %s args=%r options=%r)" % (
            self.file, self.line, self.verb, self.args, self.options)


def _read_step(words):
    """(verb, args, options, problems) for the words of one line; problems lists every mistake."""
    name, words = words[0], words[1:]
    verb = VERBS.get(name)
    if verb is None:
        return name, (), {}, ["unknown verb %r%s" % (name, _did_you_mean(name, VERBS))]
    problems = []
    option_word_wrong = False   # an option was meant but misspelt or left without a value
    options = {}
    positional = []
    for word in words:
        if word in verb.options:
            # Taken out before the arguments, or a greedy condition would swallow it.
            option_word_wrong = True
            problems.append("option %r needs a value: %s=%s"
                            % (word, word, verb.options[word].name))
            continue
        option = _OPTION.fullmatch(word)
        if option is None:
            positional.append(word)
            continue
        key, text = option.groups()
        kind = verb.options.get(key)
        if kind is None:
            option_word_wrong = True
            problems.append("unknown option %r for %s%s (options: %s)" % (
                key, name, _did_you_mean(key, verb.options), ", ".join(verb.options) or "none"))
        elif key in options:
            problems.append("option %r given twice" % key)
        else:
            try:
                options[key] = _labelled(key, kind, text)
            except ValueError as error:
                options[key] = None     # given, if wrongly: a second one is still a duplicate
                problems.append(str(error))
    # A mistyped option already has its error; "needs at least one" would only repeat it.
    if verb.needs_one_of and not any(key in options for key in verb.needs_one_of) \
            and not option_word_wrong:
        problems.append("%s needs at least one of %s" % (
            name, " ".join(key + "=" for key in verb.needs_one_of)))
    args = []
    for kind in verb.args:
        if kind.greedy:
            taken, positional = positional, []
        elif positional:
            taken = positional.pop(0)
        else:
            problems.append("missing %s (usage: %s)" % (kind.name, verb.usage()))
            continue
        try:
            args.append(kind.parse(taken))
        except ValueError as error:
            problems.append(str(error))
    if positional:
        problems.append("unexpected argument%s %s (usage: %s)" % (
            "s" if len(positional) > 1 else "", " ".join(map(repr, positional)), verb.usage()))
    for key, value in verb.defaults.items():
        options.setdefault(key, value)
    return name, args, options, problems


def parse_text(text, filename="<string>"):
    """The steps of a scenario given as text; ScenarioError listing every mistake in it."""
    steps = []
    errors = []
    # \r\n, \n or a lone \r (old Mac editors) end a line, and nothing else does: line numbers
    # must match what an editor shows, and splitlines() also breaks at form feeds and other
    # rare separators.
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        words = raw.split()
        for index, word in enumerate(words):
            if word.startswith(_COMMENT):
                del words[index:]
                break
        if not words:
            continue
        verb, args, options, problems = _read_step(words)
        if problems:
            errors.extend((filename, number, problem) for problem in problems)
        else:
            steps.append(Step(filename, number, verb, args, options, raw.strip()))
    if errors:
        raise ScenarioError(errors)
    return steps


def parse_file(path):
    """The steps of the scenario file at `path` (OSError if it cannot be read)."""
    with open(path, "rb") as stream:
        data = stream.read()
    filename = str(path)
    try:
        text = data.decode("utf-8-sig")     # a BOM from a Windows editor is not a verb
    except UnicodeDecodeError as error:
        line = len(_LINE_END.split(data[:error.start].decode("utf-8")))
        raise ScenarioError([(filename, line, "not UTF-8 text (byte 0x%02x)"
                              % data[error.start])]) from None
    return parse_text(text, filename)


# ------------------------------------------------------------------ checks against the board

class _Walk:
    """What `check` knows at each step: the board's connectors, whether the run has OCPP, and
    which connectors have an EV plugged in (connector id -> line of its `plug`)."""

    def __init__(self, board, ocpp):
        self.connectors = {c["id"]: c for c in board["connectors"]}
        self.ocpp = ocpp
        self.plugged = {}


def _tethered(connector):
    return connector["type"] == "cable"


def _rating_ma(connector):
    return min(connector["max_current"], connector.get("cable_max_current") or
               connector["max_current"])


def _plug_problem(step, connector, walk):
    line = walk.plugged.get(connector["id"])
    walk.plugged[connector["id"]] = step.line
    if line is not None:
        return "connector %d already has an EV plugged in (line %d): unplug it first" % (
            connector["id"], line)
    return None


def _unplug_problem(step, connector, walk):
    if step.options.get("end") == "socket" and _tethered(connector):
        return ("connector %d has a tethered cable: it has no socket end (end=socket is for "
                "a socket)" % connector["id"])
    walk.plugged.pop(connector["id"], None)      # any end: the car is no longer connected
    return None


def _fault_problem(step, connector, walk):
    from simulator.world import FAULT_INJECTIONS    # which part each kind acts on
    kind = step.args[0]
    part = FAULT_INJECTIONS[kind][0]
    if part == "ev" and connector["id"] not in walk.plugged:
        return "%s %s needs an EV plugged in at connector %d" % (
            step.verb, kind, connector["id"])
    if part == "pp" and _tethered(connector):
        return ("%s %s: connector %d has a tethered cable, which has no PP contact to open"
                % (step.verb, kind, connector["id"]))
    return None


def _limit_problem(step, connector, walk):
    if step.args[0] > _rating_ma(connector):
        return "limit %s is above connector %d's rating of %s (the board file)" % (
            _amps(step.args[0]), connector["id"], _amps(_rating_ma(connector)))
    return None


def _amps(ma):
    return "%gA" % (ma / 1000)


# verb -> what may be wrong with it on this board, beyond what every step is checked for
_BOARD_PROBLEMS = {
    "plug": _plug_problem,
    "unplug": _unplug_problem,
    "fault": _fault_problem,
    "clear": _fault_problem,
    "limit": _limit_problem,
}


def _needing_ocpp(step):
    """What in the step needs OCPP (the verb, or the subject it reads), or None."""
    if VERBS[step.verb].ocpp:
        return step.verb
    for arg in step.args:
        if isinstance(arg, Condition) and SUBJECTS[arg.subject].ocpp:
            return "subject %s" % arg.subject
    return None


def _step_problem(step, walk):
    verb = VERBS[step.verb]
    needing_ocpp = _needing_ocpp(step)
    if needing_ocpp and not walk.ocpp:
        return "%s needs OCPP, and this run has none (--no-ocpp)" % needing_ocpp
    connector_id = step.options.get("connector", verb.connector)
    if connector_id in (None, STATION):
        return None
    connector = walk.connectors.get(connector_id)
    if connector is None:
        return "the board has no connector %d (it has %s)" % (
            connector_id, ", ".join(str(c) for c in sorted(walk.connectors)))
    if verb.needs_ev and connector_id not in walk.plugged:
        return "%s needs an EV plugged in at connector %d" % (step.verb, connector_id)
    problem = _BOARD_PROBLEMS.get(step.verb)
    return problem(step, connector, walk) if problem else None


def check(steps, board, ocpp=True):
    """The mistakes in parsed steps that only the board and the run's options show, found
    before anything runs: a connector the board lacks, a socket's action on a tethered cable,
    a limit above the connector's rating, an OCPP step in a run without OCPP, an EV step while
    no EV is plugged in. Which connectors have an EV follows from the plug and unplug steps
    alone (nothing else in the simulated world connects or takes away a car), so that too is
    known from the text. Raises ScenarioError listing every one."""
    walk = _Walk(board, ocpp)
    errors = []
    for step in steps:
        problem = _step_problem(step, walk)
        if problem is not None:
            errors.append((step.file, step.line, problem))
    if errors:
        raise ScenarioError(errors)


def describe():
    """A short reference of the scenario language, for `evse sim --help-scenario`."""
    lines = ["Scenario files: one step per line, `verb [args] [key=value ...]`; `#` starts a"
             " comment.",
             "Durations like 500ms, 30s, 2h or 1h30m; currents like 16A; energies like 10kWh.",
             "", "Steps:"]
    lines += ["  %s  -- %s" % (verb.usage(), verb.help) for verb in VERBS.values()]
    lines += ["", "Conditions (wait_for, expect): SUBJECT OP VALUE, OP one of %s;"
              % " ".join(OPERATORS),
              "about connector 1 unless the step says connector=N.", "", "Subjects:"]
    for subject in SUBJECTS.values():
        ops = "" if len(subject.operators) == len(OPERATORS) else " (%s only)" % " ".join(
            subject.operators)
        lines.append("  %s  -- %s; %s is %s%s" % (subject.usage(), subject.help,
                                                  subject.value.name, subject.value.hint, ops))
    lines += ["", "Fault kinds (fault, clear), each with the code the agent reports for it:",
              "  " + " ".join("%s (%s)" % pair for pair in FAULT_CODE_OF_KIND.items()),
              "Fault codes (the fault subject): none " + " ".join(FAULT_CODES)]
    return "\n".join(lines)

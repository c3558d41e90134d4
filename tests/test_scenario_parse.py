"""simulator.scenario: the *.scn format of DESIGN.md, checked whole before anything runs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator import scenario
from simulator.scenario import (
    SUBJECTS, VERBS, Condition, ScenarioError, Step, describe, parse_condition, parse_file,
    parse_text,
)


def only_step(line):
    steps = parse_text(line)
    assert len(steps) == 1
    return steps[0]


def errors_of(text, filename="t.scn"):
    with pytest.raises(ScenarioError) as caught:
        parse_text(text, filename)
    return caught.value


def error_of(line):
    """The single `file:line: message` a one-line scenario gives."""
    error = errors_of(line)
    assert len(error.errors) == 1, error.errors
    return str(error)


# --------------------------------------------------------------------------- valid steps

@pytest.mark.parametrize("line, verb, args, options", [
    ("plug", "plug", (), {}),
    ("plug connector=2 soc=20% capacity=60kWh max_current=32A phases=3 pp=220ohm sleepy=yes"
     " delay=1.5s", "plug", (),
     {"connector": 2, "soc": 20, "capacity": 60_000, "max_current": 32_000, "phases": 3,
      "pp": 220, "sleepy": True, "delay": 1_500}),
    ("plug phases=1 sleepy=no pp=1.5kohm soc=100%", "plug", (),
     {"phases": 1, "sleepy": False, "pp": 1_500, "soc": 100}),
    ("unplug", "unplug", (), {}),
    ("unplug connector=2", "unplug", (), {"connector": 2}),
    ("unplug end=ev", "unplug", (), {"end": "ev"}),
    ("unplug end=socket connector=2", "unplug", (), {"end": "socket", "connector": 2}),
    ("ev_ready", "ev_ready", (), {}),
    ("ev_pause connector=1", "ev_pause", (), {"connector": 1}),
    ("swipe 04A2B3C4D5E6F7", "swipe", ("04A2B3C4D5E6F7",), {}),
    ("swipe AB#12 connector=2", "swipe", ("AB#12",), {"connector": 2}),
    ("swipe 12345678901234567890", "swipe", ("12345678901234567890",), {}),
    ("wait 30s", "wait", (30_000,), {}),
    ("wait 1h30m", "wait", (5_400_000,), {}),
    ("wait 0.1s", "wait", (100,), {}),
    ("fault rcd_dc", "fault", ("rcd_dc",), {}),
    ("clear contactor_weld connector=1", "clear", ("contactor_weld",), {"connector": 1}),
    ("limit 10A", "limit", (10_000,), {}),
    ("limit 0A connector=1", "limit", (0,), {"connector": 1}),
    ("temperature 66.5C", "temperature", (665,), {}),
    ("temperature -5C", "temperature", (-50,), {}),
    ("available", "available", (), {}),
    ("unavailable connector=0", "unavailable", (), {"connector": 0}),
    ("available connector=2", "available", (), {"connector": 2}),
    ("ev max_current=10A", "ev", (), {"max_current": 10_000}),
    ("ev soc=90% phases=1 delay=2s sleepy=no ignore_pwm_off=yes connector=2", "ev", (),
     {"soc": 90, "phases": 1, "delay": 2_000, "sleepy": False, "ignore_pwm_off": True,
      "connector": 2}),
    ("csms_offline 5min", "csms_offline", (300_000,), {}),
    ("csms_online", "csms_online", (), {}),
])
def test_valid_steps_parse_to_typed_values(line, verb, args, options):
    step = only_step(line)
    assert (step.verb, step.args, step.options) == (verb, args, options)
    assert step.text == line


@pytest.mark.parametrize("line, condition", [
    ("cp_state == C2", Condition("cp_state", None, "==", "C2")),
    ("cp_state != A", Condition("cp_state", None, "!=", "A")),
    ("cp_state == E", Condition("cp_state", None, "==", "E")),
    ("session == suspended_evse", Condition("session", None, "==", "suspended_evse")),
    ("contactor == closed", Condition("contactor", None, "==", "closed")),
    ("offered_current <= 16A", Condition("offered_current", None, "<=", 16_000)),
    ("ev_current > 500mA", Condition("ev_current", None, ">", 500)),
    ("energy >= 2.5kWh", Condition("energy", None, ">=", 2_500)),
    ("energy < 1500Wh", Condition("energy", None, "<", 1_500)),
    ("soc >= 80%", Condition("soc", None, ">=", 80)),
    ("fault == none", Condition("fault", None, "==", "none")),
    ("fault == contactor_welded", Condition("fault", None, "==", "contactor_welded")),
    ("ocpp_status == SuspendedEVSE", Condition("ocpp_status", None, "==", "SuspendedEVSE")),
    ("sent StartTransaction == 1", Condition("sent", "StartTransaction", "==", 1)),
    ("received RemoteStopTransaction >= 0",
     Condition("received", "RemoteStopTransaction", ">=", 0)),
])
@pytest.mark.parametrize("verb", ["expect", "wait_for"])
def test_conditions_are_the_single_argument(verb, line, condition):
    step = only_step("%s %s" % (verb, line))
    assert step.args == (condition,)
    assert type(step.args[0].value) is type(condition.value)
    assert str(step.args[0]) == line        # as written, for timelines


def test_wait_for_timeout_defaults_to_60s_and_can_be_set():
    assert only_step("wait_for session == charging").options == {"timeout": 60_000}
    assert only_step("wait_for session == charging timeout=5s connector=2").options == {
        "timeout": 5_000, "connector": 2}


def test_expect_has_no_default_options():
    assert only_step("expect contactor == open").options == {}


def test_comments_blank_lines_and_line_numbers():
    text = ("# a whole-line comment\n"
            "\n"
            "   \t \n"
            "plug soc=20%   # trailing comment\n"
            "    # indented comment\n"
            "swipe AB#12 #comment right after\n"
            "wait 2s#not a comment: part of the duration word\n")
    with pytest.raises(ScenarioError) as caught:
        parse_text(text, "c.scn")
    assert caught.value.errors == [
        ("c.scn", 7, "expected a duration like 500ms, 30s or 2h, got '2s#not'"),
        ("c.scn", 7, "unexpected arguments 'a' 'comment:' 'part' 'of' 'the' 'duration' 'word'"
                     " (usage: wait DURATION)"),
    ]
    steps = parse_text(text.rsplit("\n", 2)[0])
    assert [(s.line, s.verb, s.args, s.options) for s in steps] == [
        (4, "plug", (), {"soc": 20}),
        (6, "swipe", ("AB#12",), {}),
    ]
    assert steps[0].text == "plug soc=20%   # trailing comment"


def test_crlf_line_endings_and_form_feed_keep_editor_line_numbers():
    steps = parse_text("plug\r\n\x0c\r\nwait 1s\r\n")
    assert [(s.line, s.verb) for s in steps] == [(1, "plug"), (3, "wait")]


def test_empty_scenario_has_no_steps():
    assert parse_text("") == []
    assert parse_text("# nothing\n\n") == []


def test_step_attributes_and_repr():
    step = parse_text("\n  expect energy >= 1kWh connector=2  \n", "run.scn")[0]
    assert (step.file, step.line, step.verb) == ("run.scn", 2, "expect")
    assert step.text == "expect energy >= 1kWh connector=2"
    assert repr(step) == ("Step(run.scn:2 expect args=(Condition('energy', None, '>=', 1000),)"
                          " options={'connector': 2})")
    assert isinstance(step, Step)


def test_parse_file_names_the_file(tmp_path):
    path = tmp_path / "session.scn"
    path.write_text("\ufeffplug\nwait 1s\nbogus\n", encoding="utf-8")   # BOM from an editor
    with pytest.raises(ScenarioError) as caught:
        parse_file(path)
    assert str(caught.value) == "%s:3: unknown verb 'bogus'" % path
    path.write_text("plug\nwait 1s\n", encoding="utf-8")
    steps = parse_file(str(path))
    assert [(s.file, s.line, s.verb) for s in steps] == [
        (str(path), 1, "plug"), (str(path), 2, "wait")]


def test_parse_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.scn"
    path.write_bytes(b"plug\nswipe caf\xe9\n")
    with pytest.raises(ScenarioError) as caught:
        parse_file(path)
    assert caught.value.errors == [(str(path), 2, "not UTF-8 text (byte 0xe9)")]


def test_parse_file_missing_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        parse_file(tmp_path / "absent.scn")


# ------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("line, message", [
    # unknown verb, with the closest known one
    ("plgu", "unknown verb 'plgu' (did you mean 'plug'?)"),
    ("wait_fr cp_state == C", "unknown verb 'wait_fr' (did you mean 'wait_for'?)"),
    ("xyzzy 5", "unknown verb 'xyzzy'"),
    ("Plug", "unknown verb 'Plug' (did you mean 'plug'?)"),
    # missing / extra positional arguments
    ("wait", "missing DURATION (usage: wait DURATION)"),
    ("swipe", "missing TAG (usage: swipe TAG [connector=N])"),
    ("fault", "missing KIND (usage: fault KIND [connector=N])"),
    ("temperature", "missing TEMP (usage: temperature TEMP)"),
    ("wait 5s 6s", "unexpected argument '6s' (usage: wait DURATION)"),
    ("unplug now please", "unexpected arguments 'now' 'please' (usage: unplug [connector=N]"
                          " [end=both|ev|socket])"),
    ("unplug end=car", "end: expected one of both ev socket, got 'car'"),
    ("csms_online 5s", "unexpected argument '5s' (usage: csms_online)"),
    # bad values, passing through what simulator.units says
    ("wait 30x", "expected a duration like 500ms, 30s or 2h, got '30x'"),
    ("wait 30", "expected a duration like 500ms, 30s or 2h, got '30' (the unit is required)"),
    ("wait -5s", "a duration cannot be negative, got '-5s'"),
    ("limit 10", "expected a current like 16A, 6.5A or 500mA, got '10' (the unit is required)"),
    ("temperature 66.55C", "'66.55C' is finer than the 0.1 °C resolution of a temperature"),
    ("swipe 123456789012345678901",
     "expected a tag of at most 20 characters (OCPP idToken), got '123456789012345678901' (21)"),
    ("fault diode", "expected a fault kind: diode_short cp_short rcd_ac rcd_dc contactor_weld"
                    " contactor_stuck_open meter_lost over_temperature pp_open ventilation"
                    " overcurrent, got 'diode' (did you mean 'diode_short'?)"),
    ("plug soc=120%", "soc: expected a percentage from 0% to 100%, got '120%'"),
    ("plug soc=80", "soc: expected a percentage like 80%, got '80' (the unit is required)"),
    ("plug phases=2", "phases: expected 1 or 3, got '2'"),
    ("plug sleepy=true", "sleepy: expected yes or no, got 'true'"),
    ("plug connector=0", "connector: expected a connector number (1, 2, ...), got '0'"),
    ("plug connector=one", "connector: expected a connector number (1, 2, ...), got 'one'"),
    ("plug capacity=60kW", "capacity: expected an energy like 1500Wh or 10kWh, got '60kW'"),
    ("plug pp=", "pp: expected a resistance like 220ohm, 220R or 1.5kohm, got ''"),
    ("unavailable connector=-1",
     "connector: expected a connector number, or 0 for the whole station, got '-1'"),
    ("wait_for contactor == open timeout=soon",
     "timeout: expected a duration like 500ms, 30s or 2h, got 'soon'"),
    # unknown option key for the verb
    ("plug colour=red", "unknown option 'colour' for plug (options: connector, max_current,"
                        " phases, soc, delay, sleepy, capacity, pp)"),
    ("ev pp=220ohm", "unknown option 'pp' for ev (options: max_current, phases, soc, delay,"
                     " sleepy, ignore_pwm_off, connector)"),
    ("wait 1s connector=1", "unknown option 'connector' for wait (options: none)"),
    ("wait_for session == idle timout=5s",
     "unknown option 'timout' for wait_for (did you mean 'timeout'?)"
     " (options: timeout, connector)"),
    # an option without `=`
    ("plug sleepy", "option 'sleepy' needs a value: sleepy=yes|no"),
    ("swipe TAG1 connector", "option 'connector' needs a value: connector=N"),
    ("ev sleepy", "option 'sleepy' needs a value: sleepy=yes|no"),
    # duplicate option
    ("plug soc=20% soc=30%", "option 'soc' given twice"),
    # ev needs something to change
    ("ev connector=1", "ev needs at least one of max_current= phases= soc= delay= sleepy="
                       " ignore_pwm_off="),
    ("ev", "ev needs at least one of max_current= phases= soc= delay= sleepy= ignore_pwm_off="),
    # conditions: shape, operator, subject, value
    ("expect", "expected SUBJECT OP VALUE, e.g. cp_state == C2"),
    ("expect cp_state", "expected cp_state OP STATE"),
    ("expect cp_state ==", "expected cp_state OP STATE"),
    ("expect cp_state == C2 C1",
     "unexpected 'C1' after the condition (expected cp_state OP STATE)"),
    ("expect cp_state === C2", "expected an operator (== != < <= > >=), got '==='"),
    ("expect energy => 1kWh", "expected an operator (== != < <= > >=), got '=>'"),
    ("expect energy is 1kWh", "expected an operator (== != < <= > >=), got 'is'"),
    ("expect cp_state < C", "cp_state can only be compared with == or !=, got '<'"),
    ("expect session >= charging", "session can only be compared with == or !=, got '>='"),
    ("expect fault > none", "fault can only be compared with == or !=, got '>'"),
    ("expect ocpp_status <= Charging", "ocpp_status can only be compared with == or !=, got '<='"),
    ("expect contactor != ajar", "contactor: expected one of open closed, got 'ajar'"),
    ("expect cpstate == C", "unknown subject 'cpstate' (did you mean 'cp_state'?)"),
    ("expect voltage == 230V", "unknown subject 'voltage'"),
    ("expect cp_state==C2", "write spaces around the operator, e.g. cp_state == C2,"
                            " got 'cp_state==C2'"),
    ("expect soc>=80%", "write spaces around the operator, e.g. cp_state == C2, got 'soc>=80%'"),
    ("expect cp_state == C3", "cp_state: expected one of A1 A2 B1 B2 C1 C2 D1 D2 E F A B C D,"
                              " got 'C3' (did you mean 'C'?)"),
    ("expect session == charing", "session: expected one of idle authorizing ready charging"
                                  " suspended_ev suspended_evse finishing faulted unavailable,"
                                  " got 'charing' (did you mean 'charging'?)"),
    ("expect ocpp_status == charging", "ocpp_status: expected one of Available Preparing"
                                       " Charging SuspendedEVSE SuspendedEV Finishing Reserved"
                                       " Unavailable Faulted Occupied, got 'charging'"
                                       " (did you mean 'Charging'?)"),
    ("expect offered_current >= 16", "offered_current: expected a current like 16A, 6.5A or"
                                     " 500mA, got '16' (the unit is required)"),
    ("expect energy > 1kW", "energy: expected an energy like 1500Wh or 10kWh, got '1kW'"),
    ("expect soc < 101%", "soc: expected a percentage from 0% to 100%, got '101%'"),
    ("expect fault == RCD_DC", "fault: expected none or a fault code (diode_fault state_e"
                               " pilot_fault rcd_ac rcd_dc rcd_selftest_failed contactor_welded"
                               " contactor_not_closed over_current meter_lost over_temperature"
                               " pp_fault ventilation_unavailable lock_failure), got 'RCD_DC'"
                               " (did you mean 'rcd_dc'?)"),
    ("expect sent", "expected sent ACTION OP COUNT, e.g. sent StartTransaction == 1"),
    ("expect sent StartTransaction", "expected sent ACTION OP COUNT"),
    ("expect sent start_transaction == 1",
     "sent: expected an OCPP action like StartTransaction, got 'start_transaction'"),
    ("expect received Reset == -1", "received: expected a count (0, 1, 2, ...), got '-1'"),
    ("expect sent Heartbeat > 1.5", "sent: expected a count (0, 1, 2, ...), got '1.5'"),
    ("wait_for cp_state", "expected cp_state OP STATE"),
])
def test_each_mistake_is_named_with_file_and_line(line, message):
    assert error_of("# line 1\n" + line) == "t.scn:2: " + message


def test_every_mistake_in_the_file_is_reported_at_once():
    text = ("plug soc=20%\n"
            "plgu\n"
            "wait 5s\n"
            "plug soc=120% phases=2 color=red\n"
            "expect cpstate == C\n"
            "wait_for energy >= 1kWh timeout 5s\n")
    error = errors_of(text, "many.scn")
    assert error.errors == [
        ("many.scn", 2, "unknown verb 'plgu' (did you mean 'plug'?)"),
        ("many.scn", 4, "soc: expected a percentage from 0% to 100%, got '120%'"),
        ("many.scn", 4, "phases: expected 1 or 3, got '2'"),
        ("many.scn", 4, "unknown option 'color' for plug (options: connector, max_current,"
                        " phases, soc, delay, sleepy, capacity, pp)"),
        ("many.scn", 5, "unknown subject 'cpstate' (did you mean 'cp_state'?)"),
        ("many.scn", 6, "option 'timeout' needs a value: timeout=DURATION"),
        ("many.scn", 6, "unexpected '5s' after the condition (expected energy OP ENERGY)"),
    ]
    assert str(error).splitlines() == ["%s:%d: %s" % e for e in error.errors]
    assert str(error).splitlines()[0] == "many.scn:2: unknown verb 'plgu' (did you mean 'plug'?)"


def test_default_filename_is_string():
    assert str(errors_of("bogus", filename="<string>")) == "<string>:1: unknown verb 'bogus'"
    with pytest.raises(ScenarioError, match=r"^<string>:1: unknown verb 'bogus'$"):
        parse_text("bogus")


# ---------------------------------------------------------------------------- conditions

@pytest.mark.parametrize("condition, actual, holds", [
    ("cp_state == C", "C1", True),
    ("cp_state == C", "C2", True),
    ("cp_state == C", "B2", False),
    ("cp_state != C", "C2", False),
    ("cp_state != C", "D2", True),
    ("cp_state == C2", "C2", True),
    ("cp_state == C2", "C1", False),
    ("cp_state == E", "E", True),
    ("cp_state == E", "F", False),
    ("cp_state == F", "F", True),
    ("cp_state == A", None, False),
    ("session == charging", "charging", True),
    ("session != charging", "suspended_ev", True),
    ("contactor == closed", "open", False),
    ("offered_current == 16A", 16_000, True),
    ("offered_current < 16A", 15_999, True),
    ("offered_current < 16A", 16_000, False),
    ("offered_current <= 16A", 16_000, True),
    ("ev_current > 6A", 6_001, True),
    ("ev_current >= 6A", 5_999, False),
    ("energy != 1kWh", 999, True),
    ("energy >= 1kWh", None, False),     # no meter reading yet
    ("soc >= 80%", 80, True),
    ("sent StartTransaction == 1", 1, True),
    ("sent StartTransaction == 1", 2, False),
    ("received Reset > 0", 0, False),
    ("fault == none", None, True),
    ("fault == none", [], True),
    ("fault == none", ["rcd_dc"], False),
    ("fault == rcd_dc", ["diode_fault", "rcd_dc"], True),
    ("fault != rcd_dc", {"diode_fault"}, True),
    ("fault == rcd_dc", "rcd_dc", True),
    ("fault == none", "none", True),
    ("ocpp_status == Charging", "Charging", True),
    ("ocpp_status == Charging", "SuspendedEV", False),
])
def test_condition_holds(condition, actual, holds):
    assert parse_condition(condition.split()).holds(actual) is holds


def test_condition_equality_ignores_how_it_was_written():
    assert parse_condition(["energy", ">=", "1kWh"]) == parse_condition(["energy", ">=", "1000Wh"])
    assert parse_condition(["energy", ">=", "1kWh"]) != Condition("energy", None, ">", 1000)
    assert str(Condition("offered_current", None, "<=", 16_000)) == "offered_current <= 16000"
    assert str(Condition("sent", "Heartbeat", ">", 0)) == "sent Heartbeat > 0"
    assert len({Condition("soc", None, "==", 5), Condition("soc", None, "==", 5)}) == 1


def test_enum_subjects_allow_only_equality():
    for name, subject in SUBJECTS.items():
        expected = ("==", "!=") if name in (
            "cp_state", "session", "contactor", "fault", "ocpp_status") else tuple(
            scenario.OPERATORS)
        assert subject.operators == expected, name


# ------------------------------------------------------------------------- tables & help

def test_tables_cover_the_design():
    assert set(VERBS) == {
        "plug", "unplug", "ev_ready", "ev_pause", "swipe", "wait", "wait_for", "expect",
        "fault", "clear", "limit", "temperature", "available", "unavailable", "ev",
        "csms_offline", "csms_online"}
    assert set(SUBJECTS) == {
        "cp_state", "session", "contactor", "offered_current", "ev_current", "energy", "soc",
        "fault", "ocpp_status", "sent", "received"}


def test_describe_lists_every_verb_and_subject():
    lines = describe().splitlines()
    for verb in VERBS.values():
        assert sum(line.startswith("  " + verb.usage() + "  -- ") for line in lines) == 1
    for subject in SUBJECTS.values():
        assert sum(line.startswith("  " + subject.usage() + "  -- ") for line in lines) == 1
    assert "  wait_for SUBJECT OP VALUE [timeout=DURATION] [connector=N]  -- wait until the" \
           " condition holds; a timeout is a failed expectation" in lines
    assert "  sent ACTION OP COUNT  -- CALLs of ACTION transmitted to the CSMS; COUNT is a" \
           " count (0, 1, 2, ...)" in lines


# ---------------------------------------------------------------------------- properties

WORDS = (list(VERBS) + list(SUBJECTS) + list(scenario.OPERATORS) + list(scenario.OPTION_KINDS)
         + ["#", "=", "connector=", "soc=", "timeout=5s", "16A", "30s", "80%", "-5C", "C2",
            "none", "yes", "StartTransaction", "\u0663", "\x00", "\ufeff", "\r", "1h30", "==="])


@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=8)
       .map(" ".join), st.text(max_size=30))
def test_junk_never_raises_anything_but_scenario_error(line, noise):
    for text in (line, noise, line + "\n" + noise):
        try:
            steps = parse_text(text, "junk.scn")
        except ScenarioError as error:
            assert error.errors
            for file, number, message in error.errors:
                lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
                assert file == "junk.scn" and 1 <= number <= lines and message
        else:
            assert all(step.verb in VERBS for step in steps)


EXAMPLES = {   # one valid spelling per kind, with its parsed value
    "DURATION": ("1.5s", 1_500), "CURRENT": ("6.5A", 6_500), "ENERGY": ("2.5kWh", 2_500),
    "TEMP": ("-5C", -50), "RESISTANCE": ("1.5kohm", 1_500), "PERCENT": ("80%", 80),
    "N": ("2", 2), "1|3": ("3", 3), "yes|no": ("no", False), "TAG": ("ABC123", "ABC123"),
    "KIND": ("meter_lost", "meter_lost"), "both|ev|socket": ("ev", "ev"),
    "SUBJECT OP VALUE": ("sent Heartbeat >= 2", Condition("sent", "Heartbeat", ">=", 2)),
}


@given(st.sampled_from(sorted(VERBS)), st.data())
def test_any_row_of_the_verb_table_reads_back(name, data):
    verb = VERBS[name]
    keys = data.draw(st.lists(st.sampled_from(sorted(verb.options)), unique=True)
                     if verb.options else st.just([]))
    if verb.needs_one_of and not set(keys) & set(verb.needs_one_of):
        keys.append(verb.needs_one_of[0])
    args = [EXAMPLES[kind.name] for kind in verb.args]
    options = {key: EXAMPLES[verb.options[key].name] for key in keys}
    line = " ".join([name] + [text for text, _ in args]
                    + ["%s=%s" % (key, text) for key, (text, _) in options.items()])
    step = only_step(line)
    assert step.args == tuple(value for _, value in args)
    written = {key: value for key, (_, value) in options.items()}
    assert step.options == dict(verb.defaults, **written)


# ------------------------------------------------------------------- values with limits

@pytest.mark.parametrize("line, message", [
    ("expect fault != rcd_dcc", "fault: expected none or a fault code"),
    ("expect fault != rcd_dcc", "got 'rcd_dcc' (did you mean 'rcd_dc'?)"),
    ("wait_for fault == bogus timeout=1s", "got 'bogus'"),
    ("PLUG", "unknown verb 'PLUG' (did you mean 'plug'?)"),
    ("plug capacity=0kWh", "capacity: expected an energy from 1Wh to 10000kWh, got '0kWh'"),
    ("wait 8761h", "expected a duration from 0ms to 8760h (a year of simulated time),"
                   " got '8761h'"),
    ("wait_for session == idle timeout=9000h", "timeout: expected a duration from 0ms to 8760h"),
    ("csms_offline 400000h", "expected a duration from 0ms to 8760h"),
    ("temperature -274C", "expected a temperature from -273C to 1000C, got '-274C'"),
    ("temperature 1000.1C", "expected a temperature from -273C to 1000C, got '1000.1C'"),
])
def test_values_outside_what_makes_sense_are_refused(line, message):
    assert message in error_of(line)


@pytest.mark.parametrize("kind", [k for k in scenario.FAULT_KINDS
                                  if scenario.FAULT_CODE_OF_KIND[k] != k])
@pytest.mark.parametrize("verb", ["expect", "wait_for"])
def test_an_injection_kind_where_a_code_is_expected_names_its_code(verb, kind):
    """`fault diode_short` then `expect fault != diode_short` held whatever happened."""
    assert error_of("%s fault != %s" % (verb, kind)) == (
        "t.scn:1: fault: %r is a fault kind (what `fault` injects), not a fault code: the "
        "agent reports it as %r" % (kind, scenario.FAULT_CODE_OF_KIND[kind]))


def test_every_fault_code_and_none_are_accepted():
    from agent.faults import CODES
    for code in CODES + ("none",):
        assert only_step("expect fault == %s" % code).args[0].value == code
    assert set(scenario.FAULT_CODE_OF_KIND.values()) <= set(CODES)


def test_largest_values_within_the_limits_parse():
    assert only_step("wait 8760h").args == (365 * 24 * 3600 * 1000,)
    assert only_step("temperature -273C").args == (-2730,)
    assert only_step("plug capacity=1Wh").options == {"capacity": 1}


def test_cr_only_line_endings_are_lines():
    steps = parse_text("plug\rwait 1s\r\rexpect contactor == open\r")
    assert [(s.line, s.verb) for s in steps] == [(1, "plug"), (2, "wait"), (4, "expect")]
    assert errors_of("plug\r\rbogus\r").errors == [("t.scn", 3, "unknown verb 'bogus'")]


# ------------------------------------------------------------- checks against the board

SOCKET = {"type": "socket", "max_current": 32_000, "cable_max_current": None}
TETHERED = {"type": "cable", "max_current": 32_000, "cable_max_current": 20_000}


def board_of(*connectors):
    return {"connectors": [dict(c, id=n) for n, c in enumerate(connectors, start=1)]}


def check_errors(text, board=None, ocpp=True):
    """The (line, message) pairs scenario.check finds in `text`, [] if none."""
    try:
        scenario.check(parse_text(text, "t.scn"), board or board_of(SOCKET), ocpp=ocpp)
    except ScenarioError as error:
        assert str(error).splitlines() == ["%s:%d: %s" % e for e in error.errors]
        return [(line, message) for _, line, message in error.errors]
    return []


@pytest.mark.parametrize("line", [
    "plug connector=2", "unplug connector=2", "ev_ready connector=2", "ev_pause connector=3",
    "swipe 04A1B2C3 connector=2", "expect session == idle connector=2",
    "wait_for cp_state == A timeout=1s connector=2", "fault rcd_dc connector=2",
    "clear rcd_dc connector=2", "limit 10A connector=2", "available connector=2",
    "unavailable connector=2", "ev soc=50% connector=2",
])
def test_a_connector_the_board_lacks_is_an_error(line):
    assert check_errors(line) == [(1, "the board has no connector %s (it has 1)"
                                   % line.rsplit("=", 1)[1])]


def test_the_station_and_any_connector_are_not_connectors_to_check():
    assert check_errors("available connector=0\nunavailable\nswipe 04A1B2C3\n"
                        "expect session == idle\nwait 1s\ntemperature 30C") == []
    assert check_errors("plug connector=2\nexpect session == idle connector=2",
                        board_of(SOCKET, TETHERED)) == []


def test_a_socket_end_or_pp_on_a_tethered_cable_is_an_error():
    text = "plug\nunplug end=socket\nfault pp_open\nclear pp_open\nunplug end=ev\n"
    assert check_errors(text) == []
    assert check_errors(text, board_of(TETHERED)) == [
        (2, "connector 1 has a tethered cable: it has no socket end (end=socket is for a"
            " socket)"),
        (3, "fault pp_open: connector 1 has a tethered cable, which has no PP contact to open"),
        (4, "clear pp_open: connector 1 has a tethered cable, which has no PP contact to open"),
    ]


def test_a_limit_above_the_connector_rating_is_an_error():
    assert check_errors("limit 32A\nlimit 0A") == []
    assert check_errors("limit 32.5A") == [
        (1, "limit 32.5A is above connector 1's rating of 32A (the board file)")]
    # a tethered cable's own rating is the lower one
    assert check_errors("limit 21A", board_of(TETHERED)) == [
        (1, "limit 21A is above connector 1's rating of 20A (the board file)")]


def test_ocpp_steps_without_ocpp_are_errors():
    text = ("csms_offline 5s\ncsms_online\nexpect sent StartTransaction == 1\n"
            "wait_for received Reset == 0 timeout=1s\nexpect ocpp_status == Available\n"
            "expect session == idle\n")
    assert check_errors(text) == []
    assert check_errors(text, ocpp=False) == [
        (1, "csms_offline needs OCPP, and this run has none (--no-ocpp)"),
        (2, "csms_online needs OCPP, and this run has none (--no-ocpp)"),
        (3, "subject sent needs OCPP, and this run has none (--no-ocpp)"),
        (4, "subject received needs OCPP, and this run has none (--no-ocpp)"),
        (5, "subject ocpp_status needs OCPP, and this run has none (--no-ocpp)"),
    ]


def test_ev_steps_follow_the_plug_and_unplug_order():
    """Only plug and unplug connect or take away a car, so this is known from the text."""
    assert check_errors(
        "plug\nev_ready\nev_pause\nev soc=50%\nfault diode_short\nclear diode_short\n"
        "fault ventilation\nunplug end=ev\nplug\nunplug end=socket\nplug\nunplug\nplug\n") == []
    assert check_errors(
        "ev_ready\nplug\nplug # again\nunplug\nev_pause\nev soc=10%\nfault overcurrent\n"
        "clear diode_short\nfault rcd_dc\nunplug\n") == [
        (1, "ev_ready needs an EV plugged in at connector 1"),
        (3, "connector 1 already has an EV plugged in (line 2): unplug it first"),
        (5, "ev_pause needs an EV plugged in at connector 1"),
        (6, "ev needs an EV plugged in at connector 1"),
        (7, "fault overcurrent needs an EV plugged in at connector 1"),
        (8, "clear diode_short needs an EV plugged in at connector 1"),
    ]
    # each connector has its own car
    assert check_errors("plug\nplug connector=2\nev_ready connector=2\nunplug\n"
                        "ev_ready connector=2\nev_ready", board_of(SOCKET, SOCKET)) == [
        (6, "ev_ready needs an EV plugged in at connector 1")]


def test_bundled_scenarios_pass_the_check_on_the_simulated_board():
    import glob
    import os
    from tools import boardfile
    board = boardfile.load(boardfile.find("sim"))
    paths = glob.glob(os.path.join(os.path.dirname(scenario.__file__), "scenarios", "*.scn"))
    assert paths
    for path in paths:
        scenario.check(parse_file(path), board)

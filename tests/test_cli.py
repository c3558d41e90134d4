"""The `evse` command, run as a real subprocess (`python -m tools.cli` from the repo root)."""
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

from agent.evse import CP_MACHINE, SESSION_MACHINE
from simulator.scenario import FAULT_KINDS, VERBS, parse_file
from simulator.timeline import HEADER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = sorted(glob.glob(os.path.join(ROOT, "simulator", "scenarios", "*.scn")))
SUMMARY = re.compile(r"^(\d+) expectations: (\d+) held, (\d+) failed$", re.M)
STAMP = r"\d\d:\d\d:\d\d\.\d\d\d"


def evse(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def checked_steps(path):
    """How many expectations (expect + wait_for) a scenario file holds."""
    return sum(1 for step in parse_file(path) if step.verb in ("expect", "wait_for"))


def where(path, line):
    """`file:line` as the timeline writes it: the path as given, or only its file name."""
    return r"(?:%s|%s):%d" % (re.escape(path), re.escape(os.path.basename(path)), line)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------ scenarios

def test_bundled_scenarios_exist():
    names = {os.path.basename(p) for p in SCENARIOS}
    assert "normal-session.scn" in names
    assert len(SCENARIOS) >= 10


@pytest.mark.parametrize("path", SCENARIOS, ids=os.path.basename)
def test_bundled_scenario_passes(path):
    result = evse("sim", "--scenario", path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    n = checked_steps(path)
    assert SUMMARY.findall(result.stdout) == [(str(n), str(n), "0")]
    assert "FAIL" not in result.stdout
    assert re.fullmatch(r"simulated %s in \d+\.\d\d s of wall time" % STAMP, lines[-1])


def test_scenario_by_bundled_name():
    result = evse("sim", "--scenario", "unplug-while-charging")
    assert result.returncode == 0, result.stderr
    assert re.search(r"  ok   \S*unplug-while-charging\.scn:8 wait_for contactor == open",
                     result.stdout)


def test_demo():
    result = evse("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    n = checked_steps(os.path.join(ROOT, "simulator", "scenarios", "normal-session.scn"))
    assert n == 18
    assert "%d expectations: %d held, 0 failed" % (n, n) in lines
    assert SUMMARY.findall(result.stdout) == [("18", "18", "0")]
    # the timeline tells the story of one session
    for text in ("> plug", "> swipe 04A1B2C3", "close contactor", "open contactor",
                 "session charging", "session idle"):
        assert text in result.stdout, text
    # virtual time: an hour of charging, stamps from 00:00:00.000
    assert re.search(r"^01:00:0\d\.\d\d\d  ", result.stdout, re.M)
    assert lines[1].startswith("00:00:00.000  ")


def test_sim_json():
    path = os.path.join(ROOT, "simulator", "scenarios", "unplug-while-charging.scn")
    result = evse("sim", "--json", "--scenario", path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)            # the whole stdout is one JSON object
    assert isinstance(report, dict)
    assert {"ok", "expectations", "held", "failed", "timeline"} <= set(report)
    n = checked_steps(path)
    assert (report["ok"], report["expectations"], report["held"], report["failed"]) == \
        (True, n, n, 0)
    assert HEADER not in result.stdout
    rows = report["timeline"]
    steps = [r for r in rows if "step" in r]
    expects = [r for r in rows if "expect" in r]
    actions = [s.line for s in parse_file(path) if s.verb not in ("expect", "wait_for")]
    assert actions == [r["line"] for r in steps if r["line"] in actions]
    assert len(expects) == n and all(r["held"] for r in expects)
    states = [r for r in rows if "events" in r]
    assert any(r["contactor"] == "closed" and r["session"] == "charging" for r in states)
    times = [r["time_ms"] for r in rows]
    assert times == sorted(times)


def test_failing_expectation_exits_1_and_names_file_line(tmp_path):
    path = write(tmp_path, "fail.scn", "plug\nswipe 04A1B2C3\nwait 100ms\n# comment\n"
                 "expect contactor == closed\nexpect session == ready\n")
    result = evse("sim", "--scenario", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"  FAIL %s expect contactor == closed  \(actual: open\)$"
                     % where(path, 5),
                     result.stdout, re.M)
    assert re.search(r"  ok   %s expect session == ready$" % where(path, 6), result.stdout, re.M)
    assert SUMMARY.findall(result.stdout) == [("2", "1", "1")]


def test_failing_expectation_json(tmp_path):
    path = write(tmp_path, "fail.scn", "plug\nexpect contactor == closed\n")
    result = evse("sim", "--json", "--scenario", path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["expectations"], report["held"], report["failed"]) == \
        (False, 1, 0, 1)
    failed = [r for r in report["timeline"] if r.get("held") is False]
    assert [(r["line"], r["actual"]) for r in failed] == [(2, "open")]


def test_wait_for_timeout_fails_but_run_goes_on(tmp_path):
    path = write(tmp_path, "timeout.scn", "plug\nwait_for contactor == closed timeout=2s\n"
                 "expect cp_state == B1\n")
    result = evse("sim", "--scenario", path)
    assert result.returncode == 1
    # steps start once the charger has booted (BootNotification accepted, a few ms)
    assert re.search(r"^00:00:02\.0\d\d  FAIL %s wait_for" % where(path, 2), result.stdout,
                     re.M)
    assert re.search(r"  ok   %s expect cp_state == B1" % where(path, 3), result.stdout)


def test_unknown_verb_exits_2_before_anything_runs(tmp_path):
    path = write(tmp_path, "bad.scn", "plug\nswipe 04A1B2C3\nfrobnicate 3\nwait 1s\n")
    result = evse("sim", "--scenario", path)
    assert result.returncode == 2
    assert "%s:3:" % path in result.stderr
    assert "frobnicate" in result.stderr
    assert HEADER not in result.stdout
    assert result.stdout == ""


def test_every_scenario_error_reported_at_once(tmp_path):
    path = write(tmp_path, "bad.scn", "plug\nwait 30\nexpect contactor == shut\nswipe\n")
    result = evse("sim", "--json", "--scenario", path)
    assert result.returncode == 2
    assert result.stdout == ""
    for line in (2, 3, 4):
        assert "%s:%d:" % (path, line) in result.stderr
    assert "%s:1:" % path not in result.stderr


def test_missing_scenario_exits_2():
    result = evse("sim", "--scenario", "no-such-scenario")
    assert result.returncode == 2
    assert "no-such-scenario: no such scenario" in result.stderr
    assert "normal-session" in result.stderr
    assert result.stdout == ""


def test_bad_board_exits_2_with_file_line(tmp_path):
    board = write(tmp_path, "bad.toml", 'name = "x"\nhal = "simulator"\n[[connectors]]\n'
                  'id = 1\nmax_current = "90A"\nphases = 2\n')
    result = evse("sim", "--board", board)
    assert result.returncode == 2
    assert "%s:5: connectors.0.max_current: must be between 6A and 80A" % board \
        in result.stderr
    assert "%s:6: connectors.0.phases: must be one of 1, 3, got 2" % board in result.stderr
    assert result.stdout == ""


def test_board_with_plain_value_for_a_table_exits_2(tmp_path):
    """Same bug as tests/test_boardfile.py: `sim = 3` crashes with a traceback (exit 1)."""
    board = write(tmp_path, "bad.toml", 'name = "x"\nhal = "simulator"\nsim = 3\n'
                  '[[connectors]]\nid = 1\nmax_current = "16A"\n')
    result = evse("sim", "--board", board)
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.returncode == 2
    assert "%s:3:" % board in result.stderr


def test_board_file_is_used(tmp_path):
    board = write(tmp_path, "free.toml", 'name = "free16"\nhal = "simulator"\n'
                  '[[connectors]]\nid = 1\nmax_current = "16A"\n')
    scenario = write(tmp_path, "free.scn", "plug\nwait_for session == ready timeout=100ms\n"
                     "expect offered_current == 16A\n")
    result = evse("sim", "--json", "--board", board, "--scenario", scenario)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["board"] == "free16"
    assert (report["held"], report["failed"]) == (2, 0)


def test_help_scenario_lists_every_verb():
    result = evse("sim", "--help-scenario")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines()
              if line.startswith("  ") and line.split()}
    assert set(VERBS) <= listed
    for verb in ("plug", "unplug", "swipe", "ev_ready", "ev_pause", "wait", "wait_for",
                 "fault", "clear", "expect"):                  # DESIGN.md core verbs
        assert verb in listed
    for kind in FAULT_KINDS:
        assert kind in result.stdout
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert op in result.stdout


def test_no_command_prints_help_and_exits_2():
    result = evse()
    assert result.returncode == 2
    assert "evse demo" in result.stdout


# ------------------------------------------------------------------------------ diagram

def test_diagram_two_blocks_with_every_state():
    result = evse("diagram")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("stateDiagram-v2") == 2
    cp_part, session_part = out.split("stateDiagram-v2")[1:]
    for state in SESSION_MACHINE.states:
        assert re.search(r"\b%s\b" % state, session_part), state
    for state in CP_MACHINE.states:
        assert re.search(r"(^|\s)%s(\s|$)" % state, cp_part, re.M), state
    assert "[*] --> %s" % SESSION_MACHINE.initial in session_part
    assert "[*] --> %s" % CP_MACHINE.initial in cp_part


def test_diagram_is_valid_mermaid():
    """Outside the diagrams only Mermaid comments (`%%`): the layer labels must be `%% cp
    layer`, not `% cp layer` (a printf `%%` escape that became one `%`)."""
    out = evse("diagram").stdout
    labels = [line for line in out.splitlines() if line.startswith("%")]
    assert labels == ["%% cp layer", "%% session layer"]


def test_diagram_markdown():
    result = evse("diagram", "--markdown")
    assert result.returncode == 0
    out = result.stdout
    assert out.count("```mermaid\nstateDiagram-v2\n") == 2
    blocks = re.findall(r"```mermaid\n(.*?)```", out, re.S)
    assert len(blocks) == 2
    assert all(b.startswith("stateDiagram-v2\n") for b in blocks)
    for state in SESSION_MACHINE.states:
        assert state in blocks[1]
    assert out.count("```") == 4


def test_diagram_one_table():
    result = evse("diagram", "--table", "session")
    assert result.returncode == 0
    assert result.stdout.count("stateDiagram-v2") == 1
    assert "suspended_evse" in result.stdout
    assert "cp_unplugged" not in result.stdout


# ------------------------------------------------------------------------------ real time

REALTIME = """\
plug
swipe 04A1B2C3
ev_ready
wait_for contactor == closed timeout=3s
unplug
wait_for contactor == open timeout=100ms
"""


@pytest.fixture(scope="module")
def realtime_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rt") / "rt.scn")
    with open(path, "w") as file:
        file.write(REALTIME)
    started_utc = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()
    result = evse("sim", "--realtime", "--scenario", path, timeout=30)
    elapsed = time.perf_counter() - started
    return path, result, elapsed, started_utc


def test_realtime_run(realtime_run):
    path, result, elapsed, _ = realtime_run
    assert result.returncode == 0, result.stdout + result.stderr
    # the EV alone needs 500 ms to close S2: this ran on the wall clock
    assert 0.5 <= elapsed < 10
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    assert SUMMARY.findall(result.stdout) == [("2", "2", "0")]
    wall = re.fullmatch(r"simulated run in (\d+\.\d\d) s of wall time", lines[-1])
    assert wall and 0.5 <= float(wall.group(1)) <= elapsed
    stamps = [line[:12] for line in lines[1:-2]]
    assert all(re.fullmatch(STAMP, s) for s in stamps), stamps

    def ms(stamp):
        h, m, s = stamp.split(":")
        return (int(h) * 3600 + int(m) * 60) * 1000 + round(float(s) * 1000)

    closed = next(line for line in lines if re.search("  ok   %s " % where(path, 4), line))
    span = (ms(closed[:12]) - ms(stamps[0])) % 86400000
    assert 500 <= span <= 3000


def test_realtime_stamps_are_wall_clock_utc(realtime_run):
    """DESIGN.md: with --realtime, timestamps are wall-clock UTC (the time of day now)."""
    _, result, elapsed, started_utc = realtime_run
    first = result.stdout.splitlines()[1][:12]
    stamp = datetime.datetime.strptime(first, "%H:%M:%S.%f").time()
    now = datetime.datetime.combine(started_utc.date(), stamp, datetime.timezone.utc)
    offset = (now - started_utc).total_seconds()
    offset = (offset + 43200) % 86400 - 43200           # across midnight
    assert -1 <= offset <= elapsed + 1, "first stamp %s, run started %s UTC" % (
        first, started_utc.strftime("%H:%M:%S.%f")[:12])


@pytest.mark.parametrize("options, message", [
    (["--csms", "notaurl"], "--csms notaurl: expected ws://"),
    (["--csms", "http://127.0.0.1/ocpp"], "expected ws://"),
    (["--auth-key", "short"], "--auth-key: an AuthorizationKey is 32-40 hex digits"),
    (["--csms", "wss://127.0.0.1/ocpp", "--ca", "/no/such/ca.pem"], "--ca /no/such/ca.pem: no such file"),
])
def test_impossible_ocpp_options_exit_2_before_anything_runs(tmp_path, options, message):
    path = write(tmp_path, "w.scn", "wait 1s\n")
    result = evse("sim", "--scenario", path, *options)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""

"""`evse sim` on input it cannot run: one line naming what is wrong and exit 2 before
anything runs, never a traceback; and how a run that cannot finish (SIGTERM, a step the
world refuses, a state folder in use) ends."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.transport import IDENTITY_MAX, endpoint, identity_problem
from simulator.runner import simulate
from simulator.scenario import parse_text
from simulator.timeline import HEADER, Timeline
from test_cli import ROOT, evse, write
from tools import boardfile

TETHERED_BOARD = ('name = "tethered"\nhal = "simulator"\n[[connectors]]\nid = 1\n'
                  'type = "cable"\nmax_current = "16A"\n')


def refused(result, message):
    """Exit 2 with `message` on stderr, nothing run and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------- scenarios vs the board

@pytest.mark.parametrize("text, options, message", [
    ("plug connector=2\n", [], "x.scn:1: the board has no connector 2 (it has 1)"),
    ("plug\nwait 1s\nexpect session == idle connector=3\n", [],
     "x.scn:3: the board has no connector 3 (it has 1)"),
    ("wait 1s\nlimit 10A connector=2\n", [], "x.scn:2: the board has no connector 2"),
    ("plug capacity=0kWh\nev_ready\nwait 1s\n", [],
     "x.scn:1: capacity: expected an energy from 1Wh to 10000kWh, got '0kWh'"),
    ("plug\nunplug end=socket\n", ["--board", "TETHERED"],
     "x.scn:2: connector 1 has a tethered cable: it has no socket end"),
    ("plug\nlimit 20A\n", ["--board", "TETHERED"],
     "x.scn:2: limit 20A is above connector 1's rating of 16A"),
    ("csms_offline 5s\n", ["--no-ocpp"],
     "x.scn:1: csms_offline needs OCPP, and this run has none (--no-ocpp)"),
    ("wait 1s\ncsms_online\n", ["--no-ocpp"], "x.scn:2: csms_online needs OCPP"),
    ("expect sent BootNotification == 1\n", ["--no-ocpp"],
     "x.scn:1: subject sent needs OCPP, and this run has none (--no-ocpp)"),
    ("expect ocpp_status == Available\n", ["--no-ocpp"], "x.scn:1: subject ocpp_status needs"),
    ("plug\nplug\n", [], "x.scn:2: connector 1 already has an EV plugged in (line 1)"),
    ("ev_ready\n", [], "x.scn:1: ev_ready needs an EV plugged in at connector 1"),
    ("ev soc=50%\n", [], "x.scn:1: ev needs an EV plugged in at connector 1"),
    ("fault ventilation\n", [], "x.scn:1: fault ventilation needs an EV plugged in"),
    ("expect fault != rcd_dcc\n", [], "x.scn:1: fault: expected none or a fault code"),
    ("wait_for fault == diode_short timeout=1s\n", [],
     "x.scn:1: fault: 'diode_short' is a fault kind (what `fault` injects), not a fault code:"
     " the agent reports it as 'diode_fault'"),
    ("wait 9000h\n", [], "x.scn:1: expected a duration from 0ms to 8760h (a year of"
                         " simulated time)"),
    ("temperature -300C\n", [], "x.scn:1: expected a temperature from -273C to 1000C"),
    ("PLUG\n", [], "x.scn:1: unknown verb 'PLUG' (did you mean 'plug'?)"),
])
def test_scenario_mistakes_the_board_shows_exit_2_before_running(tmp_path, text, options,
                                                                 message):
    path = write(tmp_path, "x.scn", text)
    options = [write(tmp_path, "t.toml", TETHERED_BOARD) if o == "TETHERED" else o
               for o in options]
    refused(evse("sim", "--scenario", path, *options), message)


def test_a_step_the_world_refuses_fails_and_the_run_goes_on():
    """What the check cannot rule out fails its step, as a failed expectation would: the
    run goes on and its verdict is a failure, never a traceback."""
    board = boardfile.load(boardfile.find("sim"))
    steps = parse_text("plug\nplug\nwait 1s\nexpect cp_state == B\n", "w.scn")
    timeline = Timeline(quiet=True)
    ok, simulation = simulate(board, steps, timeline=timeline)
    assert ok is False
    assert simulation.failed_steps == ["w.scn:2: connector 1 already has an EV plugged in"]
    assert [(e.step.line, e.held) for e in simulation.expectations] == [(4, True)]
    assert [row["note"] for row in timeline.rows if "FAIL" in row.get("note", "")] == [
        "FAIL w.scn:2: connector 1 already has an EV plugged in"]


# ------------------------------------------------------------------------------- paths

def test_scenario_that_is_a_folder(tmp_path):
    refused(evse("sim", "--scenario", str(tmp_path)),
            "evse sim: --scenario %s: a folder, not a scenario file" % tmp_path)


def test_state_that_is_a_file(tmp_path):
    path = write(tmp_path, "x.scn", "wait 1s\n")
    state = write(tmp_path, "state", "")
    refused(evse("sim", "--scenario", path, "--state", state),
            "evse sim: --state %s: not a folder" % state)


@pytest.mark.parametrize("ca, message", [
    ("FOLDER", "a folder: expected a CA certificate file (PEM)"),
    ("NOT_PEM", "not a PEM CA certificate"),
])
@pytest.mark.parametrize("csms", [[], ["--csms", "wss://127.0.0.1:9/ocpp"]])
def test_ca_that_cannot_be_a_ca_certificate(tmp_path, ca, message, csms):
    path = write(tmp_path, "x.scn", "wait 1s\n")
    ca_path = str(tmp_path) if ca == "FOLDER" else write(tmp_path, "ca.pem", "not a cert\n")
    started = time.monotonic()
    refused(evse("sim", "--scenario", path, "--ca", ca_path, *csms, timeout=30),
            "evse sim: --ca %s: %s" % (ca_path, message))
    assert time.monotonic() - started < 20       # no connection attempts


def test_ca_that_is_a_certificate_is_taken(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out",
                    "ca.pem", "-days", "2", "-subj", "/CN=test root"], cwd=tmp_path, check=True,
                   capture_output=True)
    path = write(tmp_path, "x.scn", "wait 1s\nexpect session == idle\n")
    result = evse("sim", "--scenario", path, "--ca", str(tmp_path / "ca.pem"))
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- OCPP options

@pytest.mark.parametrize("options, message", [
    (["--csms", "ws://127.0.0.1:99999/ocpp"],
     "--csms ws://127.0.0.1:99999/ocpp: not a valid URL (Port out of range 0-65535)"),
    (["--csms", "ws://[::1"], "--csms ws://[::1: not a valid URL (Invalid IPv6 URL)"),
    (["--csms", "ws://127.0.0.1:0/ocpp"],
     "--csms ws://127.0.0.1:0/ocpp: port 0 cannot be connected to"),
    (["--csms", "ws://127.0.0.1/ocpp#x"],
     "--csms ws://127.0.0.1/ocpp#x: a WebSocket URL has no #fragment"),
    (["--id", "x" * (IDENTITY_MAX + 1)], "--id %s: 49 characters, more than the 48 OCPP"
                                         " allows" % ("x" * 49)),
    (["--id", "CP 1"], "--id CP 1: ' ' is not allowed"),
    (["--id", "CP/1"], "--id CP/1: '/' is not allowed"),
    (["--id", "CP:1"], "--id CP:1: ':' is not allowed"),
    (["--no-ocpp", "--csms", "ws://127.0.0.1/ocpp"], "--no-ocpp contradicts --csms"),
    (["--no-ocpp", "--id", "CP1", "--auth-key", "00" * 16],
     "--no-ocpp contradicts --id, --auth-key (OCPP settings)"),
])
def test_ocpp_options_that_cannot_work_exit_2_at_once(tmp_path, options, message):
    path = write(tmp_path, "x.scn", "wait 1s\n")
    started = time.monotonic()
    refused(evse("sim", "--scenario", path, *options, timeout=30), "evse sim: " + message)
    assert time.monotonic() - started < 20


def test_run_refuses_contradicting_flags_too():
    result = evse("run", "--board", "rpi-pilot-hat", "--no-ocpp", "--csms", "ws://h/ocpp")
    refused(result, "evse run: --no-ocpp contradicts --csms")


@pytest.mark.parametrize("base, url", [
    ("ws://h/ocpp", "ws://h/ocpp/CP1"),
    ("ws://h/ocpp/", "ws://h/ocpp/CP1"),
    ("ws://h/ocpp?token=1", "ws://h/ocpp/CP1?token=1"),
    ("ws://h/ocpp/?a=1&b=/x", "ws://h/ocpp/CP1?a=1&b=/x"),
    ("wss://h/{id}/ws?x=1", "wss://h/CP1/ws?x=1"),
])
def test_the_id_goes_into_the_path_before_a_query(base, url):
    assert endpoint(base, "CP1") == url


def test_the_id_is_percent_encoded_where_a_path_needs_it():
    # '|' is an identifierString character but no RFC 3986 path character
    assert identity_problem("A*-_=+|@.z9") is None
    assert endpoint("ws://h/ocpp", "A|B@c") == "ws://h/ocpp/A%7CB@c"
    assert endpoint("ws://h/{id}?q", "A|B") == "ws://h/A%7CB?q"


@pytest.mark.parametrize("identity", ["", "x" * 49, "a b", "a/b", "a?b", "a#b", "a:b", "é"])
def test_identities_a_csms_cannot_take_are_refused(identity):
    assert identity_problem(identity)


# ---------------------------------------------------------------------- command line

def test_a_bad_flag_shows_the_command_usage():
    result = evse("sim", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: evse sim ")
    assert "evse sim: error: unrecognized arguments: --bogus" in result.stderr


@pytest.mark.parametrize("text, warning", [
    ("", "no steps"),
    ("# only a comment\n\n", "no steps"),
    ("wait 1s\n", "no expectations (expect, wait_for): exit 0 means only that nothing"
                  " failed"),
])
def test_a_scenario_that_checks_nothing_warns_but_passes(tmp_path, text, warning):
    path = write(tmp_path, "x.scn", text)
    result = evse("sim", "--scenario", path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "evse sim: warning: %s: %s\n" % (path, warning)
    assert result.stdout.splitlines()[0] == HEADER


# ------------------------------------------------------------------ SIGTERM and --state

# the StartTransaction the fixture waits for follows the swipe's Authorize over the
# WebSocket: by then the run is in its `wait 60s`
LONG_RUN = """\
plug
ev_ready
swipe 04A1B2C3
wait 60s
expect session == charging
"""


def start_sim(*args):
    return subprocess.Popen([sys.executable, "-m", "tools.cli", "sim", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_transaction(state, process, timeout_s=30):
    """Until the run's StartTransaction is journaled: the run is under way."""
    journal = os.path.join(state, "journal")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(journal) and b"StartTransaction" in open(journal, "rb").read():
            return
        time.sleep(0.05)
    raise AssertionError("no transaction in %s" % state)


@pytest.fixture
def long_run(tmp_path):
    """A real-time run with a --state folder, stopped in its `wait 60s`."""
    state = str(tmp_path / "state")
    scenario = write(tmp_path, "long.scn", LONG_RUN)
    process = start_sim("--realtime", "--json", "--state", state, "--scenario", scenario)
    try:
        wait_for_transaction(state, process)
        yield process, state, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigterm_before_the_end_is_not_a_pass(long_run):
    """DESIGN.md: exit 0 only if every expect held; the two steps SIGTERM cut off never ran.
    (`evse run` exits 0 on SIGTERM: a service has no end to reach, a scenario has.)"""
    process, _, _ = long_run
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, out[-2000:] + err[-2000:]
    assert "evse sim: stopped by SIGTERM: 2 of 5 steps not run" in err
    report = json.loads(out)
    assert (report["ok"], report["terminated"], report["steps_not_run"]) == (False, True, 2)
    assert (report["expectations"], report["held"], report["failed"]) == (0, 0, 0)
    # the charger shut down as evse run does: its transaction ended, none left open
    stops = [row["payload"]["reason"] for row in report["timeline"]
             if row.get("ocpp") == "sent" and row.get("action") == "StopTransaction"]
    assert stops == ["Reboot"]


def test_a_second_run_on_the_same_state_is_refused(long_run):
    process, state, tmp_path = long_run
    other = evse("sim", "--state", state, "--scenario", write(tmp_path, "w.scn", "wait 1s\n"))
    refused(other, "evse sim: state %s is in use by another evse process (pid %d)"
            % (state, process.pid))
    assert process.poll() is None              # the first run goes on, untouched
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    # once the first has ended, the folder is free again
    after = evse("sim", "--state", state, "--scenario",
                 write(tmp_path, "e.scn", "expect session == idle\n"))
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-2000:]


def test_a_run_that_ends_mid_charge_ends_its_transaction(tmp_path):
    """The end of an `evse sim` run switches the simulated charger off as `evse run` does
    on SIGTERM: the CSMS is not left with an open transaction (reason Reboot), and a
    resumed --state charger has none to close as PowerLoss."""
    state = str(tmp_path / "state")
    scenario = write(tmp_path, "mid.scn", "plug\nswipe 04A1B2C3\nev_ready\nwait 5min\n"
                                          "expect session == charging\n")
    done = evse("sim", "--state", state, "--scenario", scenario)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (stop,) = [line for line in done.stdout.splitlines() if "-> StopTransaction" in line]
    assert '"reason":"Reboot"' in stop
    with open(os.path.join(state, "open_tx")) as file:
        assert json.load(file) == {}
    again = evse("sim", "--state", state, "--scenario", write(tmp_path, "idle.scn",
                                                              "wait 10s\n"))
    assert "-> StopTransaction" not in again.stdout

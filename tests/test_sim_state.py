"""The simulated meter's register file in `evse sim --state DIR` (simulator/world.py SimMeter).

It stands for a meter's non-volatile register: it must never be behind a reading the agent
was handed (a register that goes back after a restart is a defect a CSMS sees), it must
survive `kill -9` of the simulator (not a power cut of its host), it must not slow a
virtual-time run down (no fsync per reading), and a damaged file must not crash the run.
"""
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from agent.journal import Journal
from hal.storage_fs import FileStorage
from simulator import clock
from simulator.ev import Ev
from simulator.world import REGISTER_RECORD_BYTES, WMS_PER_WH, SimConnector, SimMeter, World, \
    read_register
# the kill -9 crash test's CSMS: a LocalCsms in a thread of this process, recording every frame
from test_crash_kill9 import CsmsThread, _energies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTER = "sim-meter-1.json"
POSIX_ONLY = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def register_wh(path):
    return read_register(path)[0] // WMS_PER_WH


def charge(register_path, seconds, on_reading=lambda sample: None):
    """A meter with `register_path` read before a 22 kW charge (nothing flowing yet), then
    once a second for `seconds` of it (virtual time), `on_reading(sample)` after each."""
    async def main():
        world = World()
        connector = world.add(SimConnector(world, 1))
        connector.meter = meter = SimMeter(connector, register_path=register_path)
        world.bind()
        on_reading(meter.sample())
        ev = Ev(capacity_wh=200000, soc_permille=100, max_current_ma=32000)
        connector.plug(ev)
        connector.pilot.set_pwm(533)
        connector.driver(True)
        await asyncio.sleep(ev.delay_ms / 1000)
        connector.contactor.set(True)
        await asyncio.sleep(1)
        assert connector.power_w() > 20000
        for _ in range(seconds):
            on_reading(meter.sample())
            await asyncio.sleep(1)
    clock.run(main())


# ------------------------------------------------------------------------------ writes

def test_register_is_never_behind_a_reading_and_is_never_fsynced(tmp_path, monkeypatch):
    """The user's report: 28,802 fsyncs of sim-meter-1.json in eight-hours, one per reading,
    which made --state runs 8x slower. A reading's Wh is in the file before it is handed out;
    no fsync (the kernel keeps the data through a kill -9 of the simulator)."""
    def no_fsync(fd):
        raise AssertionError("the simulated meter's register was fsynced")
    monkeypatch.setattr(os, "fsync", no_fsync)
    path = str(tmp_path / REGISTER)
    readings = []

    def check(sample):
        readings.append(sample.energy_import_wh)
        assert register_wh(path) >= sample.energy_import_wh
        assert os.path.getsize(path) == REGISTER_RECORD_BYTES

    charge(path, 600, check)
    assert readings[-1] > readings[0] == 0
    assert readings == sorted(readings)
    assert register_wh(path) == readings[-1]
    assert not os.path.exists(path + ".tmp")


def test_idle_readings_do_not_rewrite_the_register(tmp_path):
    """Only a reading whose whole Wh changed is written: an idle charger read every second
    for hours leaves its register file alone."""
    path = str(tmp_path / REGISTER)

    async def main():
        world = World()
        connector = world.add(SimConnector(world, 1))
        connector.meter = meter = SimMeter(connector, register_path=path)
        world.bind()
        meter.sample()
        written = os.stat(path).st_mtime_ns
        os.utime(path, ns=(written - 10**9, written - 10**9))
        for _ in range(100):
            await asyncio.sleep(1)
            assert meter.sample().energy_import_wh == 0
        return os.stat(path).st_mtime_ns == written - 10**9
    assert clock.run(main())


def test_a_restarted_meter_continues_from_its_register(tmp_path):
    path = str(tmp_path / REGISTER)
    first, again = [], []
    charge(path, 120, lambda sample: first.append(sample.energy_import_wh))
    charge(path, 60, lambda sample: again.append(sample.energy_import_wh))
    assert again[0] == first[-1] > 0            # neither back nor forward
    assert again[-1] > first[-1]


# ------------------------------------------------------------------------------ damaged file

DAMAGED = {
    "garbage": (b"\xff\xfe\x00\x81garbage", "not JSON text"),
    "empty object": (b"{}", "expected {\"import_wms\": N, \"export_wms\": N}"),
    "list": (b"[]", "found []"),
    "truncated": (b'{"import_wms": 36000000, "expo', "not JSON text"),
    "float": (b'{"import_wms": 1.5}', "found {\"import_wms\": 1.5}"),
    "float with export": (b'{"import_wms": 1.5, "export_wms": 0}', "whole numbers >= 0"),
    "negative": (b'{"import_wms": -3600000, "export_wms": 0}', "whole numbers >= 0"),
    "boolean": (b'{"import_wms": true, "export_wms": 0}', "whole numbers >= 0"),
    "empty file": (b"", "not JSON text"),
}


@pytest.mark.parametrize("content, problem", DAMAGED.values(), ids=list(DAMAGED))
def test_damaged_register_is_a_warning_and_the_meter_starts_from_0(tmp_path, capsys,
                                                                    content, problem):
    path = str(tmp_path / REGISTER)
    with open(path, "wb") as file:
        file.write(content)
    with pytest.raises(ValueError, match="^(not JSON text|expected)"):
        read_register(path)
    readings = []
    charge(path, 30, lambda sample: readings.append(sample.energy_import_wh))
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1, warning
    assert warning.startswith("warning: %s: " % path)
    assert problem in warning
    assert warning.endswith("; the simulated meter starts from 0 Wh\n")
    assert readings[0] == 0 < readings[-1]
    assert register_wh(path) == readings[-1]        # repaired by the first reading


@pytest.mark.parametrize("content, problem", DAMAGED.values(), ids=list(DAMAGED))
def test_evse_sim_with_a_damaged_register_runs_with_one_warning(tmp_path, content, problem):
    state = tmp_path / "state"
    state.mkdir()
    (state / REGISTER).write_bytes(content)
    scenario = tmp_path / "charge.scn"
    scenario.write_text("plug\nswipe 04A1B2C3\nev_ready\n"
                        "wait_for contactor == closed timeout=3s\nwait 10min\n"
                        "expect energy > 3kWh\n")
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "sim", "--state", str(state), "--scenario",
         str(scenario)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    warnings = [line for line in result.stderr.splitlines() if REGISTER in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: %s: " % (state / REGISTER)) and problem in \
        warnings[0]
    assert "Traceback" not in result.stderr
    assert register_wh(str(state / REGISTER)) >= 3000


# ------------------------------------------------------------------------------ kill -9

# A child process reads a 22 kW meter with a register file as fast as it can and prints each
# reading's Wh (what it "reported") before taking the next: thousands of register writes a
# second, so each kill lands inside one or between two. Every restart begins with the write
# that replaces the file whole, then rewrites it in place.
READER = r"""
import sys
from simulator.world import SimMeter

class Charging:
    def __init__(self):
        self.world = self
        self.ms = 0
    def now_ms(self):
        self.ms += 1000
        return self.ms
    def power_w(self):
        return 22080
    def electrical(self):
        return (32000,) * 3, (2300,) * 3, (7360,) * 3, 22080

connector = Charging()
meter = SimMeter(connector, register_path=sys.argv[1])
while True:
    sys.stdout.write("%d\n" % meter.sample().energy_import_wh)
    sys.stdout.flush()
"""


@POSIX_ONLY
def test_register_survives_kill9_in_the_middle_of_its_writes(tmp_path):
    path = str(tmp_path / REGISTER)
    rng = random.Random(7)
    previous = 0
    for kill in range(8):
        child = subprocess.Popen([sys.executable, "-c", READER, path], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = child.stdout.readline()             # reading (and writing) by now
        time.sleep(rng.uniform(0.01, 0.1))
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL, errors
        reported = [int(line) for line in (first + rest).splitlines(keepends=True)
                    if line.endswith(b"\n")]
        assert b"warning" not in errors, errors
        saved = register_wh(path)                   # valid JSON, a register
        assert reported[0] >= previous              # the restarted meter went on from it
        assert saved >= reported[-1], "kill %d: register %d Wh < reported %d Wh" % (
            kill, saved, reported[-1])
        assert len(reported) > 10
        previous = saved


KILL_CP = "SIMSTATE"
SESSION = """plug
swipe 04A1B2C3
ev_ready
wait_for contactor == closed timeout=3s
wait %s
swipe 04A1B2C3
wait_for contactor == open timeout=6s
unplug
"""


def _sample_every(state, seconds):
    """MeterValueSampleInterval for the next run on `state`: 1 s lets a few seconds of
    real-time charging report energy; the default 60 s keeps virtual-time runs fast."""
    FileStorage(state).write("ocpp_config", json.dumps({"MeterValueSampleInterval": str(seconds)}))


def _sim(url, state, scenario, *options):
    return subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "sim", "--csms", url, "--id", KILL_CP,
         "--state", state, "--scenario", scenario, *options],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _finish(process):
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()[-3000:]


def _calls(server, action, since=0):
    """The payloads of `action` CALLs the CSMS got from the charger, from trail index on."""
    return [item.payload for _, item in server.trail[since:]
            if getattr(item, "kind", None) == "CALL" and item.direction == "from_cp"
            and item.cp_id == KILL_CP and item.action == action]


def _reported_wh(payloads):
    return [int(e) for payload in payloads for e in _energies(payload.get("meterValue"))]


@POSIX_ONLY
def test_evse_sim_killed_mid_charge_resumes_its_meter_where_it_stopped(tmp_path):
    """`evse sim --realtime --state DIR` killed with -9 while charging: the register file is
    valid and not behind any energy the agent reported (MeterValues, StartTransaction, its
    journal, open_tx); resumed on the same DIR, the transaction the kill cut ends with
    PowerLoss and the next one starts from the register, continuous."""
    state = str(tmp_path / "state")
    long_session = str(tmp_path / "long.scn")
    short_session = str(tmp_path / "short.scn")
    with open(long_session, "w") as file:
        file.write(SESSION % "1h")
    with open(short_session, "w") as file:
        file.write(SESSION % "10min")
    with CsmsThread(20240) as server:
        url = server.csms.url
        # a session in virtual time first: the meter does not start from 0
        _finish(_sim(url, state, short_session, "--virtual"))
        first_stop = _calls(server, "StopTransaction")[-1]["meterStop"]
        assert first_stop == register_wh(os.path.join(state, REGISTER)) > 3000

        killed_from = len(server.trail)
        _sample_every(state, 1)
        process = _sim(url, state, long_session, "--realtime")
        try:
            deadline = time.monotonic() + 30
            while len(_reported_wh(_calls(server, "MeterValues", killed_from))) < 4:
                assert process.poll() is None, process.communicate()[0].decode()[-3000:]
                assert time.monotonic() < deadline, "no MeterValues within 30 s"
                time.sleep(0.05)
            time.sleep(random.Random(1).uniform(0, 1))
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)
        assert process.returncode == -signal.SIGKILL
        time.sleep(0.05)                            # the CSMS sees the socket close
        snapshot = str(tmp_path / "at-kill")
        shutil.copytree(state, snapshot)            # loading a journal may rewrite it
        start = _calls(server, "StartTransaction", killed_from)[0]
        assert start["meterStart"] == first_stop    # continuous across a clean restart
        reported = [start["meterStart"]] + _reported_wh(
            _calls(server, "MeterValues", killed_from))
        for _, record in Journal(FileStorage(snapshot)).pending():
            reported += _reported_wh([record["payload"]])
        open_tx = json.loads(FileStorage(snapshot).read("open_tx") or b"{}")
        reported += [tx["wh"] for tx in open_tx.values()]
        with open(os.path.join(snapshot, REGISTER), "rb") as file:
            json.loads(file.read())                 # valid JSON, not a torn record
        at_kill = register_wh(os.path.join(snapshot, REGISTER))
        assert at_kill >= max(reported) > first_stop, (at_kill, reported)

        resumed_from = len(server.trail)
        _sample_every(state, 60)
        _finish(_sim(url, state, short_session, "--virtual"))
    stops = _calls(server, "StopTransaction", resumed_from)
    power_loss = [stop for stop in stops if stop["reason"] == "PowerLoss"]
    assert len(power_loss) == 1, stops
    next_start = _calls(server, "StartTransaction", resumed_from)[0]["meterStart"]
    next_stop = stops[-1]["meterStop"]
    assert power_loss[0]["meterStop"] <= next_start    # the register did not go back
    assert next_start == at_kill                         # nor jump forward
    assert next_stop >= next_start + 3000
    assert next_stop == register_wh(os.path.join(state, REGISTER))

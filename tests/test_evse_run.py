"""`evse run --board FILE` end to end: the real `evse run` process with its Linux drivers
(sysfs PWM, GPIO, IIO ADC) against the simulated charger behind a sysfs tree
(simulator/sysfs_board.py) and the local CSMS over a real WebSocket on 127.0.0.1, in real time.

Each test runs one asyncio loop holding the CSMS and the simulated board; the agent is a
separate process, stopped with SIGTERM or killed with SIGKILL as a service manager or a power
cut would.
"""
import asyncio
import os
import re
import signal
import sys

import pytest

from simulator.csms import LocalCsms
from simulator.runner import new_ev, world_from_board
from simulator.sysfs_board import SysfsBoard
from tools import boardfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(REPO, "boards", "rpi-pilot-hat.toml")
CP = "RPI-0001"
TEST_LIMIT_S = 60


def board_file(tmp_path, csms_url, extra=""):
    """The bundled Raspberry Pi board, pointed at a sysfs tree, watchdog file, state folder
    and CSMS under tmp_path."""
    text = open(BUNDLED).read()
    replacements = (
        ('sysfs = "/sys"', 'sysfs = "%s"' % (tmp_path / "sys")),
        ('watchdog = "/dev/watchdog0"', 'watchdog = "%s"' % (tmp_path / "watchdog")),
        ('csms = "wss://csms.example.com/ocpp"', 'csms = "%s"' % csms_url),
        ('ca = "/etc/evse-agent/csms-ca.pem"\n', ''),
        ('dir = "/var/lib/evse-agent"', 'dir = "%s"' % (tmp_path / "state")),
    )
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "board.toml"
    path.write_text(text + extra)
    (tmp_path / "watchdog").write_bytes(b"")
    return str(path)


class Bench:
    """The CSMS, the simulated board behind its sysfs tree, and the `evse run` process."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.csms = None
        self.board = None
        self.world = None
        self.process = None
        self.output = []
        self._tasks = []

    async def start(self, extra=""):
        self.csms = await LocalCsms().start()
        self.path = board_file(self.tmp_path, self.csms.url, extra)
        self.board = boardfile.load(self.path)
        self.world = world_from_board(self.board)
        self.sysfs = SysfsBoard(self.board, self.world)
        self._tasks.append(asyncio.ensure_future(self.sysfs.run()))
        await self.start_agent()
        return self

    async def start_agent(self):
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "run", "--board", self.path, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._tasks.append(asyncio.ensure_future(self._collect(self.process)))

    async def _collect(self, process):
        async for line in process.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    async def stop(self):
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for task in self._tasks:
            task.cancel()
        await self.csms.stop()

    # ------------------------------------------------------------------ readers
    def calls(self, action):
        return self.csms.records(CP, action, "CALL", "from_cp")

    def status(self):
        return self.csms.station(CP).connectors.get(1)

    @property
    def connector(self):
        return self.world.connectors[1]

    async def until(self, predicate, timeout=20):
        """Poll: the predicate may read the CSMS's records or the simulated world."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out; agent output:\n" +
                                     "\n".join(self.output[-40:]))
            await asyncio.sleep(0.01)

    async def booted(self, boots=1, status="Available"):
        """The boots-th BootNotification sent, and connector 1 reported after it."""
        await self.until(lambda: len(self.calls("BootNotification")) >= boots)
        boot = self.calls("BootNotification")[boots - 1]
        await self.until(lambda: any(r.time >= boot.time and r.payload["connectorId"] == 1
                                     for r in self.calls("StatusNotification")))
        if status is not None:
            await self.until(lambda: self.status() == status)

    async def charging(self):
        """Plug in an EV, start remotely, until current flows; returns the transaction id."""
        self.connector.plug(new_ev(self.board))
        self.connector.driver(True)
        await self.until(lambda: self.status() == "Preparing")
        reply = await self.csms.remote_start(CP, "TAG-RUN-1", connector_id=1)
        assert reply == {"status": "Accepted"}
        await self.until(lambda: self.calls("StartTransaction"))
        await self.until(lambda: self.connector.ev_current_ma() > 0)
        await self.until(lambda: self.status() == "Charging")
        await asyncio.sleep(0.2)
        return self.csms.station(CP).transaction_for(1) if hasattr(
            self.csms.station(CP), "transaction_for") else self._transaction_id()

    def _transaction_id(self):
        starts = self.calls("StartTransaction")
        for record in self.csms.log:
            if record.unique_id == starts[-1].unique_id and record.kind == "CALLRESULT":
                return record.payload["transactionId"]
        return None

    def pwm_state(self):
        folder = self.tmp_path / "sys/class/pwm/pwmchip0/pwm0"
        return {name: int((folder / name).read_text()) for name in
                ("period", "duty_cycle", "enable")}

    def gpio(self, number):
        return int((self.tmp_path / ("sys/class/gpio/gpio%d/value" % number)).read_text())


def run(tmp_path, scenario, extra=""):
    async def main():
        bench = await Bench(tmp_path).start(extra)
        try:
            return await asyncio.wait_for(scenario(bench), TEST_LIMIT_S)
        finally:
            await bench.stop()
    return asyncio.run(main())


# ------------------------------------------------------------------------------ sessions

def test_a_full_session_on_the_linux_drivers_then_sigterm_exits_cleanly(tmp_path):
    """Boot, plug, remote start, charge, remote stop, unplug: over sysfs PWM, GPIO and IIO
    exactly as on the board; then SIGTERM leaves the outputs safe and exits 0."""
    async def scenario(bench):
        await bench.booted()
        pilot_idle = bench.pwm_state()
        tx = await bench.charging()
        charging = (bench.connector.contactor.closed, bench.connector.lock.locked,
                    bench.connector.pilot.mode, bench.connector.pilot.duty)
        await asyncio.sleep(1)
        assert await bench.csms.remote_stop(CP, tx) == {"status": "Accepted"}
        await bench.until(lambda: bench.calls("StopTransaction"))
        await bench.until(lambda: not bench.connector.contactor.closed)
        bench.connector.unplug()
        await bench.until(lambda: bench.status() == "Available")
        bench.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bench.process.wait(), 15)
        return pilot_idle, tx, charging, code, bench.pwm_state(), bench.gpio(17)

    pilot_idle, tx, charging, code, pilot_after, coil_after = run(tmp_path, scenario)
    # +12 V at idle is 100 % duty with the channel enabled
    assert pilot_idle == {"period": 1000000, "duty_cycle": 1000000, "enable": 1}
    # 32 A offered: 53.3 % duty (IEC 61851-1 Table A.8: duty = I / 0.6), contactor and lock
    assert charging == (True, True, "pwm", 533)
    assert code == 0
    assert pilot_after["duty_cycle"] == pilot_after["period"]       # left at +12 V
    assert coil_after == 0
    assert (tmp_path / "watchdog").read_bytes().endswith(b"V")      # fed, then disarmed


def test_sigterm_while_charging_ends_the_transaction_with_reason_reboot(tmp_path):
    """A service stop during a session: StopTransaction(Reboot) reaches the CSMS, the
    contactor opens before the process exits, exit status 0."""
    async def scenario(bench):
        await bench.booted()
        tx = await bench.charging()
        bench.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(bench.process.wait(), 15)
        stops = [r.payload for r in bench.calls("StopTransaction")]
        return tx, code, stops, bench.connector.contactor.closed, bench.connector.ev_current_ma()

    tx, code, stops, closed, current = run(tmp_path, scenario)
    assert code == 0
    assert [(s["transactionId"], s["reason"]) for s in stops] == [(tx, "Reboot")]
    assert closed is False and current == 0


def test_kill_9_while_charging_then_restart_closes_the_transaction_with_power_loss(tmp_path):
    """SIGKILL mid-session (nothing runs on the way down), then the service starts again:
    the open transaction is stopped with reason PowerLoss from the journal, exactly once."""
    async def scenario(bench):
        await bench.booted()
        tx = await bench.charging()
        bench.process.kill()
        await bench.process.wait()
        await bench.start_agent()
        await bench.booted(boots=2, status=None)
        await bench.until(lambda: bench.calls("StopTransaction"))
        await asyncio.sleep(1)
        return tx, [r.payload for r in bench.calls("StopTransaction")]

    tx, stops = run(tmp_path, scenario)
    assert [(s["transactionId"], s["reason"]) for s in stops] == [(tx, "PowerLoss")]


def test_a_soft_reset_from_the_csms_restarts_the_agent_in_the_process(tmp_path):
    async def scenario(bench):
        await bench.booted()
        pid = bench.process.pid
        assert await bench.csms.reset(CP, "Soft") == {"status": "Accepted"}
        await bench.booted(boots=2)
        return pid, bench.process.pid, bench.process.returncode, bench.output

    pid_before, pid_after, returncode, output = run(tmp_path, scenario)
    assert pid_before == pid_after and returncode is None
    assert any("soft reset: restarting the agent" in line for line in output)


def test_an_rcd_trip_opens_the_contactor_and_reports_ground_failure(tmp_path):
    async def scenario(bench):
        await bench.booted()
        await bench.charging()
        bench.connector.inject("rcd_dc", True)
        await bench.until(lambda: not bench.connector.contactor.closed)
        await bench.until(lambda: bench.status() == "Faulted")
        errors = [r.payload["errorCode"] for r in bench.calls("StatusNotification")
                  if r.payload["status"] == "Faulted"]
        return errors

    errors = run(tmp_path, scenario)
    assert errors[-1] == "GroundFailure"


# ------------------------------------------------------------------------------ bad input

def test_a_board_whose_hardware_is_missing_is_exit_2_naming_the_path(tmp_path, capsys):
    from tools.cli import main
    path = board_file(tmp_path, "ws://127.0.0.1:9/ocpp")
    code = main(["run", "--board", path])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"evse run: .*board.toml: .*sys/class/pwm/pwmchip0/export: cannot write",
                     err), err


def test_a_bad_pin_name_is_exit_2_with_file_and_line(tmp_path, capsys):
    from tools.cli import main
    path = board_file(tmp_path, "ws://127.0.0.1:9/ocpp")
    text = open(path).read().replace('contactor = "gpio17"', 'contactor = "GPIO 17"')
    open(path, "w").write(text)
    line = text.splitlines().index('contactor = "GPIO 17"') + 1
    code = main(["run", "--board", path])
    err = capsys.readouterr().err
    assert code == 2
    assert "%s:%d: connectors.0.linux.contactor: must name a device like 'gpio17', " \
        "got 'GPIO 17'" % (path, line) in err


def test_run_without_a_csms_or_state_folder_says_what_to_set(tmp_path, capsys):
    from tools.cli import main
    path = board_file(tmp_path, "ws://127.0.0.1:9/ocpp")
    text = open(path).read()
    text = re.sub(r'\ncsms = "[^"]*"', "", text)
    open(path, "w").write(text)
    assert main(["run", "--board", path]) == 2
    assert "no CSMS: set [ocpp] csms in the board file or --csms URL" in capsys.readouterr().err


@pytest.mark.parametrize("board, options, says", [
    ("sim", ["--no-ocpp"], "`evse sim` runs the simulated board"),
    # said before any OCPP option of a board that runs elsewhere (its CA file, its CSMS)
    ("sim", [], "`evse sim` runs the simulated board"),
    ("esp32-devkitc", [], "`evse bundle` / `evse flash` put the agent on the board"),
    ("unix", [], "`evse bundle` builds it for the MicroPython unix port"),
])
def test_a_board_that_runs_elsewhere_is_refused_by_evse_run(capsys, board, options, says):
    from tools.cli import main
    assert main(["run", "--board", board] + options) == 2
    err = capsys.readouterr().err
    assert says in err and "CSMS" not in err and "--ca" not in err, err


@pytest.mark.parametrize("key, value, problem", [
    ("pilot_calibration", "[[0, 1], [0, 2]]", "the two points must differ"),
    ("pilot_adc_high", '"in_voltage0"', "must name a device like 'iio:device0/in_voltage0'"),
    ("lock_feedback", None, "missing (lock_feedback = true)"),
    ("pp_adc", None, "missing (a socket reads the cable's PP resistor)"),
])
def test_linux_pin_problems_name_the_key(tmp_path, key, value, problem):
    path = board_file(tmp_path, "ws://127.0.0.1:9/ocpp")
    text = open(path).read()
    text = re.sub(r"\n%s = [^\n]*" % key, "" if value is None else "\n%s = %s" % (key, value),
                  text)
    open(path, "w").write(text)
    with pytest.raises(boardfile.BoardError) as caught:
        boardfile.load(path)
    assert any(("connectors.0.linux.%s: %s" % (key, problem)) in p
               for p in caught.value.problems), caught.value.problems

"""`evse run --board FILE`: the agent on a real board, as a long-running service (CPython).

The board file names the drivers (`hal = "linux"`: hal/linux.py), the CSMS (`[ocpp]`) and the
folder for persistent state (`[storage] dir`); command-line flags override it. One line per
event goes to stdout (UTC time, connector, what happened), problems to stderr.

Stopping (SIGTERM from a service manager, or Ctrl-C): every transaction ends with reason
Reboot, the contactors open through the controller (current first, then the contactor, as in
any stop), the Stop messages get a bounded moment to leave (they are journaled either way),
the WebSocket closes with 1000, the outputs go safe (contactor open, pilot +12 V) and the
process exits 0. A Soft Reset from the CSMS restarts the agent inside the process on the same
drivers; a Hard Reset re-executes the process, so the drivers set the hardware up from
scratch, as after a power cycle. With `[linux] watchdog` the hardware watchdog is fed from the
same event loop as the safety task: a hung agent stops feeding it and the board resets.
"""
import asyncio
import datetime
import os
import signal
import sys
import time

from agent.charger import attach_ocpp16, station_identity
from agent.runtime import Agent, cancel_tasks
from agent.station import station_from_board
from agent.describe import describe, describe_ocpp

DRIVERS = {"linux": "hal.linux"}      # board hal -> module with board_hardware(board)
ELSEWHERE = {
    "simulator": "`evse sim` runs the simulated board",
    "micropython": "`evse bundle` / `evse flash` put the agent on the board",
    "unix": "`evse bundle` builds it for the MicroPython unix port",
}
STOP_CONTACTORS_S = 5
STOP_DELIVERY_S = 5
WATCHDOG_KICK_S = 1


def _loop_ms():
    """The agent's clock (the event loop's), for meter sample timestamps."""
    return int(asyncio.get_running_loop().time() * 1000)


def runs_elsewhere(board):
    """Why `evse run` cannot drive this board (None: it can), before anything else is
    checked: an OCPP option of a board that runs elsewhere is not the problem to report."""
    if board["hal"] in DRIVERS:
        return None
    return "hal = %r runs elsewhere: %s" % (board["hal"], ELSEWHERE.get(
        board["hal"], "not a Linux board"))


class RunOptions:
    """What `evse run` needs beyond the board: the flags, already merged with the board."""

    def __init__(self, csms=None, charge_point_id=None, auth_key=None, cafile=None,
                 state_dir=None, lenient=False, ocpp=True):
        self.csms = csms
        self.charge_point_id = charge_point_id
        self.auth_key = auth_key
        self.cafile = cafile
        self.state_dir = state_dir
        self.lenient = lenient
        self.ocpp = ocpp


class RunLog:
    def __init__(self, out=None):
        self.out = out or sys.stdout

    def line(self, connector_id, text):
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000)
        where = "[%d] " % connector_id if connector_id else ""
        print("%s %s%s" % (stamp, where, text), file=self.out, flush=True)

    def agent_event(self, evse, event):
        self.line(evse.connector_id if evse is not None else None, describe(event))

    def ocpp_event(self, now, event):
        self.line(None, describe_ocpp(event))

    def note(self, text):
        self.line(None, text)


class Watchdog:
    """Linux watchdog device: any write feeds it; "V" before close disarms it (magic close),
    so a clean stop does not reset the board while a crash or a hang does."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY)

    def feed(self):
        os.write(self.fd, b"\0")

    def disarm(self):
        os.write(self.fd, b"V")
        os.close(self.fd)


class Service:
    def __init__(self, board, options, log=None):
        self.board = board
        self.options = options
        self.log = log or RunLog()
        self.hardware = None
        self.storage = None
        self.agent = None
        self.cp = None
        self.connection = None
        self.boots = 0
        self.watchdog = None
        self._tasks = []
        self._stop = None
        self._reset = None

    def open_hardware(self):
        """Drivers and storage; raises with a clear message if the board is not there."""
        import importlib
        from hal.storage_fs import FileStorage
        driver = DRIVERS.get(self.board["hal"])
        if driver is None:
            raise RuntimeError(runs_elsewhere(self.board))
        self.hardware = importlib.import_module(driver).board_hardware(self.board)
        from hal.modbus_client import board_meters
        for connector_id, meter in board_meters(self.board, _loop_ms).items():
            self.hardware[connector_id].meter = meter
        if self.options.state_dir:
            os.makedirs(self.options.state_dir, exist_ok=True)
            self.storage = FileStorage(self.options.state_dir)
        watchdog = self.board.get("linux", {}).get("watchdog")
        if watchdog:
            self.watchdog = Watchdog(watchdog)

    def boot(self):
        """A fresh agent on the same drivers and persistent state."""
        from agent.ocpp_schemas import SchemaValidator
        from agent.transport_ws import Connection
        self.boots += 1
        station = station_from_board(self.board)
        linux = self.board["linux"]
        self.agent = Agent(station, self.hardware, poll_ms=linux["poll"],
                           idle_poll_ms=linux["idle_poll"])
        self.agent.log = self.log.note
        self.agent.observers.append(self.log.agent_event)
        self.cp = self.connection = None
        if not self.options.ocpp:
            return
        loop = asyncio.get_running_loop()
        wall = int(time.time() * 1000) - int(loop.time() * 1000)
        self.cp = attach_ocpp16(self.agent, self.board, self.storage, wall_ms=wall,
                                boot_count=self.boots, validator=SchemaValidator("1.6"),
                                lenient=self.options.lenient, id_prefix="%d-" % self.boots)
        self.cp.log = self.log.ocpp_event
        self.connection = Connection(
            self.cp, self.agent, self.options.csms,
            station_identity(self.board, self.options.charge_point_id), "1.6",
            auth_key=self.options.auth_key, cafile=self.options.cafile, log=self.log.note)
        self.agent.hooks.append(self.connection.frames_waiting)
        self.agent.hooks.append(self._check_requests)

    def _check_requests(self):
        if self.cp is not None and self.cp.has_requests():
            for request in self.cp.take_requests():
                if request[0] == "reset" and not self._reset.done():
                    self._reset.set_result(request[1])

    def _start(self):
        self._tasks = [asyncio.ensure_future(self.agent.run())]
        if self.connection is not None:
            self._tasks.append(asyncio.ensure_future(self.connection.run()))

    async def _feed_watchdog(self):
        while True:
            self.watchdog.feed()
            await asyncio.sleep(WATCHDOG_KICK_S)

    async def run(self):
        """Until SIGTERM/SIGINT; returns the exit status, or re-executes on a Hard Reset."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        feeder = asyncio.ensure_future(self._feed_watchdog()) if self.watchdog else None
        self.log.note("evse run: board %s (%s), %s" % (
            self.board["name"], self.board["path"],
            "CSMS %s" % self.options.csms if self.options.ocpp else "no OCPP"))
        try:
            while True:
                self._reset = loop.create_future()
                self.boot()
                self._start()
                stop = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait([stop, self._reset] + self._tasks,
                                   return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                self._raise_if_died()
                if self._stop.is_set():
                    await self.shutdown("reboot")
                    return 0
                kind = self._reset.result()
                # the controller already stopped the transactions (reason Soft/HardReset):
                # let the answer and the Stop messages leave, then restart
                await self.shutdown(None)
                if kind == "Hard":
                    self.log.note("hard reset: restarting the process")
                    self._safe_outputs()
                    if self.watchdog is not None:
                        self.watchdog.disarm()
                    os.execv(sys.executable, [sys.executable] + sys.argv)
                self.log.note("soft reset: restarting the agent")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if feeder is not None:
                feeder.cancel()
                self.watchdog.disarm()

    def _raise_if_died(self):
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._safe_outputs()
                raise task.exception()

    async def shutdown(self, reason):
        """End transactions (reason None: already ended), open the contactors, deliver."""
        agent = self.agent
        evses = agent.station.evses.values()
        if reason is not None:
            self.log.note("stopping: ending transactions (%s)" % reason)
            for evse in evses:
                if evse.session_active:
                    agent.act(evse.stop, reason)
        # a session's end (its Stop, with the stop reading) comes once its contactor is open,
        # which the controller bounds by the EV's time to stop drawing plus the reading's
        bound_s = max([STOP_CONTACTORS_S] + [
            (e.params.power_off_under_load_ms + e.params.stop_reading_timeout_ms) / 1000 + 1
            for e in evses])
        await self._until(lambda: all(e.settled() for e in evses), bound_s)
        if self.cp is not None:
            await self._until(lambda: not self.cp.online or (
                not self.cp.rpc.busy() and not len(self.cp.journal.pending())), STOP_DELIVERY_S)
        agent.stop()
        if self.connection is not None:
            await self.connection.close()
        await cancel_tasks(self._tasks)
        self._tasks = []
        if reason is not None:
            self._safe_outputs()

    @staticmethod
    async def _until(condition, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _safe_outputs(self):
        """Contactor open, pilot +12 V (no offer): what the board shows after we are gone."""
        for hardware in (self.hardware or {}).values():
            hardware.contactor.set(False)
            hardware.pilot.set_static("x1")


def serve(board, options):
    service = Service(board, options)
    service.open_hardware()
    return asyncio.run(service.run())

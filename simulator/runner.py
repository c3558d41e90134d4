"""Run the real agent on the simulated board through a scenario (CPython).

`Simulation` builds the world from a board dict, starts the agent's runtime (the same
`agent.runtime.Agent` a real board runs) and executes scenario steps against both: verbs act
on the world (the car, the faults) or on the station (a swipe, a limit), `expect` and
`wait_for` read subjects from the agent and the world. Time is virtual unless `realtime`.
"""
import asyncio
import datetime
import os
import signal
import time

from agent.runtime import Agent, cancel_tasks
from agent.station import station_from_board
from simulator import clock
from simulator.ev import Ev
from simulator.scenario import VERBS
from simulator.timeline import Timeline
from simulator.world import SimConnector, SimMeter, World


def _contactor(sim, c):
    return "closed" if sim.world.connectors[c].contactor.closed else "open"


def _soc(sim, c):
    ev = sim.world.connectors[c].ev
    return None if ev is None else ev.soc_permille // 10


# subject -> how to read it for connector c (the scenario parser knows their value types)
SUBJECTS = {
    "cp_state": lambda sim, c: sim.evse(c).cp_state,
    "session": lambda sim, c: sim.evse(c).state,
    "contactor": _contactor,
    "offered_current": lambda sim, c: sim.evse(c).offered_ma(),
    "ev_current": lambda sim, c: sim.world.connectors[c].ev_current_ma(),
    "energy": lambda sim, c: sim.evse(c).session_energy_wh(),
    "soc": _soc,
    "fault": lambda sim, c: sim.evse(c).faults.codes(),
}


OCPP_SUBJECTS = {
    "ocpp_status": lambda sim, c, action: (sim.cp._reported.get(c) or ("none",))[0],
    "sent": lambda sim, c, action: sim.cp.sent_counts.get(action, 0),
    "received": lambda sim, c, action: sim.cp.received_counts.get(action, 0),
}


class Expectation:
    __slots__ = ("step", "held", "actual", "time_ms")

    def __init__(self, step, held, actual, time_ms):
        self.step, self.held, self.actual, self.time_ms = step, held, actual, time_ms


class OcppOptions:
    """How the simulated charger talks OCPP. url None = the bundled local CSMS."""

    def __init__(self, url=None, charge_point_id=None, version="1.6", auth_key=None,
                 cafile=None, lenient=False, state_dir=None, end_transactions=False):
        self.url = url
        # at the end of the run (or SIGTERM) the charger shuts down as `evse run` does:
        # its transactions end (reason Reboot), so no CSMS is left with open ones
        self.end_transactions = end_transactions
        self.charge_point_id = charge_point_id
        self.version = version
        self.auth_key = auth_key
        self.cafile = cafile
        self.lenient = lenient
        self.state_dir = state_dir


def world_from_board(board, meter_dir=None):
    """The simulated hardware a board file describes. With `meter_dir` the meters' energy
    registers persist there (a resumed charger's meter does not start from zero)."""
    sim = board.get("sim", {})
    world = World()
    for c in board["connectors"]:
        connector = SimConnector(world, c["id"], phases=c["phases"],
                                 socket=c["type"] == "socket", ventilation=c["ventilation"],
                                 contactor_feedback=c["contactor_feedback"],
                                 noise_mv=sim.get("noise_mv", 0),
                                 seed=sim.get("seed", 1) + c["id"])
        connector.contactor.close_ms = sim.get("contactor_close", 30)
        connector.contactor.open_ms = sim.get("contactor_open", 20)
        if meter_dir:
            connector.meter = SimMeter(connector, register_path=os.path.join(
                meter_dir, "sim-meter-%d.json" % c["id"]))
        world.add(connector)
    return world


def new_ev(board, options=None):
    """An EV with the board's [sim] defaults, overridden by scenario options."""
    options, sim = options or {}, board.get("sim", {})
    return Ev(capacity_wh=options.get("capacity", sim.get("ev_capacity", 60000)),
              soc_permille=options.get("soc", sim.get("ev_soc", 20)) * 10,
              max_current_ma=options.get("max_current", sim.get("ev_max_current", 32000)),
              phases=options.get("phases", sim.get("ev_phases", 3)),
              delay_ms=options.get("delay", sim.get("ev_delay", 500)),
              sleepy=options.get("sleepy", False))


class HeldRead:
    """A meter read paced in real time (RTU through the pty relay): virtual time must not run
    ahead of it, or every read would time out at once (simulator/clock.py `hold`)."""

    def __init__(self, meter):
        self.meter = meter

    def __getattr__(self, name):
        return getattr(self.meter, name)

    async def read(self):
        clock = getattr(asyncio.get_running_loop(), "clock", None)
        if clock is not None:
            clock.hold += 1
        try:
            return await self.meter.read()
        finally:
            if clock is not None:
                clock.hold -= 1


class Simulation:
    def __init__(self, board, realtime=False, timeline=None, ocpp=None):
        self.board = board
        self.realtime = realtime
        self.timeline = timeline or Timeline(realtime=realtime)
        self.ocpp = ocpp                # OcppOptions, or None for no OCPP at all
        self.expectations = []
        self.failed_steps = []          # "file:line: problem" of steps the world refused
        self.steps_not_run = 0          # left when SIGTERM ended the run early
        self.world = None
        self.agent = None
        self.cp = None
        self.connection = None
        self.csms = None
        self.storage = None
        self.boots = 0
        self._changed = None
        self._tasks = []
        self.hardware = None
        self.meter_server = None

    # ------------------------------------------------------------------ building
    def build(self):
        """The world (once) and the first boot of the agent."""
        self.build_world()
        self.boot_agent()
        self.timeline.attach(self)
        return self

    async def serve_meters(self):
        """A board whose meter is a Modbus model: each connector's simulated meter is served
        on real Modbus (TCP on 127.0.0.1, or RTU on a paced pty pair with [sim] meter_link =
        "rtu"), and the agent reads it with the client a real board uses (hal/modbus_client.py),
        so MeterValues and Start/Stop energy come over the wire."""
        meter = self.board.get("meter", {})
        if meter.get("model", "sim") in ("sim", "none"):
            return
        from hal.meter_profiles import PROFILES
        from hal.modbus_client import board_meters
        from hal.modbus_meter import unit_ids
        from simulator.meter_server import SimulatedMeter, start_rtu, start_tcp
        self.build_world()
        profile = PROFILES.get(meter["model"]) or {"title": "custom meter",
                                                    "rows": tuple(meter["registers"])}
        units = [SimulatedMeter(profile, unit_id=unit,
                                source=self.world.connectors[connector_id].meter.sample)
                 for connector_id, unit in unit_ids(self.board, profile).items()]
        link = self.board.get("sim", {}).get("meter_link", "tcp")
        if link == "rtu":
            defaults = profile.get("defaults", {})
            self.meter_server = await start_rtu(
                units, baud=meter.get("baud") or defaults.get("baud", 9600),
                parity=meter.get("parity") or defaults.get("parity", "N"),
                stopbits=meter.get("stopbits") or defaults.get("stopbits", 1), pace=True)
            where = {"serial": self.meter_server.client_path}
        else:
            self.meter_server = await start_tcp(units)
            where = {"tcp": "127.0.0.1:%d" % self.meter_server.port}
        for connector_id, modbus_meter in board_meters(self.board, self.world.now_ms,
                                                       where).items():
            self.hardware[connector_id].meter = HeldRead(modbus_meter) if link == "rtu" \
                else modbus_meter
        self.timeline.note("meter %s served on Modbus %s %s" % (
            meter["model"], link.upper(), where.get("tcp") or where.get("serial")))

    def build_world(self):
        if self.world is None:
            meter_dir = self.ocpp.state_dir if self.ocpp is not None else None
            self.world = world_from_board(self.board, meter_dir)
            self.hardware = self.world.hardware()

    def boot_agent(self):
        """A fresh agent on the same hardware and persistent state: what a reboot is."""
        self.boots += 1
        station = station_from_board(self.board)
        self.agent = Agent(station, self.hardware, now_ms=self.world.now_ms)
        self.agent.log = self.timeline.note
        self.agent.observers.append(self._observe)
        if self.ocpp is not None:
            self._boot_ocpp(station)
        if self.timeline.sim is not None:
            self.agent.hooks.append(self.timeline.flush)
        if self._changed is not None:
            self.agent.hooks.append(self._poke)

    def _boot_ocpp(self, station):
        from agent.charger import attach_ocpp16
        from agent.ocpp_schemas import SchemaValidator
        from agent.transport_ws import Connection
        from hal.storage_fs import FileStorage, MemoryStorage
        options = self.ocpp
        if self.storage is None:
            self.storage = FileStorage(options.state_dir) if options.state_dir else \
                MemoryStorage()
        wall = int(time.time() * 1000) - self.world.now_ms()
        self.cp = attach_ocpp16(self.agent, self.board, self.storage, wall_ms=wall,
                                boot_count=self.boots,
                                validator=SchemaValidator(options.version),
                                lenient=options.lenient, id_prefix="%d-" % self.boots)
        self.cp.log = self.timeline.ocpp_event
        self.connection = Connection(
            self.cp, self.agent, options.url, options.charge_point_id, options.version,
            auth_key=options.auth_key, cafile=options.cafile, log=self.timeline.note)
        self.agent.hooks.append(self.connection.frames_waiting)

    def evse(self, connector_id):
        return self.agent.station.evses[connector_id]

    def connector(self, connector_id):
        try:
            return self.world.connectors[connector_id]
        except KeyError:
            raise ValueError("the board has no connector %d" % connector_id) from None

    def new_ev(self, options):
        return new_ev(self.board, options)

    # ------------------------------------------------------------------ running
    def _observe(self, evse, event):
        self.timeline.agent_event(evse, event)
        self._poke()

    def _poke(self):
        if self._changed is not None:
            self._changed.set()

    async def run(self, steps):
        """Execute the steps; returns True if every step ran, and every expectation held."""
        if self.ocpp is not None and self.ocpp.url is None:
            from simulator.csms import LocalCsms
            # the local CSMS's clock runs with the simulation's (virtual) time, so its
            # currentTime answers do not pull the charger's clock back and forth
            loop = asyncio.get_running_loop()
            wall_at_zero = time.time() - loop.time()
            self.csms = await LocalCsms(clock=lambda: datetime.datetime.fromtimestamp(
                wall_at_zero + loop.time(), datetime.timezone.utc)).start()
            self.ocpp.url = self.csms.url
        if self.ocpp is not None:
            from agent.charger import station_identity
            self.ocpp.charge_point_id = station_identity(self.board, self.ocpp.charge_point_id)
        self._changed = asyncio.Event()
        await self.serve_meters()
        self.build()
        self.world.bind()
        self.agent.hooks.append(self._poke)
        self._start_tasks()
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        # SIGTERM (a service manager stopping the charger): end the run, close cleanly
        loop.add_signal_handler(signal.SIGTERM, self._terminate, main)
        self.steps_not_run = len(steps)
        try:
            await self._wait_booted()
            for step in steps:
                await self.execute(step)
                self.steps_not_run -= 1
                self._check_tasks()
            await self._end_transactions()
            await self._settle_ocpp()
        except asyncio.CancelledError:
            if not self.terminated:
                raise
            self.timeline.note("SIGTERM: stopping")
            await self._end_transactions()
            await self._settle_ocpp()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await self._stop_tasks()
            if self.csms is not None:
                await self.csms.stop()
            if self.meter_server is not None:
                await self.meter_server.stop()
        self.timeline.summary(self.expectations)
        return all(e.held for e in self.expectations) and not self.failed_steps and \
            not self.steps_not_run

    terminated = False

    def _terminate(self, main):
        self.terminated = True
        main.cancel()

    async def _wait_booted(self, timeout_ms=30000):
        """A scenario starts on a charger that has powered up and, with OCPP, booted:
        BootNotification accepted (or timeout_ms passed, for a CSMS that keeps it pending)."""
        if self.cp is None:
            return
        deadline = self.now_ms() + timeout_ms
        while self.cp.boot != "accepted" and self.now_ms() < deadline:
            await asyncio.sleep(0.01)

    def _start_tasks(self):
        self._tasks = [asyncio.ensure_future(self.agent.run())]
        if self.connection is not None:
            self._tasks.append(asyncio.ensure_future(self.connection.run()))
            self._tasks.append(asyncio.ensure_future(self._serve_requests()))

    def _check_tasks(self):
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()     # the agent died: surface its exception

    async def _stop_tasks(self):
        self.agent.stop()
        if self.connection is not None:
            await self.connection.close()
        await cancel_tasks(self._tasks)
        self._tasks = []

    async def _serve_requests(self):
        """A Reset from the CSMS reboots the agent; the world stays as it is."""
        requested = asyncio.Event()
        cp = self.cp
        self.agent.hooks.append(lambda: cp.has_requests() and requested.set())
        while True:
            await requested.wait()
            requested.clear()
            for request in cp.take_requests():
                if request[0] == "reset":
                    await self.reboot(request[1])
                    return

    async def reboot(self, kind="Soft"):
        # let the answer to Reset and the Stop messages leave first (they are journaled
        # anyway: a hard power cut here would replay them after the boot)
        await asyncio.sleep(0.5)
        self.timeline.note("reboot (%s reset)" % kind)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self.agent.stop()
        self.connection.stop()
        for task in tasks:
            task.cancel()
        self._tasks = []
        self.boot_agent()
        self._start_tasks()

    async def _end_transactions(self, reason="reboot"):
        """The charger shuts down: each open session ends, and its Stop (after the stop
        reading, once the contactor is open: the controller bounds that) is journaled."""
        if self.cp is None or not self.ocpp.end_transactions:
            return
        evses = self.agent.station.evses.values()
        if not any(e.session_active for e in evses):
            return
        self.timeline.note("end of the run: ending transactions (%s)" % reason)
        for evse in evses:
            if evse.session_active:
                self.agent.act(evse.stop, reason)
        for _ in range(200):
            if all(e.settled() for e in evses):
                return
            await asyncio.sleep(0.1)

    async def _settle_ocpp(self):
        """Give queued OCPP messages a moment to leave before the run ends."""
        if self.cp is None:
            return
        for _ in range(50):
            if not self.cp.rpc.busy() and not len(self.cp.journal.pending()):
                return
            await asyncio.sleep(0.1)

    def now_ms(self):
        return self.world.now_ms()

    async def execute(self, step):
        """One step. The scenario check (simulator.scenario.check) rules out what the board
        and the plug order make impossible; anything else the world refuses fails the step,
        and the run goes on, as after a failed expectation."""
        handler = getattr(self, "_verb_" + step.verb)
        self.timeline.step(step)
        try:
            await handler(step, step.options.get("connector", VERBS[step.verb].connector))
        except ValueError as error:
            failure = "%s:%d: %s" % (step.file, step.line, error)
            self.failed_steps.append(failure)
            self.timeline.note("FAIL " + failure)

    def read(self, condition, connector_id):
        self.connector(connector_id)
        if condition.subject in OCPP_SUBJECTS:
            if self.cp is None:
                raise ValueError("subject %r needs OCPP" % condition.subject)
            return OCPP_SUBJECTS[condition.subject](self, connector_id, condition.action)
        return SUBJECTS[condition.subject](self, connector_id)

    def _record(self, step, held, actual):
        expectation = Expectation(step, held, actual, self.now_ms())
        self.expectations.append(expectation)
        self.timeline.expectation(expectation)

    # ------------------------------------------------------------------ verbs
    async def _verb_plug(self, step, c):
        self.connector(c).plug(self.new_ev(step.options))
        if "pp" in step.options and self.connector(c).pp is not None:
            self.connector(c).pp.ohms = step.options["pp"]
            self.connector(c).pp.changed()
        await asyncio.sleep(0)

    async def _verb_unplug(self, step, c):
        self.connector(c).unplug(step.options.get("end", "both"))
        await asyncio.sleep(0)

    async def _verb_ev_ready(self, step, c):
        self.connector(c).driver(True)
        await asyncio.sleep(0)

    async def _verb_ev_pause(self, step, c):
        self.connector(c).driver(False)
        await asyncio.sleep(0)

    async def _verb_ev(self, step, c):
        connector = self.connector(c)
        ev = connector.ev
        if ev is None:
            raise ValueError("no EV plugged in at connector %d" % c)
        names = {"max_current": "max_current_ma", "phases": "phases", "delay": "delay_ms",
                 "sleepy": "sleepy", "ignore_pwm_off": "ignore_pwm_off"}
        for key, value in step.options.items():
            if key == "soc":
                ev.energy_mwh = ev.capacity_wh * value * 10
            elif key in names:
                setattr(ev, names[key], value)
        connector.power_changing()
        connector.refresh()
        await asyncio.sleep(0)

    async def _verb_swipe(self, step, c):
        self.agent.act(self.agent.station.present_token, step.args[0], c)
        await asyncio.sleep(0)

    async def _verb_wait(self, step, c):
        await asyncio.sleep(step.args[0] / 1000)

    async def _verb_wait_for(self, step, c):
        condition = step.args[0]
        timeout_ms = step.options.get("timeout", 60000)
        deadline = self.now_ms() + timeout_ms
        while True:
            actual = self.read(condition, c)
            if condition.holds(actual):
                self._record(step, True, actual)
                return
            remaining = deadline - self.now_ms()
            if remaining <= 0:
                self._record(step, False, actual)
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining / 1000)
            except asyncio.TimeoutError:
                pass

    async def _verb_expect(self, step, c):
        condition = step.args[0]
        actual = self.read(condition, c)
        self._record(step, condition.holds(actual), actual)

    async def _verb_fault(self, step, c):
        self.connector(c).inject(step.args[0], True)
        await asyncio.sleep(0)

    async def _verb_clear(self, step, c):
        self.connector(c).inject(step.args[0], False)
        await asyncio.sleep(0)

    async def _verb_limit(self, step, c):
        self.agent.act(self.evse(c).set_limit, step.args[0])
        await asyncio.sleep(0)

    async def _verb_temperature(self, step, c):
        connector = self.connector(c)
        connector.thermometer.deci_c = step.args[0]
        connector.thermometer.changed()
        await asyncio.sleep(0)

    async def _verb_available(self, step, c):
        self.agent.act(self.agent.station.set_available, c, True)
        await asyncio.sleep(0)

    async def _verb_unavailable(self, step, c):
        self.agent.act(self.agent.station.set_available, c, False)
        await asyncio.sleep(0)

    async def _verb_csms_offline(self, step, c):
        if self.connection is None:
            raise ValueError("csms_offline needs OCPP")
        await self.connection.go_offline(step.args[0])

    async def _verb_csms_online(self, step, c):
        if self.connection is None:
            raise ValueError("csms_online needs OCPP")
        self.connection.offline_until = self.now_ms()


def simulate(board, steps, realtime=False, timeline=None, ocpp=None):
    """Run a scenario to the end; returns (all expectations held, simulation)."""
    simulation = Simulation(board, realtime=realtime, timeline=timeline, ocpp=ocpp)
    started = time.perf_counter()
    ok = clock.run(simulation.run(steps), virtual=not realtime)
    simulation.wall_seconds = time.perf_counter() - started
    return ok, simulation

"""Run the real agent on the simulated board through a scenario (CPython).

`Simulation` builds the world from a board dict, starts the agent's runtime (the same
`agent.runtime.Agent` a real board runs) and executes scenario steps against both: verbs act
on the world (the car, the faults) or on the station (a swipe, a limit), `expect` and
`wait_for` read subjects from the agent and the world. Time is virtual unless `realtime`.
"""
import asyncio
import time

from agent.runtime import Agent
from agent.station import station_from_board
from simulator import clock
from simulator.ev import Ev
from simulator.timeline import Timeline
from simulator.world import SimConnector, World


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


class Expectation:
    __slots__ = ("step", "held", "actual", "time_ms")

    def __init__(self, step, held, actual, time_ms):
        self.step, self.held, self.actual, self.time_ms = step, held, actual, time_ms


class Simulation:
    def __init__(self, board, realtime=False, timeline=None):
        self.board = board
        self.realtime = realtime
        self.timeline = timeline or Timeline(realtime=realtime)
        self.expectations = []
        self.world = None
        self.agent = None
        self._changed = None

    # ------------------------------------------------------------------ building
    def build(self):
        board, sim = self.board, self.board.get("sim", {})
        self.world = World()
        for c in board["connectors"]:
            connector = SimConnector(self.world, c["id"], phases=c["phases"],
                                     socket=c["type"] == "socket",
                                     ventilation=c["ventilation"],
                                     contactor_feedback=c["contactor_feedback"],
                                     noise_mv=sim.get("noise_mv", 0),
                                     seed=sim.get("seed", 1) + c["id"])
            connector.contactor.close_ms = sim.get("contactor_close", 30)
            connector.contactor.open_ms = sim.get("contactor_open", 20)
            self.world.add(connector)
        station = station_from_board(board)
        self.agent = Agent(station, self.world.hardware(), now_ms=self.world.now_ms)
        self.timeline.attach(self)
        self.agent.observers.append(self._observe)
        return self

    def evse(self, connector_id):
        return self.agent.station.evses[connector_id]

    def connector(self, connector_id):
        try:
            return self.world.connectors[connector_id]
        except KeyError:
            raise ValueError("the board has no connector %d" % connector_id) from None

    def new_ev(self, options):
        sim = self.board.get("sim", {})
        soc = options.get("soc", sim.get("ev_soc", 20))
        return Ev(capacity_wh=options.get("capacity", sim.get("ev_capacity", 60000)),
                  soc_permille=soc * 10,
                  max_current_ma=options.get("max_current", sim.get("ev_max_current", 32000)),
                  phases=options.get("phases", sim.get("ev_phases", 3)),
                  delay_ms=options.get("delay", sim.get("ev_delay", 500)),
                  sleepy=options.get("sleepy", False))

    # ------------------------------------------------------------------ running
    def _observe(self, evse, event):
        self.timeline.agent_event(evse, event)
        self._poke()

    def _poke(self):
        if self._changed is not None:
            self._changed.set()

    async def run(self, steps):
        """Execute the steps; returns True if every expectation held."""
        self.build()
        self.world.bind()
        self._changed = asyncio.Event()
        self.agent.hooks.append(self._poke)
        task = asyncio.create_task(self.agent.run())
        await asyncio.sleep(0)
        try:
            for step in steps:
                await self.execute(step)
                if task.done():
                    task.result()       # the agent died: surface its exception
        finally:
            self.agent.stop()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.timeline.summary(self.expectations)
        return all(e.held for e in self.expectations)

    def now_ms(self):
        return self.world.now_ms()

    async def execute(self, step):
        handler = getattr(self, "_verb_" + step.verb)
        self.timeline.step(step)
        await handler(step, step.options.get("connector", 1))

    def read(self, condition, connector_id):
        if condition.subject not in SUBJECTS:
            raise ValueError("subject %r needs OCPP (not in this build)" % condition.subject)
        self.connector(connector_id)
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
        self.connector(c).unplug()
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
            raise ValueError("%s:%d: no EV plugged in" % (step.file, step.line))
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
        connector_id = step.options.get("connector")
        self.agent.act(self.agent.station.present_token, step.args[0], connector_id)
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
        self.agent.act(self.agent.station.set_available, step.options.get("connector", 0), True)
        await asyncio.sleep(0)

    async def _verb_unavailable(self, step, c):
        self.agent.act(self.agent.station.set_available, step.options.get("connector", 0), False)
        await asyncio.sleep(0)

    async def _verb_csms_offline(self, step, c):
        raise ValueError("%s:%d: csms_offline needs OCPP (--csms)" % (step.file, step.line))

    _verb_csms_online = _verb_csms_offline


def simulate(board, steps, realtime=False, timeline=None):
    """Run a scenario to the end; returns (all expectations held, simulation)."""
    simulation = Simulation(board, realtime=realtime, timeline=timeline)
    started = time.perf_counter()
    ok = clock.run(simulation.run(steps), virtual=not realtime)
    simulation.wall_seconds = time.perf_counter() - started
    return ok, simulation

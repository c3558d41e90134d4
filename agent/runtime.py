"""The asyncio shell around the sans-I/O core: reads the HAL, feeds the controllers, applies
their commands, sleeps until the next deadline or a HAL event.

Portable (CPython asyncio and MicroPython asyncio). Time comes from `now_ms`; under the
simulator's virtual-time loop that is virtual time, so this same file runs an 8-hour session
in about a second, and in real time on a board.

Per connector: one safety task (pilot, contactor, RCD, lock, PP, temperature: all fast local
reads) and, with a meter, one meter task, so a slow Modbus bus never delays a contactor
opening.
"""
from agent import evse as evse_mod
from agent.compat import MICROPYTHON, Waker, asyncio, monotonic_ms
from hal.interfaces import MeterError


def loop_clock_ms():
    """Milliseconds from the running loop's clock (virtual under the simulator)."""
    if MICROPYTHON:
        return monotonic_ms
    loop = asyncio.get_running_loop()

    def now_ms():
        return int(loop.time() * 1000)
    return now_ms


# Inputs fed to the controller only when the reading changes:
# (device on ConnectorHardware, its read method, controller input, None = "no reading")
CHANGE_FED = (
    ("contactor", "feedback", "contactor_feedback", True),   # None: no feedback contact
    ("rcd", "trip", "rcd_status", False),                    # None: not tripped
    ("lock", "feedback", "lock_feedback", True),
    ("pp", "read_ohms", "pp_reading", False),                # None: open circuit
    ("thermometer", "read_dc", "temperature", True),
)


class ConnectorRuntime:
    __slots__ = ("agent", "evse", "hw", "waker", "sleep_until", "last", "poll_ms",
                 "idle_poll_ms", "meter_waker")

    def __init__(self, agent, evse, hardware, poll_ms, idle_poll_ms=None):
        self.agent = agent
        self.evse = evse
        self.hw = hardware
        self.waker = Waker()
        self.meter_waker = Waker()
        self.sleep_until = None
        self.poll_ms = poll_ms
        self.idle_poll_ms = idle_poll_ms or poll_ms
        self.last = {}

    def read_inputs(self, now):
        """The pilot every time (the debounce needs every change); the rest on change."""
        hw, evse = self.hw, self.evse
        high, low = hw.pilot.read()
        evse.pilot_sample(now, high, low)
        for device_name, read, feed, none_is_absent in CHANGE_FED:
            device = getattr(hw, device_name)
            if device is None:
                continue
            value = getattr(device, read)()
            if value is None and none_is_absent:
                continue
            if device_name not in self.last or self.last[device_name] != value:
                self.last[device_name] = value
                getattr(evse, feed)(now, value)

    def apply(self, command, now):
        name, value = command
        hw = self.hw
        if name == evse_mod.PILOT:
            mode, duty = value
            if mode == evse_mod.PWM:
                hw.pilot.set_pwm(duty)
            else:
                hw.pilot.set_static(mode)
        elif name == evse_mod.CONTACTOR:
            hw.contactor.set(value)
        elif name == evse_mod.LOCK:
            if hw.lock is not None:
                hw.lock.set(value)
        elif name == evse_mod.RCD_RESET:
            if hw.rcd is not None:
                hw.rcd.reset()
                self.last["rcd"] = hw.rcd.trip()
                self.evse.rcd_status(now, self.last["rcd"])
        elif name == evse_mod.READ_PP:
            if hw.pp is not None:
                self.last["pp"] = hw.pp.read_ohms()
                self.evse.pp_reading(now, self.last["pp"])
        elif name == evse_mod.METER_READ:
            self.meter_waker.wake()
        elif name == evse_mod.RCD_SELFTEST:
            if hw.rcd is not None:
                self.evse.rcd_selftest_result(now, hw.rcd.self_test())

    def assert_outputs(self, now):
        """Put the controller's outputs on the hardware as they stand, whatever a previous
        run left there: after a reboot a lock may still be closed, a PWM still running."""
        evse = self.evse
        for command in ((evse_mod.PILOT, (evse.pilot_mode, evse.duty)),
                        (evse_mod.CONTACTOR, evse.contactor_closed),
                        (evse_mod.LOCK, evse.locked)):
            self.apply(command, now)

    async def safety_loop(self):
        agent, evse, waker = self.agent, self.evse, self.waker
        self.assert_outputs(agent.now_ms())
        for device in (self.hw.pilot, self.hw.contactor, self.hw.rcd, self.hw.lock,
                       self.hw.pp, self.hw.thermometer):
            if device is not None:
                device.on_change = waker.wake
        while agent.running:
            now = agent.now_ms()
            self.read_inputs(now)
            evse.poll(now)
            agent.service(now)
            deadline = evse.next_deadline()
            if self.poll_ms:
                # polled inputs: fast while the contactor is closed (every reason to open it
                # is seen within poll_ms), slower with no power flowing, to spare the CPU
                tick = now + (self.poll_ms if evse.contactor_closed else self.idle_poll_ms)
                if deadline is None or tick < deadline:
                    deadline = tick
            self.sleep_until = deadline
            await waker.wait(None if deadline is None else deadline - now)

    async def meter_loop(self):
        agent, evse, meter = self.agent, self.evse, self.hw.meter
        period = evse.params.meter_poll_ms
        while agent.running:
            started = agent.now_ms()
            try:
                sample = await meter.read()
            except MeterError as error:
                evse.meter_failed(agent.now_ms(), str(error))
            else:
                if sample.timestamp_ms is None:
                    sample.timestamp_ms = started     # taken no earlier than the request
                evse.meter_sample(agent.now_ms(), sample)
            now = agent.now_ms()
            agent.service(now)
            delay = started + period - now
            if delay > 0:
                # until the next period, or at once when the controller wants a reading
                await self.meter_waker.wait(delay)

    def rearm(self):
        """Wake the safety task if the controller now wants to be called earlier."""
        deadline = self.evse.next_deadline()
        if deadline is not None and (self.sleep_until is None or deadline < self.sleep_until):
            self.waker.wake()


async def cancel_tasks(tasks):
    """Cancel the tasks and wait until each has finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass


class Agent:
    """All connectors of one station, the station logic, and whoever watches (timeline, OCPP)."""

    def __init__(self, station, hardware, poll_ms=0, now_ms=None, idle_poll_ms=None):
        self.station = station
        self.runtimes = []
        self.by_connector = {}
        for connector_id in sorted(station.evses):
            runtime = ConnectorRuntime(self, station.evses[connector_id],
                                       hardware[connector_id], poll_ms, idle_poll_ms)
            self.runtimes.append(runtime)
            self.by_connector[connector_id] = runtime
        self.observers = []      # called with (evse or None, event) for every event
        # an observer that raises (OCPP, a log: never the safety path) is told here, and the
        # loop that served it goes on: log(text), by default print
        self.log = print
        self.hooks = []          # called after every service pass (e.g. to re-check conditions)
        self.running = False
        self.now_ms = now_ms
        self._servicing = False

    def _notify(self, evse, event):
        for observer in self.observers:
            try:
                observer(evse, event)
            except Exception as error:
                self.log("%s failed on %s: %r" % (getattr(observer, "__name__", "observer"),
                                                  event[1], error))

    def service(self, now):
        """Apply every pending command, hand every event to the station and the observers,
        until nothing is left (a handler may cause more)."""
        if self._servicing:
            return
        self._servicing = True
        try:
            for _ in range(32):
                busy = False
                for runtime in self.runtimes:
                    evse = runtime.evse
                    commands = evse.take_commands()
                    for command in commands:
                        runtime.apply(command, now)
                    events = evse.take_events()
                    if commands or events:
                        busy = True
                    for event in events:
                        self.station.handle(evse, event)
                        self._notify(evse, event)
                events = self.station.take_events()
                for event in events:
                    busy = True
                    self._notify(None, event)
                if not busy:
                    break
        finally:
            self._servicing = False
        for runtime in self.runtimes:
            runtime.rearm()
        for hook in self.hooks:
            hook()

    def act(self, fn, *args):
        """Run a station/controller command from outside (scenario, OCPP) and service it."""
        now = self.now_ms()
        result = fn(now, *args)
        self.service(now)
        return result

    async def run(self):
        if self.now_ms is None:
            self.now_ms = loop_clock_ms()
        self.running = True
        tasks = []
        for runtime in self.runtimes:
            tasks.append(asyncio.create_task(runtime.safety_loop()))
            if runtime.hw.meter is not None:
                tasks.append(asyncio.create_task(runtime.meter_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            self.running = False
            for task in tasks:
                task.cancel()

    def stop(self):
        self.running = False
        for runtime in self.runtimes:
            runtime.waker.wake()

"""A small portable rig around one agent.evse.Evse (not a test module).

It plays the runtime (agent/runtime.py) and the hardware around the controller:
- a clock `now` (ms) that only moves through `advance(ms)`, which stops at every
  `next_deadline()`, every contactor feedback delivery and every meter sample on the way;
- an EV "truth" (letter A/B/C/D, diode shorted, CP shorted to PE) turned into plateau
  voltages with the portable model of hal/electrics.py;
- after every input it drains take_commands()/take_events() until both are empty:
  pilot -> recorded and the pilot re-sampled; contactor -> recorded, feedback after
  `travel_ms` unless welded / stuck open; lock -> recorded; rcd_reset / rcd_selftest /
  meter_read -> answered at once, as the runtime does.
- a meter task: one sample every params.meter_poll_ms while `meter_online`.

Portable: runs on CPython and MicroPython (integer math, no dataclasses/typing).
"""
from agent.evse import (
    CONTACTOR, LOCK, METER_READ, PILOT, RCD_RESET, RCD_SELFTEST, READ_PP, Evse,
)
from agent.params import Params
from agent.station import Station
from hal.electrics import ev_resistance
from hal.electrics import plateaus as electrics_plateaus
from hal.interfaces import MeterSample

# -- pilot electrics: the one model (hal/electrics.py, spec/standards.md §1.1) -----------------
EV_OHMS = {"B": ev_resistance(False, False), "C": ev_resistance(True, False),
           "D": ev_resistance(True, True)}


def plateaus(mode, letter, diode_shorted=False, cp_short=False):
    """(high_mv, low_mv) for a pilot mode and an EV letter (A = no EV)."""
    return electrics_plateaus(mode, EV_OHMS.get(letter), diode_shorted, cp_short)


class Rig:
    def __init__(self, timing=None, authorizer=None, travel_ms=25, pp_ohms=220, settle_ms=100,
                 meter_online=True, **evse_kw):
        """timing: Params overrides; authorizer: a LocalAuthorizer -> a Station in front;
        pp_ohms: the cable's PP resistor (the board then has a PP input); evse_kw: Evse(...).
        The rig starts at 0 ms with no EV and runs `settle_ms` so the CP is seen as A."""
        self.params = Params(timing)
        self.evse = Evse(self.params, **evse_kw)
        self.station = Station([self.evse], authorizer) if authorizer is not None else None
        self.now = 0
        self.travel_ms = travel_ms
        # the EV and the cable
        self.ev = "A"
        self.diode_shorted = False
        self.cp_short = False
        self.has_pp = pp_ohms is not None
        self.pp_ohms = pp_ohms       # the cable's resistor
        self.pp = None               # what the PP input reads now (None = open)
        self._last_pp = -1
        # hardware as commanded / as it reports
        self.pilot = ("x1", 0)
        self.contactor = False
        self.feedback = False
        self.welded = False
        self.stuck_open = False
        self._travel = []            # [(due, closed)] feedback movements on their way
        self.locked = False
        self.rcd = None              # latched trip flag: None, "ac", "dc"
        self.residual = False        # residual current still there: a reset fails
        self.selftest_ok = True
        self.meter_online = meter_online
        self.current_ma = 0
        self.energy_wh = 0
        self.next_meter = 0
        self.last_meter_at = None
        # logs
        self.commands = []           # (t, name, value)
        self.events = []             # the controller's events: (t, kind, ...)
        self.station_events = []
        self._tick()
        self.advance(settle_ms)

    # ------------------------------------------------------------------ the runtime
    def _tick(self):
        """One pass of the runtime's loop at `now`: feedback, meter, inputs, poll, service."""
        now, evse = self.now, self.evse
        while self._travel and self._travel[0][0] <= now:
            closed = self._travel.pop(0)[1]
            if closed != self.feedback:
                self.feedback = closed
                evse.contactor_feedback(now, closed)
                self._service()
        if self.meter_online and evse.has_meter and self.next_meter <= now:
            self._meter_sample()
        evse.pilot_sample(now, *self._plateaus())
        if self.has_pp and (self.pp != self._last_pp
                            or evse.plugged and evse.pp_ampacity_ma is None):
            self._last_pp = self.pp
            evse.pp_reading(now, self.pp)
        evse.poll(now)
        self._service()

    def _plateaus(self):
        return plateaus(self.pilot[0], self.ev, self.diode_shorted, self.cp_short)

    def _meter_sample(self):
        self.evse.meter_sample(self.now, MeterSample(
            energy_import_wh=self.energy_wh,
            current_ma=(self.current_ma, self.current_ma, self.current_ma)))
        self.last_meter_at = self.now
        self.next_meter = self.now + self.params.meter_poll_ms

    def _service(self):
        evse = self.evse
        for _ in range(64):
            commands = evse.take_commands()
            events = evse.take_events()
            if not commands and not events:
                return
            for event in events:
                self.events.append(event)
                if self.station is not None:
                    self.station.handle(evse, event)
            if self.station is not None:
                self.station_events.extend(self.station.take_events())
            for name, value in commands:
                self._apply(name, value)
        raise AssertionError("commands/events never settle")

    def _apply(self, name, value):
        now, evse = self.now, self.evse
        self.commands.append((now, name, value))
        if name == PILOT:
            self.pilot = value
            evse.pilot_sample(now, *self._plateaus())
        elif name == CONTACTOR:
            self.contactor = value
            moves = not (self.welded and not value) and not (self.stuck_open and value)
            if moves and evse.has_contactor_feedback:
                self._travel.append((now + self.travel_ms, value))
        elif name == LOCK:
            self.locked = value
        elif name == RCD_RESET:
            if not self.residual:
                self.rcd = None
            evse.rcd_status(now, self.rcd)
        elif name == RCD_SELFTEST:
            evse.rcd_selftest_result(now, self.selftest_ok)
        elif name == METER_READ:
            if self.meter_online and evse.has_meter:
                self._meter_sample()        # the meter answers at once (a fresh reading)
        elif name == READ_PP:
            if self.has_pp:
                self._last_pp = self.pp
                evse.pp_reading(now, self.pp)

    def _next_time(self):
        times = []
        deadline = self.evse.next_deadline()
        if deadline is not None:
            times.append(deadline)
        if self._travel:
            times.append(self._travel[0][0])
        if self.meter_online and self.evse.has_meter:
            times.append(self.next_meter)
        return min(times) if times else None

    def advance(self, ms):
        """Move the clock by `ms`, stopping at every deadline on the way."""
        end = self.now + ms
        stuck = 0
        while True:
            t = self._next_time()
            if t is None or t > end:
                break
            if t <= self.now:
                stuck += 1
                assert stuck < 100, "deadline %d does not move at %d" % (t, self.now)
                t = self.now
            else:
                stuck = 0
            self.now = t
            self._tick()
        self.now = end
        self._tick()

    def advance_to(self, t):
        self.advance(t - self.now)

    # ------------------------------------------------------------------ the EV and the world
    def plug(self, letter="B"):
        self.ev = letter
        if self.has_pp:
            self.pp = self.pp_ohms
        self._tick()

    def ev_ready(self, letter="C"):
        self.ev = letter
        self._tick()

    def ev_pause(self):
        self.ev = "B"
        self._tick()

    def unplug(self):
        if self.has_pp:          # the latch opens PP a moment before CP reaches A
            self.pp = None
            self._tick()
        self.ev = "A"
        self._tick()

    def set_ev(self, **kw):
        """diode_shorted=..., cp_short=..., pp=...: change the EV/cable and let the runtime read it."""
        for name in kw:
            setattr(self, name, kw[name])
        self._tick()

    def meter(self, current_ma, energy_wh=None):
        """The EV draws current_ma on every phase; the meter reads now (and every period)."""
        self.current_ma = current_ma
        if energy_wh is not None:
            self.energy_wh = energy_wh
        self._meter_sample()
        self._service()

    def trip_rcd(self, kind):
        self.rcd = kind
        self.residual = True
        self.evse.rcd_status(self.now, kind)
        self._service()

    def release_contactor(self):
        """A welded contactor comes free (its feedback opens)."""
        self.welded = False
        if not self.contactor:
            self._travel.insert(0, (self.now, False))
        self._tick()

    # ------------------------------------------------------------------ station / operator inputs
    def authorize(self, tag="TAG"):
        if self.station is not None:
            self.station.present_token(self.now, tag)
            self.station_events.extend(self.station.take_events())
        else:
            self.evse.authorize(self.now, tag)
        self._service()

    def call(self, method, *args):
        """Any other input of the controller, at `now`: call("rcd_status", None)."""
        getattr(self.evse, method)(self.now, *args)
        self._service()

    def stop(self, reason="local"):
        self.call("stop", reason)

    def set_limit(self, limit_ma):
        self.call("set_limit", limit_ma)

    def set_available(self, available):
        self.call("set_available", available)

    def reset_faults(self):
        self.call("reset_faults")

    def temperature(self, deci_c):
        self.call("temperature", deci_c)

    def charge(self, tag="TAG"):
        """Plug in, authorize, EV ready; returns once the contactor reports closed."""
        self.plug()
        self.advance(100)
        self.authorize(tag)
        self.advance(100)
        self.ev_ready()
        self.advance(100)
        assert self.evse.state == "charging", self.evse.state
        assert self.feedback, "contactor did not close"

    # ------------------------------------------------------------------ what happened
    def log(self, name, since=0):
        """[(t, value)] of one command since time `since`."""
        return [(t, v) for t, n, v in self.commands if n == name and t >= since]

    def pilot_log(self, since=0):
        return [(t, mode, duty) for t, (mode, duty) in self.log(PILOT, since)]

    def events_of(self, kind, since=0):
        return [e for e in self.events if e[1] == kind and e[0] >= since]

    def contactor_at(self, closed, since=0):
        """Time of the last command that closed (True) / opened (False) the contactor."""
        times = [t for t, v in self.log(CONTACTOR, since) if v == closed]
        return times[-1] if times else None

    @property
    def contactor_closed_at(self):
        return self.contactor_at(True)

    @property
    def contactor_opened_at(self):
        return self.contactor_at(False)

    @property
    def session(self):
        return self.evse.state

    @property
    def cp(self):
        return self.evse.cp_state

    @property
    def faults(self):
        return self.evse.faults.codes()

    def faults_raised(self, since=0):
        return [(e[0], e[2]) for e in self.events_of("fault", since) if e[3]]

    def faults_cleared(self, since=0):
        return [(e[0], e[2]) for e in self.events_of("fault", since) if not e[3]]

"""The contactor rules as properties over random event sequences (hypothesis stateful).

The controller (`agent.evse.Evse`) is driven the way the runtime drives it: plateau voltages
computed by the simulator's pilot electrics from what the EV *really* shows and what the EVSE
drives, contactor feedback that follows the command (unless welded), meter samples, RCD trips,
PP, temperature, station commands, and time that advances through every deadline.

Invariants (IEC 61851-1 Table A.6 / A.5 via spec/standards.md §1.4, DESIGN.md §4):
1. A close command is only ever issued in C2/D2 (D only with ventilation), in a session that
   is charging, with no fault and no fault condition the controller has been told about.
2. Once a reason to open exists (EV left C/D, unplug, E, diode fault, RCD trip, over-
   temperature, ...), the contactor is commanded open within contactor_open_deadline_ms.
3. After the EVSE removes the PWM while the EV stays in C, the contactor is open no later
   than power_off_under_load_ms (+ the open deadline).
4. Every fault code the controller raises names a condition the test injected.
"""
import os

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from agent import evse as E
from agent.params import Params
from hal.interfaces import MeterSample
from simulator import electrics

VENTILATED_BOARDS = (False, True)

# time steps, dense around the standard's boundaries (5 ms debounce, 100 ms, 300 ms F,
# 5 s PWM interval, 6 s power-off-under-load, 7 s over-current, 10 s meter, 30 s wake-up)
BOUNDARIES = (1, 4, 5, 6, 19, 20, 21, 95, 100, 105, 295, 300, 305, 4990, 5000, 5010,
              5990, 6000, 6010, 6100, 6990, 7000, 7010, 9990, 10000, 29990, 30000, 34010)
ADVANCE = st.one_of(st.sampled_from(BOUNDARIES), st.integers(1, 50), st.integers(50, 2000),
                    st.integers(2000, 40000))


class Truth:
    """What the world really is, independent of what the controller believes."""

    def __init__(self):
        self.plugged = False
        self.s2 = False
        self.wants_d = False
        self.cp_short = False
        self.diode_short = False
        self.rcd_trip = None
        self.welded = False
        self.stuck_open = False
        self.temperature_dc = 250
        self.pp_ohms = 220
        self.ev_current_ma = 16000
        self.overdraw = False
        self.meter_dead = False

    def letter(self):
        if self.cp_short:
            return "E"
        if not self.plugged:
            return "A"
        if not self.s2:
            return "B"
        return "D" if self.wants_d else "C"


class SafetyMachine(RuleBasedStateMachine):
    @initialize(ventilation=st.sampled_from(VENTILATED_BOARDS), socket=st.booleans())
    def setup(self, ventilation, socket):
        self.params = Params()
        self.evse = E.Evse(self.params, ventilation=ventilation, socket=socket,
                           cable_max_current_ma=None if socket else 32000)
        self.truth = Truth()
        self.now = 0
        self.feedback_due = None      # (time, closed) of the contactor's mirror contact
        self.feedback = False
        self.open_reason_since = None
        self.reason_since = {}
        self.pwm_off_in_c_since = None
        self.injected = set()         # fault codes the world has given a reason for
        self.last_meter = 0
        self.evse.poll(0)
        self._settle()

    # ------------------------------------------------------------------ plumbing
    def _plateaus(self):
        truth, mode = self.truth, self.evse.pilot_mode
        load = None if not truth.plugged else electrics.ev_resistance(truth.s2, truth.wants_d)
        return electrics.plateaus(mode, load, diode_shorted=truth.plugged and truth.diode_short,
                                  cp_shorted=truth.cp_short)

    def _settle(self):
        """Apply commands like the runtime does; re-sample the pilot after output changes."""
        for _ in range(20):
            commands = self.evse.take_commands()
            self.evse.take_events()
            if not commands:
                break
            for name, value in commands:
                if name == E.CONTACTOR:
                    self._on_contactor_command(value)
                elif name == E.RCD_RESET:
                    if self.truth.rcd_trip and not self.feedback:  # de-energized: resets
                        self.truth.rcd_trip = None
                    self.evse.rcd_status(self.now, self.truth.rcd_trip)
                elif name == E.RCD_SELFTEST:
                    self.evse.rcd_selftest_result(self.now, True)
                elif name == E.READ_PP:
                    self.evse.pp_reading(self.now, self.truth.pp_ohms)
            self.evse.pilot_sample(self.now, *self._plateaus())
        self._track_reasons()
        self._check()

    def _on_contactor_command(self, closed):
        evse, truth = self.evse, self.truth
        if closed:
            # invariant 1, judged on what the controller knows at this instant
            assert evse.cp.state in ("C", "D"), evse.cp.state
            assert evse.cp.state == "C" or evse.ventilation
            assert evse.pilot_mode == E.PWM
            assert evse.state == "charging"
            assert not len(evse.faults), evse.faults.codes()
            assert evse.session_active
            assert truth.letter() in ("C", "D"), "close command while the EV shows " + \
                truth.letter()      # every reading reaches the controller at once here
            assert truth.rcd_trip is None
            assert truth.temperature_dc < self.params.temperature_stop_dc
        self.feedback_due = (self.now + 25, closed)

    def _open_reasons(self):
        truth, evse = self.truth, self.evse
        reasons = []
        letter = truth.letter()
        if letter not in ("C", "D") or (letter == "D" and not evse.ventilation):
            reasons.append("ev not in C")
        if truth.diode_short and truth.plugged and evse.pilot_mode == E.PWM:
            reasons.append("diode")     # only a running PWM has a low plateau to check
        if truth.rcd_trip:
            reasons.append("rcd")
        if truth.temperature_dc >= self.params.temperature_stop_dc:
            reasons.append("temperature")
        return reasons

    def _track_reasons(self):
        """Each reason to open keeps the time it began; the oldest one sets the deadline."""
        reasons = self._open_reasons()
        for gone in [r for r in self.reason_since if r not in reasons]:
            del self.reason_since[gone]
        for reason in reasons:
            self.reason_since.setdefault(reason, self.now)
        self.open_reason_since = min(self.reason_since.values()) if reasons else None
        if self.evse.pilot_mode == E.PWM or self.truth.letter() not in ("C", "D"):
            self.pwm_off_in_c_since = None
        elif self.pwm_off_in_c_since is None:
            self.pwm_off_in_c_since = self.now

    def _check(self):
        evse, p = self.evse, self.params
        if evse.contactor_closed and self.open_reason_since is not None:
            late = self.now - self.open_reason_since
            assert late <= p.contactor_open_deadline_ms, (
                "contactor still closed %d ms after %s" % (late, self._open_reasons()))
        if evse.contactor_closed and self.pwm_off_in_c_since is not None:
            assert self.now - self.pwm_off_in_c_since <= \
                p.power_off_under_load_ms + p.contactor_open_deadline_ms
        unexplained = set(evse.faults.codes()) - self.injected
        assert not unexplained, "faults with no cause: %s" % sorted(unexplained)

    def _advance_to(self, target):
        """Move time to `target`, stopping at every deadline and meter poll, as the runtime
        would."""
        while True:
            due = self.evse.next_deadline()
            meter_due = self.last_meter + self.params.meter_poll_ms
            if not self.truth.meter_dead and (due is None or meter_due < due):
                due = meter_due
            if self.feedback_due is not None and (due is None or self.feedback_due[0] < due):
                due = self.feedback_due[0]
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self._meter_silence()
            if self.feedback_due is not None and self.feedback_due[0] <= self.now:
                closed = self.feedback_due[1]
                self.feedback_due = None
                if self.truth.welded and self.feedback:
                    closed = True
                if self.truth.stuck_open:
                    closed = False
                self.feedback = closed
                self.evse.contactor_feedback(self.now, closed)
            if not self.truth.meter_dead and self.now >= meter_due:
                self._meter_sample(self.truth.ev_current_ma, self.truth.overdraw)
            self.evse.poll(self.now)
            self._settle()
        self.now = target
        self._meter_silence()
        self.evse.poll(self.now)
        self._settle()

    def _meter_silence(self):
        if self.now - self.last_meter >= self.params.meter_timeout_ms:
            self.injected.add("meter_lost")

    def _world_changed(self):
        self._track_reasons()
        self.evse.pilot_sample(self.now, *self._plateaus())
        self._settle()

    # ------------------------------------------------------------------ the EV
    @rule()
    def plug(self):
        if not self.truth.plugged:
            self.truth.plugged = True
            self.truth.s2 = False
            self._world_changed()
            if self.evse.socket:
                self.evse.pp_reading(self.now, self.truth.pp_ohms)
                self._settle()

    @rule()
    def unplug(self):
        self.truth.plugged = False
        self.truth.s2 = False
        self._world_changed()

    @rule(ready=st.booleans())
    def switch_s2(self, ready):
        if self.truth.plugged:
            self.truth.s2 = ready
            self._world_changed()

    @rule(wants_d=st.booleans())
    def ask_ventilation(self, wants_d):
        self.truth.wants_d = wants_d
        if wants_d:
            self.injected.add("ventilation_unavailable")
        self._world_changed()

    @rule(on=st.booleans())
    def cp_short(self, on):
        self.truth.cp_short = on
        if on:
            self.injected.add("state_e")
        self._world_changed()

    @rule(on=st.booleans())
    def diode_short(self, on):
        self.truth.diode_short = on
        if on:
            self.injected.add("diode_fault")
        self._world_changed()

    def _meter_sample(self, current, overdraw):
        drawn = 0
        if self.feedback and self.truth.letter() in ("C", "D"):
            drawn = current if overdraw else min(current, self.evse.offer_ma)
        if drawn > self.evse.offer_ma:
            self.injected.add("over_current")
        self.last_meter = self.now
        self.evse.meter_sample(self.now, MeterSample(
            energy_import_wh=self.now // 1000, current_ma=(drawn, drawn, drawn)))
        self._settle()

    @rule(current=st.integers(0, 40000), overdraw=st.booleans())
    def ev_draw(self, current, overdraw):
        self.truth.ev_current_ma, self.truth.overdraw = current, overdraw
        self._meter_sample(current, overdraw)

    @rule(dead=st.booleans())
    def meter_dies(self, dead):
        self.truth.meter_dead = dead

    # ------------------------------------------------------------------ the hardware
    @rule(kind=st.sampled_from(("ac", "dc")))
    def rcd_trip(self, kind):
        self.truth.rcd_trip = kind
        self.injected.add("rcd_" + kind)
        self.evse.rcd_status(self.now, kind)
        self._world_changed()

    @rule(welded=st.booleans(), stuck_open=st.booleans())
    def contactor_fault(self, welded, stuck_open):
        self.truth.welded, self.truth.stuck_open = welded, stuck_open
        if welded:
            self.injected.add("contactor_welded")
        if stuck_open:
            self.injected.add("contactor_not_closed")
        self._settle()

    @rule(temperature=st.integers(100, 900))
    def temperature(self, temperature):
        self.truth.temperature_dc = temperature
        if temperature >= self.params.temperature_stop_dc:
            self.injected.add("over_temperature")
        self.evse.temperature(self.now, temperature)
        self._world_changed()

    @precondition(lambda self: self.evse.socket)
    @rule(ohms=st.one_of(st.none(), st.integers(0, 5000)))
    def pp(self, ohms):
        self.truth.pp_ohms = ohms
        if E.pp_ampacity_ma(ohms) is None:
            self.injected.add("pp_fault")
        if self.truth.plugged:
            self.evse.pp_reading(self.now, ohms)
        self._settle()

    # ------------------------------------------------------------------ the station
    @rule(tag=st.sampled_from(("A", "B")))
    def authorize(self, tag):
        if self.evse.state in ("idle", "authorizing"):
            self.evse.authorize(self.now, tag)
            self._settle()

    @rule()
    def stop(self):
        self.evse.stop(self.now, E.STOP_REMOTE)
        self._settle()

    @rule(limit=st.integers(0, 40000))
    def set_limit(self, limit):
        self.evse.set_limit(self.now, limit)
        self._settle()

    @rule(available=st.booleans())
    def availability(self, available):
        self.evse.set_available(self.now, available)
        self._settle()

    @rule(keep=st.booleans())
    def session_outlives_unplug(self, keep):
        """OCPP StopTransactionOnEVSideDisconnect = false keeps the session over an unplug."""
        self.evse.stop_on_ev_disconnect = not keep

    @rule()
    def operator_reset(self):
        self.evse.reset_faults(self.now)
        self._settle()

    @rule()
    def drive_to_charging(self):
        """The common path (plug, authorize, EV ready), so most runs reach the contactor."""
        self.plug()
        self._advance_to(self.now + 50)
        self.authorize("A")
        self.switch_s2(True)
        self._advance_to(self.now + 100)

    # ------------------------------------------------------------------ time
    @rule(ms=ADVANCE)
    def advance(self, ms):
        self._advance_to(self.now + ms)

    @rule(how=st.sampled_from(("stop", "limit", "unavailable")), ms=ADVANCE)
    def evse_withdraws_power(self, how, ms):
        """The EVSE ends or suspends charging while the EV may stay in C (Table A.6 10.2)."""
        self.drive_to_charging()
        if how == "stop":
            self.stop()
        elif how == "limit":
            self.set_limit(0)
        else:
            self.availability(False)
        self._advance_to(self.now + ms)

    @invariant()
    def rules_hold(self):
        self._check()


# 400 sequences x 60 steps locally (~10 s); CI runs 1500 (SAFETY_EXAMPLES overrides both)
EXAMPLES = int(os.environ.get("SAFETY_EXAMPLES") or (1500 if os.environ.get("CI") else 400))
TestSafety = SafetyMachine.TestCase
TestSafety.settings = settings(max_examples=EXAMPLES, stateful_step_count=60, deadline=None)

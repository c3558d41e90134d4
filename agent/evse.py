"""One connector's IEC 61851 controller: a CP layer and a session layer, both tables (sans-I/O).

Inputs are method calls carrying the current time in ms (pilot plateaus, contactor feedback,
RCD, meter, PP, temperature, station commands). Outputs are commands (`take_commands`) for the
HAL, events (`take_events`) for the station and the timeline, and `next_deadline()`, the one
time at which `poll` must be called if nothing else happens. No I/O, no clock of its own:
the asyncio runtime, the MicroPython runtime and the virtual-time simulator all drive it.

Layers:
- CP layer (`CP_MACHINE`): confirmed pilot states A..F (from `PilotReader`) -> EV events
  (plugged, unplugged, ev_ready, ev_paused) and pilot faults.
- Session layer (`SESSION_MACHINE`): idle, authorizing, ready, charging, suspended_ev,
  suspended_evse, finishing, faulted, unavailable. On a socket the PP also tells whether a
  cable sits in it with no EV on the other end: a cable left there after the EV drove off
  keeps the connector finishing (not free) until it is taken out.
- Outputs (`_update_outputs`): pilot mode/duty, contactor and lock are *derived* from the two
  states, the faults and the timers in one place, so the safety rule reads in a few lines.
"""
from agent.faults import FaultSet
from agent.fsm import ANY, Machine
from agent.pilot import MAX_CURRENT_MA, PilotReader, duty_for_current, offer_for_current

# pilot output modes (the HAL's Pilot takes these)
PWM = "pwm"   # +-12 V 1 kHz, duty in permille
X1 = "x1"     # static +12 V: no current offered
F = "f"       # static -12 V: EVSE not available / fault
E = "e"       # 0 V (only boards that declare support)

# commands, as tuples (name, value)
PILOT = "pilot"          # (PILOT, (mode, duty_permille))
CONTACTOR = "contactor"  # (CONTACTOR, closed)
LOCK = "lock"            # (LOCK, locked)
RCD_RESET = "rcd_reset"
RCD_SELFTEST = "rcd_selftest"
READ_PP = "read_pp"      # read the proximity pilot now (at plug-in, before offering current)
METER_READ = "meter_read"  # read the meter now (the stop reading of a session)

# stop reasons (OCPP maps them to its own names)
STOP_LOCAL = "local"
STOP_REMOTE = "remote"
STOP_EV_DISCONNECTED = "ev_disconnected"
STOP_REBOOT = "reboot"
STOP_POWER_LOSS = "power_loss"
STOP_OTHER = "other"

ACTIVE = ("ready", "charging", "suspended_ev", "suspended_evse")

# Proximity pilot: (low, high] ohms -> cable ampacity in mA. Conservative decoding as in
# EVerest YetiSimulator: a value between two nominal ranges takes the lower ampacity.
PP_AMPACITY = (
    (80, 140, 63000),      # 63 A three-phase / 70 A single-phase
    (140, 308, 32000),
    (308, 936, 20000),
    (936, 2460, 13000),
)


def pp_ampacity_ma(ohms, phases=3):
    """Cable ampacity for a PP resistance, or None when it is out of every range."""
    if ohms is None:
        return None
    for low, high, ampacity in PP_AMPACITY:
        if low < ohms <= high:
            if ampacity == 63000 and phases == 1:
                return 70000
            return ampacity
    return None


CP_MACHINE = Machine(
    "cp", "unknown", ("unknown", "A", "B", "C", "D", "E", "F"),
    (
        (("unknown", "B", "C", "D", "E", "F"), "A", "A", None, "cp_unplugged"),
        (("unknown", "A", "E", "F"), "B", "B", None, "cp_connected"),
        (("C", "D"), "B", "B", None, "cp_power_withdrawn"),
        ("A", "C", "C", None, "cp_connected_simplified"),
        (("unknown", "E", "F"), "C", "C", None, "cp_connected_ready"),
        ("B", "C", "C", None, "cp_power_requested"),
        ("D", "C", "C", None, None),
        ("A", "D", "D", None, "cp_connected_simplified"),
        (("unknown", "E", "F"), "D", "D", None, "cp_connected_ready"),
        ("B", "D", "D", None, "cp_power_requested"),
        ("C", "D", "D", None, None),
        (ANY, "E", "E", None, None),
        (ANY, "F", "F", None, None),
    ),
)

# Faults that are simply what the pilot shows: raised while the CP is seen in that state,
# cleared once it is seen in another (not while the EVSE drives F and cannot see it).
CP_FAULTS = (
    ("D", "ventilation_unavailable"),    # only on boards without ventilation
    ("E", "state_e"),
    ("F", "pilot_fault"),                # -12 V although the EVSE does not drive F
)

SESSION_MACHINE = Machine(
    "session", "idle",
    ("idle", "authorizing", "ready", "charging", "suspended_ev", "suspended_evse",
     "finishing", "faulted", "unavailable"),
    (
        # the EV was plugged through a power cut that ended its transaction (PowerLoss):
        # its session is over, the cable is still in (OCTT TC_032_2: Finishing)
        ("idle", "plug", "finishing", "ended_before_reboot", "finish_recovered"),
        ("idle", "plug", "ready", "pre_authorized", "start_session"),
        ("idle", "plug", "authorizing", None, None),
        ("idle", "authorize", None, None, "remember_authorization"),
        ("authorizing", "authorize", "ready", None, "start_session"),
        ("authorizing", "unplug", "idle", None, None),
        (("ready", "suspended_ev"), "ev_ready", "charging", "offering", None),
        (("ready", "suspended_ev"), "ev_ready", "suspended_evse", None, None),
        ("charging", "ev_paused", "suspended_ev", None, None),
        (("ready", "charging", "suspended_ev"), "offer_off", "suspended_evse", None, None),
        ("suspended_evse", "offer_on", "charging", "requesting", None),
        ("suspended_evse", "offer_on", "suspended_ev", "has_charged", None),
        ("suspended_evse", "offer_on", "ready", None, None),
        ("ready", "wakeup_expired", "suspended_ev", None, None),
        (ACTIVE, "stop", "finishing", None, "end_session"),
        # OCPP StopTransactionOnEVSideDisconnect = false: the session outlives the unplug
        (ACTIVE, "unplug", "suspended_ev", "keeps_session_on_unplug", None),
        ("suspended_ev", "plug", None, None, None),
        # the EV left, its cable is still in the socket: the session is over but the
        # connector is not free yet (OCPP 1.6 Finishing "cable still in", OCTT TC_005_1)
        (ACTIVE, "unplug", "finishing", "cable_in_socket", "end_session_disconnected"),
        (ACTIVE, "unplug", "idle", None, "end_session_disconnected"),
        ("finishing", "unplug", None, "cable_in_socket", None),
        ("finishing", "unplug", "idle", None, None),
        ("finishing", "cable_removed", "idle", None, None),
        # an EV plugged into the cable left in the socket: a new plug-in, a new session
        ("finishing", "plug", "authorizing", None, "forget_ended_session"),
        # a disable scheduled behind a session waits for its end (the stop reading) too
        (("idle", "authorizing", "finishing"), "disable", "unavailable", "!ending", None),
        (ACTIVE, "disable", None, None, "schedule_disable"),
        ("unavailable", "enable", "idle", None, None),
        (ANY, "fault", "faulted", None, None),
        ("faulted", "stop", None, "in_session", "end_session"),
        ("faulted", "unplug", None, "in_session", "end_session_disconnected"),
        ("faulted", "cleared", "unavailable", "disabled", None),
        # before "!plugged": a session that ended with its cable left in the socket is
        # still Finishing (entry checks whether the EV or the cable has left meanwhile)
        ("faulted", "cleared", "finishing", "session_ended", None),
        # a session that outlived its EV (StopTransactionOnEVSideDisconnect = false) goes on
        ("faulted", "cleared", "suspended_ev", "session_without_ev", None),
        ("faulted", "cleared", "idle", "!plugged", None),
        ("faulted", "cleared", "authorizing", "!in_session", None),
        ("faulted", "cleared", "suspended_evse", "!offering", None),
        ("faulted", "cleared", "charging", "requesting", None),
        ("faulted", "cleared", "suspended_ev", "has_charged", None),
        ("faulted", "cleared", "ready", None, None),
    ),
    entry={"idle": "enter_idle", "ready": "enter_ready", "finishing": "enter_finishing",
           "unavailable": "enter_unavailable", "faulted": "enter_faulted"},
)

# timers: name -> method run when it expires
TIMERS = {
    "fault_f": "_timer_pilot_f_over",
    "wakeup_step": "_timer_pilot_f_over",
    "wakeup": "_timer_wakeup",
    "paused_by_ev": "_timer_paused_by_ev",
    "power_off_under_load": "_timer_refresh",
    "pwm_update": "_timer_refresh",
    "unlock_in_f": "_timer_refresh",
    "contactor_feedback": "_timer_contactor_feedback",
    "lock_feedback": "_timer_lock_feedback",
    "over_current": "_timer_over_current",
    "meter": "_timer_meter",
    "stop_reading": "_timer_stop_reading",
    "connection": "_timer_connection",
    "rcd_selftest": "_timer_rcd_selftest",
    "pp": "_timer_pp",
}


class CpModel:
    """The CP layer's state holder; `state` is what CP_MACHINE reads and writes."""
    __slots__ = ("state", "evse")

    def __init__(self, evse):
        self.state = CP_MACHINE.initial
        self.evse = evse

    def cp_unplugged(self, _):
        self.evse._ev_presence(False, False)

    def cp_connected(self, _):
        self.evse._ev_presence(True, False)

    def cp_connected_ready(self, _):
        self.evse._ev_presence(True, True)

    def cp_connected_simplified(self, _):
        # A->C without B: "simplified mode" (EVerest caps it if simplified_mode_limit_ma is set)
        self.evse.simplified_mode = True
        self.evse._ev_presence(True, True)

    def cp_power_requested(self, _):
        self.evse._ev_presence(True, True)

    def cp_power_withdrawn(self, _):
        self.evse._ev_presence(True, False)



class Evse:
    """The controller of one connector. See the module docstring for the shape."""

    def __init__(self, params, connector_id=1, max_current_ma=32000, phases=3,
                 socket=True, cable_max_current_ma=None, ventilation=False,
                 contactor_feedback=True, lock_feedback=False, has_meter=True,
                 has_rcd=True, supports_state_e=False, meter_lost_continues=False):
        self.params = params
        self.connector_id = connector_id
        self.max_current_ma = max_current_ma
        self.phases = phases
        self.socket = socket
        self.cable_max_current_ma = cable_max_current_ma
        self.ventilation = ventilation
        self.has_contactor_feedback = contactor_feedback
        self.has_lock_feedback = lock_feedback
        self.has_meter = has_meter
        # a lost meter stops charging (fault meter_lost), or, where the operator chose so,
        # charging goes on with the energy estimated from the last power reading (flagged)
        self.meter_lost_continues = meter_lost_continues
        self.meter_lost_since = None    # estimating since (ms), with meter_lost_continues
        self.estimate_power_w = 0       # the last power the meter read
        self.estimate_wms = 0           # estimated energy since then, W x ms
        self.estimate_since = None
        self.has_rcd = has_rcd
        self.supports_state_e = supports_state_e

        self.reader = PilotReader(params)
        self.cp = CpModel(self)
        self.state = SESSION_MACHINE.initial      # session layer state
        self._reported_state = self.state
        self.faults = FaultSet()
        self.now = 0

        # EV as the pilot shows it
        self.plugged = False
        self.requesting = False
        # a socket's cable as its PP shows it, with or without an EV on the other end
        self.cable_in_socket = False
        self.cable_left_by_ev = False   # the EV left during its session, the cable stayed in
        # session
        self.session_active = False
        self.session_ended_occupied = False     # ended, but the EV or its cable is still in
        self.session_tag = None
        self.session_started_ms = None
        self.energy_start_wh = None
        self.energy_stop_wh = None
        self.stop_pending = None        # (reason, since ms): the stop reading is awaited
        self.energy_read_ms = None      # when energy_wh was read
        self.has_charged = False
        self.wakeup_done = False
        self.pending_tag = None
        self.disabled = False
        self.disable_scheduled = False
        # limits (mA)
        self.limit_ma = max_current_ma
        self.pp_ampacity_ma = None
        self.derate_pct = 100
        self.simplified_mode = False
        # outputs as commanded
        self.pilot_mode = X1
        self.duty = 0
        self.offer_ma = 0
        self.last_offer_ma = 0
        self.duty_changed_ms = None
        self.pilot_mode_since = 0
        self.f_until = None
        self.pwm_off_under_load_ms = None
        self.contactor_closed = False
        self.locked = False
        # feedback / measurements
        self.feedback_closed = False
        self.lock_feedback_locked = False
        self.meter = None
        self.energy_wh = None
        self.temperature_dc = None

        self._operator_reset = False
        self.force_unlocked = False
        self.stop_on_ev_disconnect = True      # OCPP StopTransactionOnEVSideDisconnect
        self.unlock_on_ev_disconnect = True    # OCPP UnlockConnectorOnEVSideDisconnect
        self.stop_tag = None                   # who stopped the session, if not its own tag
        self.start_reported = False            # session_started sent (after the lock locked)
        self.ended_before_reboot = False       # set at boot for a transaction cut by power loss
        self._timers = {}
        self._commands = []
        self._events = []
        self._started = False

    # ---------------------------------------------------------------- outputs for the shells
    def take_commands(self):
        commands, self._commands = self._commands, []
        return commands

    def take_events(self):
        events, self._events = self._events, []
        return events

    def next_deadline(self):
        deadline = self.reader.deadline()
        for due in self._timers.values():
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    # ---------------------------------------------------------------- derived views
    @property
    def cp_state(self):
        """A1 B1 B2 C1 C2 D1 D2 E F as IEC 61851 names them (x1 = no PWM, x2 = PWM)."""
        if self.pilot_mode == F:
            return "F"
        letter = self.cp.state
        if letter in ("E", "F"):
            return letter
        if letter == "unknown":
            return "?"
        return letter + ("2" if self.pilot_mode == PWM else "1")

    def offered_ma(self):
        """The current the running PWM offers (0 without PWM). This is the encodable offer,
        16 A for 26.7 %, not the 16.02 A an EV decodes from the rounded duty."""
        if self.pilot_mode != PWM:
            return 0
        return self.offer_ma

    def target_ma(self):
        """The current the EVSE wants to offer: the smallest of every limit."""
        if self.has_meter and self.energy_wh is None and self.meter_lost_since is None:
            # not read even once (booting, or never answered): what flowed now no transaction
            # could count; the meter's first answer, or its loss (meter_lost), decides
            return 0
        target = min(self.max_current_ma, self.limit_ma)
        cable = self.pp_ampacity_ma if self.socket else self.cable_max_current_ma
        if cable is not None:
            target = min(target, cable)
        if self.simplified_mode and self.params.simplified_mode_limit_ma:
            target = min(target, self.params.simplified_mode_limit_ma)
        return target * self.derate_pct // 100

    def session_energy_wh(self):
        """Energy of the current session, or of the last one once it ended (frozen at the
        stop reading, as the transaction's meterStop is)."""
        end = self.energy_register_wh() if self.energy_stop_wh is None else self.energy_stop_wh
        if self.energy_start_wh is None or end is None:
            return 0
        return end - self.energy_start_wh

    def energy_estimated_wh(self):
        """Energy added by estimate since the meter was lost (meter_lost_continues): the
        last power it read while the contactor is closed, in integer W x ms; 0 with a
        working meter."""
        self._accrue_estimate(self.now)
        return self.estimate_wms // 3600000

    def _accrue_estimate(self, now):
        if self.meter_lost_since is None:
            return
        if self.contactor_closed:
            self.estimate_wms += self.estimate_power_w * (now - self.estimate_since)
        self.estimate_since = now

    def energy_register_wh(self):
        """The meter's import register as last read, plus any estimate while it is lost."""
        if self.energy_wh is None:
            return None
        return self.energy_wh + self.energy_estimated_wh()

    # guards (named in the tables)
    def pre_authorized(self):
        return self.pending_tag is not None

    def offering(self):
        if self.disabled and not self.session_active:
            return False
        return offer_for_current(min(self.target_ma(), MAX_CURRENT_MA)) > 0

    def ending(self):
        return self.stop_pending is not None

    def settled(self):
        """No current can flow and no session is still ending: what a shutdown or a reboot
        waits for (the controller bounds the wait: power_off_under_load_ms plus the stop
        reading's timeout)."""
        return not self.contactor_closed and self.stop_pending is None

    def in_session(self):
        return self.session_active

    def session_ended(self):
        return self.session_ended_occupied

    def keeps_session_on_unplug(self):
        return not self.stop_on_ev_disconnect

    def session_without_ev(self):
        return self.session_active and not self.plugged

    # ---------------------------------------------------------------- inputs (HAL)
    def pilot_sample(self, now, high_mv, low_mv):
        """A plateau reading. Ignored while the EVSE drives F or E: it only shows itself then."""
        self.now = now
        if self.pilot_mode in (F, E):
            return
        self.reader.sample(now, high_mv, low_mv, self.pilot_mode == PWM)
        self._step(now)

    def contactor_feedback(self, now, closed):
        self.now = now
        self.feedback_closed = bool(closed)
        if self.feedback_closed == self.contactor_closed:
            self._timers.pop("contactor_feedback", None)
            if not closed:
                self._condition_gone("contactor_not_closed")
        if not closed:
            self._condition_gone("contactor_welded")
        self._step(now)

    def lock_feedback(self, now, locked):
        self.now = now
        self.lock_feedback_locked = bool(locked)
        if locked and self.session_active and not self.start_reported:
            self.start_reported = True
            self._event("session_started", self.session_tag)
        if self.lock_feedback_locked == self.locked:
            self._timers.pop("lock_feedback", None)
            self._condition_gone("lock_failure")
        self._step(now)

    def rcd_status(self, now, trip):
        """trip: None, "ac" or "dc" (the device's latched trip flag)."""
        self.now = now
        for kind in ("ac", "dc"):
            if trip == kind:
                self._raise("rcd_" + kind)
            else:
                self._condition_gone("rcd_" + kind)
        if self._operator_reset and trip is None:
            # the RCD reset that an operator reset asked for worked: finish that reset
            self._operator_reset = False
            self._clear_resolved()
        self._step(now)

    def rcd_selftest_result(self, now, passed):
        self.now = now
        if passed:
            self._condition_gone("rcd_selftest_failed")
        else:
            self._raise("rcd_selftest_failed")
        if self.params.rcd_selftest_interval_ms:
            self._timers["rcd_selftest"] = now + self.params.rcd_selftest_interval_ms
        self._step(now)

    def meter_sample(self, now, sample):
        """A fresh meter reading (hal.MeterSample: integer Wh, W, mA, dV)."""
        self.now = now
        self.meter = sample
        events_before = len(self._events)
        energy = sample.energy_import_wh
        if energy is not None:
            if self.energy_wh is not None and energy < self.energy_wh:
                self._event("info", "meter energy went backwards %d -> %d Wh: ignored"
                            % (self.energy_wh, energy))
                # the rest of the reading stands (current for over-current), not its register:
                # no transaction value may go down
                sample.energy_import_wh = self.energy_wh
            else:
                self.energy_wh = energy
                if self.session_active and self.energy_start_wh is None:
                    # the session began before any reading: this is its start reading
                    self.energy_start_wh = energy
                    self._event("session_energy_start", energy)
        if self.has_meter:
            self._timers["meter"] = now + self.params.meter_timeout_ms
            self._condition_gone("meter_lost")
            if self.meter_lost_since is not None:
                # its register counted on meanwhile: the estimate gives way to it
                self.meter_lost_since = self.estimate_since = None
                self.estimate_wms = 0
                self._event("meter_estimating", False)
        if sample.power_w is not None:
            self.estimate_power_w = max(0, sample.power_w)
        taken = now if sample.timestamp_ms is None else sample.timestamp_ms
        if energy is not None:
            self.energy_read_ms = taken
        pending = self.stop_pending
        if pending is not None and pending[1] is not None and taken >= pending[1]:
            self._report_stop(pending[0])
        self._check_over_current(now, sample)
        # A reading that raised, cleared or started nothing cannot change an output; skip the
        # derivation (once per second for hours) unless a timer is due anyway.
        if len(self._events) != events_before or self._timer_due(now):
            self._step(now)

    def meter_failed(self, now, reason):
        """A read failed; the fault comes only when no reading arrives for meter_timeout_ms."""
        self.now = now
        self._event("info", "meter read failed: %s" % reason)
        self._step(now)

    def pp_reading(self, now, ohms):
        """Proximity pilot resistance in ohms, None when open. Only sockets have a PP.
        Without an EV on the pilot it only says whether a cable sits in the socket (one
        left there when the EV drove off keeps the connector from being free)."""
        self.now = now
        if self.socket:
            cable_was_in = self.cable_in_socket
            self.cable_in_socket = ohms is not None
            if not self.plugged:
                self.pp_ampacity_ma = None
                if cable_was_in and not self.cable_in_socket:
                    self.cable_left_by_ev = False
                    self._event("info", "cable taken out of the socket")
                    self._fire("cable_removed")
            else:
                ampacity = pp_ampacity_ma(ohms, self.phases)
                if ampacity is None:
                    if "pp" not in self._timers and "pp_fault" not in self.faults:
                        self._timers["pp"] = now + self.params.pp_fault_ms
                else:
                    self._timers.pop("pp", None)
                    self._condition_gone("pp_fault")
                if ampacity != self.pp_ampacity_ma:
                    self.pp_ampacity_ma = ampacity
                    self._event("info", "cable ampacity %s" % (
                        "unknown" if ampacity is None else "%d A" % (ampacity // 1000)))
        self._step(now)

    def temperature(self, now, deci_c):
        self.now = now
        self.temperature_dc = deci_c
        p = self.params
        if deci_c >= p.temperature_stop_dc:
            self._raise("over_temperature")
        elif deci_c < p.temperature_restore_dc:
            self._condition_gone("over_temperature")
        # derating with hysteresis: step down at the thresholds, back up only below restore
        if deci_c >= p.temperature_derate_quarter_dc:
            derate = 25
        elif deci_c >= p.temperature_derate_half_dc:
            derate = min(self.derate_pct, 50)
        elif deci_c < p.temperature_restore_dc:
            derate = 100
        else:
            derate = self.derate_pct
        if derate != self.derate_pct:
            self.derate_pct = derate
            self._event("info", "temperature %d.%d C: offering %d %%"
                        % (deci_c // 10, deci_c % 10, derate))
        self._step(now)

    # ---------------------------------------------------------------- inputs (station)
    def authorize(self, now, tag):
        """The station accepted `tag` for this connector."""
        self.now = now
        self._fire("authorize", tag)
        self._step(now)

    def stop(self, now, reason=STOP_LOCAL):
        self.now = now
        self._fire("stop", reason)
        self._step(now)

    def set_limit(self, now, limit_ma):
        """External current limit (smart charging, load management); < 6 A suspends."""
        self.now = now
        self.limit_ma = max(0, min(int(limit_ma), self.max_current_ma))
        self._step(now)

    def set_available(self, now, available):
        self.now = now
        if available:
            self.disabled = False
            self.disable_scheduled = False
            self._fire("enable")
        else:
            self.disabled = True
            self._fire("disable")
        if self._started:
            # before the first step (availability restored as the agent is built, with no
            # clock yet) the start takes it: a step now would start the timers at time 0
            self._step(now)

    def unlock(self, now):
        """Operator unlock (OCPP UnlockConnector): refused during a session; otherwise the
        lock opens now, or as soon as the contactor is open. Returns True if accepted."""
        self.now = now
        if self.session_active or "lock_failure" in self.faults:
            return False        # a jammed lock cannot be reported as unlocked (TC_030)
        # takes effect once nothing is live: _lock_wanted keeps a live plug locked
        self.force_unlocked = True
        self._step(now)
        return True

    def unlock_outcome(self):
        """After unlock(): True once the plug is free (the lock is open and its feedback, if
        it has one, agrees), False if the lock failed, None while that is not known yet."""
        if "lock_failure" in self.faults:
            return False
        if self.locked or (self.has_lock_feedback and self.lock_feedback_locked):
            return None
        return True

    def reset_faults(self, now):
        """Operator reset: clears latched faults whose condition is gone (a contactor that
        welded and came free again, a failed self-test that passed since). Also asks a
        tripped RCD to reset."""
        self.now = now
        if "rcd_ac" in self.faults or "rcd_dc" in self.faults:
            self._operator_reset = True
            self._commands.append((RCD_RESET, None))
        self._clear_resolved()
        self._step(now)

    def _clear_resolved(self):
        for code in self.faults.clear_resolved():
            self._event("fault", code, False)
        if not len(self.faults) and self.state == "faulted":
            self._fire("cleared")

    def _timer_due(self, now):
        deadline = self.next_deadline()
        return deadline is not None and deadline <= now

    def poll(self, now):
        """Run whatever timers are due. Call at next_deadline(), or any time."""
        self.now = now
        self._step(now)

    # ---------------------------------------------------------------- the step
    def _step(self, now):
        if not self._started:
            self._started = True
            self._start(now)
        for _ in range(8):      # timers may cascade (F over -> X1 -> new deadlines); bounded
            due = [name for name in self._timers if self._timers[name] <= now]
            if not due:
                break
            for name in due:
                if name in self._timers and self._timers[name] <= now:
                    del self._timers[name]
                    getattr(self, TIMERS[name])(now)
        if self.reader.poll(now) or self.reader.state != self.cp.state:
            self._cp_update()
        self._update_offer()
        self._update_outputs(now)

    def _start(self, now):
        if self.has_meter:
            self._timers["meter"] = now + self.params.meter_timeout_ms
        if self.has_rcd:
            self._commands.append((RCD_SELFTEST, None))
        self._event("session", self.state)

    def _cp_update(self):
        reader = self.reader
        if reader.diode_fault:
            self._raise("diode_fault")
        else:
            self._condition_gone("diode_fault")
        letter = reader.state
        if letter != self.cp.state and letter != "unknown":
            CP_MACHINE.fire(self.cp, letter)
            self._event("cp", self.cp_state)
            for shown, code in CP_FAULTS:
                if letter == shown and not (shown == "D" and self.ventilation):
                    self._raise(code)
                else:
                    self._condition_gone(code)

    def _ev_presence(self, plugged, requesting):
        """Turn CP levels into session edges; repeated levels (after F) emit nothing."""
        if not plugged:
            self.ended_before_reboot = False    # the EV left during the power cut
        if plugged and not self.plugged:
            self.plugged = True
            self.cable_left_by_ev = False
            if self.socket:
                self._commands.append((READ_PP, None))
            self._fire("plug")
        if requesting != self.requesting:
            self.requesting = requesting
            if requesting:
                self._timers.pop("wakeup", None)
                self._timers.pop("paused_by_ev", None)
                self._fire("ev_ready")
            else:
                self._fire("ev_paused")
        if not plugged and self.plugged:
            self.plugged = False
            self.simplified_mode = False
            self.pp_ampacity_ma = None
            self._timers.pop("pp", None)
            self._condition_gone("pp_fault")
            for code in self.faults.unplugged():
                self._event("fault", code, False)
            if len(self.faults) and ("rcd_ac" in self.faults or "rcd_dc" in self.faults):
                self._commands.append((RCD_RESET, None))
            if self.cable_in_socket and self.session_active:
                # pulled out of the car only: the lock decides whether the driver may take
                # the cable (_lock_wanted, OCPP UnlockConnectorOnEVSideDisconnect)
                self.cable_left_by_ev = True
                self._event("info", "EV left, its cable is still in the socket")
            self._fire("unplug")
            if not len(self.faults) and self.state == "faulted":
                self._fire("cleared")

    def _fire(self, event, arg=None):
        SESSION_MACHINE.fire(self, event, arg)
        if self.state != self._reported_state:
            # entry actions may fire again (idle -> unavailable): report each state once
            self._reported_state = self.state
            self._event("session", self.state)

    # ---------------------------------------------------------------- session actions
    def finish_recovered(self, _):
        self.ended_before_reboot = False
        self.session_ended_occupied = True

    def remember_authorization(self, tag):
        self.pending_tag = tag
        self._timers["connection"] = self.now + self.params.connection_timeout_ms
        self._event("info", "token %s accepted: plug in within %d s"
                    % (tag, self.params.connection_timeout_ms // 1000))

    def start_session(self, tag):
        if self.stop_pending is not None:
            self._report_stop(self.stop_pending[0])     # the previous session ends first
        if tag is None:
            tag = self.pending_tag
        self.pending_tag = None
        self._timers.pop("connection", None)
        self.session_active = True
        self.stop_tag = None
        self.force_unlocked = False
        self.session_ended_occupied = False
        self.session_tag = tag
        self.session_started_ms = self.now
        self.energy_start_wh = self.energy_register_wh()
        self.energy_stop_wh = None
        self.has_charged = False
        self.wakeup_done = False
        # A socket with lock feedback starts the session (for OCPP: the transaction) only
        # once the plug is locked; a jammed lock is a lock fault, not a transaction (TC_024).
        self.start_reported = not (self.socket and self.has_lock_feedback
                                   and not self.lock_feedback_locked)
        if self.start_reported:
            self._event("session_started", tag)

    def end_session(self, reason):
        self._close_session(reason or STOP_LOCAL)
        self.session_ended_occupied = True

    def end_session_disconnected(self, _):
        self._close_session(STOP_EV_DISCONNECTED)
        self.session_ended_occupied = self.cable_in_socket

    def _close_session(self, reason):
        if not self.session_active:
            return
        self.session_active = False
        for name in ("wakeup", "paused_by_ev"):
            self._timers.pop(name, None)
        if self.has_meter and self.params.stop_reading_timeout_ms and \
                "meter_lost" not in self.faults and self.meter_lost_since is None:
            # the stop reading (meterStop) is taken once no current can flow: after the
            # contactor opened (the EV may draw for up to power_off_under_load_ms after the
            # stop). A reading taken earlier leaves that energy out of every transaction.
            self.stop_pending = (reason, None)
            self._timers["stop_reading"] = self.now + self.params.power_off_under_load_ms + \
                self.params.stop_reading_timeout_ms
        else:
            self._report_stop(reason)

    def _read_stop_once_open(self, now):
        """The contactor is open (its feedback agrees): ask the meter for the stop reading."""
        pending = self.stop_pending
        if pending is None or pending[1] is not None or self.contactor_closed or \
                self.feedback_closed:
            return
        self.stop_pending = (pending[0], now)
        self._commands.append((METER_READ, None))
        self._timers["stop_reading"] = now + self.params.stop_reading_timeout_ms

    def _report_stop(self, reason):
        self.stop_pending = None
        self._timers.pop("stop_reading", None)
        self.energy_stop_wh = self.energy_register_wh()
        self._event("session_ended", reason, self.session_energy_wh())
        if self.disabled:
            self._fire("disable")

    def schedule_disable(self, _):
        self.disable_scheduled = True
        self._event("info", "unavailable once the session ends")

    def forget_ended_session(self, _):
        self.session_ended_occupied = False
        self.session_tag = None

    def enter_idle(self, _):
        self.forget_ended_session(None)
        if self.disabled:
            self._fire("disable")

    def enter_ready(self, _):
        if self.params.legacy_wakeup_ms and not self.wakeup_done and not self.requesting:
            self._timers["wakeup"] = self.now + self.params.legacy_wakeup_ms

    def enter_finishing(self, _):
        if not self.plugged:
            # stopped with the EV gone: nothing to finish, unless its cable is still in
            # the socket (the "unplug" rows decide)
            self._fire("unplug")
        if self.state == "finishing" and self.disabled:
            self._fire("disable")

    def enter_unavailable(self, _):
        self.disable_scheduled = False

    def enter_faulted(self, _):
        self._timers.pop("wakeup", None)
        self._timers.pop("paused_by_ev", None)

    # ---------------------------------------------------------------- faults
    def _raise(self, code):
        if self.faults.raise_(code):
            self._event("fault", code, True)
            if self.contactor_closed or self.state == "charging":
                # Table A.5: a fault while charging shows F for >= 300 ms before X1
                if self.params.fault_state_f_ms:
                    self._drive_f(self.now + self.params.fault_state_f_ms, "fault_f")
            self._fire("fault")

    def _condition_gone(self, code):
        if self.faults.condition_gone(code, not self.plugged):
            self._event("fault", code, False)
            if not len(self.faults) and self.state == "faulted":
                self._fire("cleared")

    # ---------------------------------------------------------------- timers
    def _timer_pilot_f_over(self, now):
        self.f_until = None
        if "fault_f" in self._timers or "wakeup_step" in self._timers:
            return
        if self.state == "ready" and self.wakeup_done and self.params.paused_by_ev_ms:
            self._timers["paused_by_ev"] = now + self.params.paused_by_ev_ms

    def _timer_wakeup(self, now):
        # IEC 61851-1 A.5.3: the EV did not react to PWM: one E/F step to wake it
        if self.state == "ready" and not self.requesting:
            self.wakeup_done = True
            self._event("info", "EV did not start within %d s: wake-up step"
                        % (self.params.legacy_wakeup_ms // 1000))
            self._drive_f(now + self.params.wakeup_step_ms, "wakeup_step")

    def _timer_paused_by_ev(self, now):
        self._fire("wakeup_expired")

    def _timer_refresh(self, now):
        pass  # the expiry itself is the input: _update_outputs re-evaluates

    def _timer_contactor_feedback(self, now):
        if self.feedback_closed != self.contactor_closed:
            self._raise("contactor_not_closed" if self.contactor_closed else "contactor_welded")
        elif not self.contactor_closed:
            # the mirror contact agrees it is open: a contactor that failed to close never
            # moved, so no feedback edge will ever report it; this check is its all-clear
            self._condition_gone("contactor_not_closed")
            self._condition_gone("contactor_welded")

    def _timer_lock_feedback(self, now):
        if self.lock_feedback_locked != self.locked:
            self._raise("lock_failure")

    def _timer_over_current(self, now):
        self._raise("over_current")
        self._condition_gone("over_current")   # latched until unplug (table)

    def _timer_pp(self, now):
        if self.plugged and self.pp_ampacity_ma is None:
            self._raise("pp_fault")

    def _timer_meter(self, now):
        if self.meter_lost_continues:
            if self.meter_lost_since is None:
                self.meter_lost_since = self.estimate_since = now
                self.estimate_wms = 0
                self._event("meter_estimating", True)
                self._event("info", "meter lost: charging goes on, energy estimated from "
                            "%d W" % self.estimate_power_w)
        else:
            self._raise("meter_lost")
        if self.stop_pending is not None:
            self._report_stop(self.stop_pending[0])

    def _timer_stop_reading(self, now):
        pending = self.stop_pending
        if pending is not None:
            if pending[1] is None:
                self._event("info", "the contactor is still closed %d ms after the stop: the "
                            "last meter reading stands" % (self.params.power_off_under_load_ms
                                                           + self.params.stop_reading_timeout_ms))
            else:
                self._event("info", "no fresh meter reading within %d ms of the contactor "
                            "opening: the last one stands" % self.params.stop_reading_timeout_ms)
            self._report_stop(pending[0])

    def _timer_connection(self, now):
        if self.pending_tag is not None:
            self._event("info", "token %s expired: no plug-in" % self.pending_tag)
        self.pending_tag = None

    def _timer_rcd_selftest(self, now):
        if self.plugged or self.contactor_closed:
            self._timers["rcd_selftest"] = now + 60000   # only with no EV: try again later
        else:
            self._commands.append((RCD_SELFTEST, None))

    def _drive_f(self, until, timer):
        self.f_until = until
        self._timers[timer] = until

    # ---------------------------------------------------------------- protection
    def _check_over_current(self, now, sample):
        currents = sample.current_ma
        if not currents or not self.contactor_closed:
            self._timers.pop("over_current", None)
            return
        # in C1 (PWM just removed) the last offer still counts: the EV has 6 s to stop
        offered = self.last_offer_ma
        p = self.params
        limit = offered * (100 + p.over_current_tolerance_pct) // 100 + p.over_current_noise_ma
        drawn = max(c for c in currents if c is not None) if any(
            c is not None for c in currents) else 0
        if drawn > limit:
            if "over_current" not in self._timers:
                self._timers["over_current"] = now + p.over_current_ms
                self._event("info", "EV draws %d mA, more than %d mA allowed" % (drawn, limit))
        else:
            self._timers.pop("over_current", None)

    # ---------------------------------------------------------------- outputs
    def _update_offer(self):
        offering = self.offering()
        if self.state in ("ready", "charging", "suspended_ev") and not offering:
            self._fire("offer_off")
        elif self.state == "suspended_evse" and offering:
            self._fire("offer_on")

    def _wanted_pilot(self, now):
        if self.f_until is not None and now < self.f_until:
            return F, 0
        if self.state == "unavailable":
            # stay X1 while the power-off-under-load grace runs, then F
            return (X1, 0) if self.contactor_closed else (F, 0)
        if self.state in ("ready", "charging", "suspended_ev") and not len(self.faults) and \
                self.plugged and (self.pp_ampacity_ma is not None or not self.socket):
            # a socket offers nothing before the cable's rating is known (EVerest waits too)
            offer = offer_for_current(min(self.target_ma(), MAX_CURRENT_MA))
            if offer:
                return PWM, offer
        return X1, 0

    def _update_outputs(self, now):
        mode, offer = self._wanted_pilot(now)
        # EVerest IEC_PWM_MAX_UPDATE_INTERVAL: a running PWM changes duty at most every 5 s
        if mode == PWM and self.pilot_mode == PWM and offer != self.offer_ma:
            next_change = self.duty_changed_ms + self.params.pwm_update_interval_ms
            if now < next_change:
                self._timers["pwm_update"] = next_change
                offer = self.offer_ma
        if mode != self.pilot_mode or offer != self.offer_ma:
            self._set_pilot(now, mode, offer)

        closed = self._contactor_wanted(now)
        if closed != self.contactor_closed:
            self._accrue_estimate(now)
            self.contactor_closed = closed
            self._commands.append((CONTACTOR, closed))
            self._event("contactor", closed)
            if closed:
                self.has_charged = True
            if self.has_contactor_feedback:
                self._timers["contactor_feedback"] = now + self.params.contactor_feedback_ms

        self._read_stop_once_open(now)

        locked = self._lock_wanted(now)
        if self.socket and locked != self.locked:
            self.locked = locked
            self._commands.append((LOCK, locked))
            if self.has_lock_feedback:
                self._timers["lock_feedback"] = now + self.params.lock_feedback_ms

    def _set_pilot(self, now, mode, offer):
        previous = self.pilot_mode
        if mode == PWM:
            self.duty_changed_ms = now
        if previous == PWM and mode != PWM and self.contactor_closed:
            self.pwm_off_under_load_ms = now
            self._timers["power_off_under_load"] = now + self.params.power_off_under_load_ms
        if mode == PWM:
            self.pwm_off_under_load_ms = None
            self._timers.pop("power_off_under_load", None)
        if mode in (F, E) and previous not in (F, E):
            # the EVSE hides the EV while it drives F/E: forget what the pilot showed
            self.reader.reset()
            self.cp.state = "unknown"
            if self.params.unlock_in_f_ms:
                self._timers["unlock_in_f"] = now + self.params.unlock_in_f_ms
        self.pilot_mode = mode
        if mode == PWM:
            self.offer_ma = self.last_offer_ma = offer
            self.duty = duty_for_current(offer)
        else:
            self.offer_ma = self.duty = 0
        self.pilot_mode_since = now
        self._commands.append((PILOT, (mode, self.duty)))
        self._event("pilot", mode, self.duty)

    def _contactor_wanted(self, now):
        """The safety rule. Closed only in C2/D2, in a session that is charging, no fault;
        kept closed in C1/D1 for at most power_off_under_load_ms after the EVSE removed PWM
        (Table A.6 seq. 10.2) so an EV that is still drawing is not cut under load."""
        if len(self.faults):
            return False
        letter = self.cp.state
        if letter not in ("C", "D") or (letter == "D" and not self.ventilation):
            return False
        if self.pilot_mode == PWM:
            if not self.contactor_closed and self.socket and self.has_lock_feedback and \
                    not self.lock_feedback_locked:
                return False    # a socket is live only with its plug locked (EVerest policy)
            # close only on a settled pilot: a reading still in its debounce may be the EV
            # leaving C, and must not meet a contactor that closes in the meantime
            return self.state == "charging" and (self.contactor_closed or self.reader.settled())
        if self.pilot_mode == X1 and self.contactor_closed and \
                self.pwm_off_under_load_ms is not None:
            return now - self.pwm_off_under_load_ms < self.params.power_off_under_load_ms
        return False

    def _lock_wanted(self, now):
        if self.contactor_closed or self.feedback_closed:
            return True         # never release a plug that may be live
        if self.force_unlocked:
            return False
        if self.pilot_mode == F and now - self.pilot_mode_since >= self.params.unlock_in_f_ms:
            return False
        if self.cable_left_by_ev:
            # OCPP 1.6 §9.1: a transaction that outlives the EV keeps its cable locked
            # (StopTransactionOnEVSideDisconnect = false beats UnlockConnectorOnEVSideDisconnect);
            # after it, the cable is released only with UnlockConnectorOnEVSideDisconnect,
            # else it waits for an UnlockConnector (force_unlocked, above)
            return self.session_active or not self.unlock_on_ev_disconnect
        return self.session_active and self.plugged

    # ---------------------------------------------------------------- events
    def _event(self, kind, *data):
        self._events.append((self.now, kind) + data)

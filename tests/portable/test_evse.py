"""Behaviour of agent.evse.Evse (one connector, IEC 61851-1 Annex A) through tests/portable/rig.py.

Every figure is exact and comes from agent.params defaults (spec/standards.md §1.3-§3):
pilot debounce 20 ms (towards more power), release debounce 5 ms (towards less power),
contactor feedback travel 25 ms in the rig. The rig settles for 100 ms before a test starts.

Portable: plain functions and asserts, integer math; pytest runs it on CPython and
tests/mp_run.py on MicroPython.
"""
try:
    from portable.rig import Rig
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from rig import Rig
from agent.station import LocalAuthorizer

DEBOUNCE = 20          # pilot_debounce_ms
RELEASE = 5            # pilot_release_debounce_ms


def charging(**kw):
    """A rig with a session charging at 32 A (duty 533). Timeline: plug 100, B 120,
    authorize + PWM 200, EV ready 300, contactor closed 320, feedback 345, now 400."""
    r = Rig(**kw)
    r.charge()
    return r


def ready(**kw):
    """A rig with an authorized session, EV in B2 (PWM on since 200), now 300."""
    r = Rig(**kw)
    r.plug()
    r.advance(100)
    r.authorize()
    r.advance(100)
    assert r.session == "ready" and r.cp == "B2", (r.session, r.cp)
    return r


# -- normal session ----------------------------------------------------------------------------

def test_plug_then_authorize_starts_pwm_at_offered_duty():
    r = Rig()
    r.plug()
    assert r.now == 100
    r.advance(DEBOUNCE - 1)
    assert r.session == "idle"
    r.advance(1)
    assert (r.session, r.cp) == ("authorizing", "B1")
    assert r.pilot_log() == []              # no PWM before authorization
    r.advance(80)
    r.authorize("CARD1")
    assert (r.session, r.cp) == ("ready", "B2")
    assert r.pilot_log() == [(200, "pwm", 533)]     # 32 A -> 53.3 %
    assert r.evse.offered_ma() == 32000
    assert r.events_of("session_started") == [(200, "session_started", "CARD1")]
    assert r.log("lock") == [(200, True)]


def test_contactor_closes_one_debounce_after_b_to_c():
    r = ready()
    r.ev_ready()
    t = r.now
    r.advance(DEBOUNCE - 1)
    assert r.session == "ready" and r.log("contactor") == []
    r.advance(1)
    assert (r.session, r.cp) == ("charging", "C2")
    delay = r.contactor_closed_at - t
    # Table A.6 seq. 4 allows 3 s; the controller closes as soon as C is confirmed.
    assert delay == DEBOUNCE == 20
    assert delay <= r.params.contactor_close_deadline_ms == 3000
    r.advance(5000)
    assert r.feedback and r.faults == [] and r.log("contactor") == [(t + 20, True)]


def test_session_ended_on_unplug_reports_energy():
    r = Rig()
    r.meter(0, 1000)
    r.charge()
    r.meter(16000, 3500)
    r.unplug()
    t = r.now
    r.advance(100)
    # the stop reading once the contactor says it is open
    assert r.events_of("session_ended") == [
        (t + RELEASE + r.travel_ms, "session_ended", "ev_disconnected", 2500)]
    assert r.session == "idle"


def test_ev_pause_opens_after_release_debounce():
    r = charging()
    r.ev_pause()
    t = r.now
    r.advance(RELEASE - 1)
    assert r.contactor and r.session == "charging"
    r.advance(1)
    delay = r.contactor_opened_at - t
    assert delay == RELEASE == 5
    assert delay <= r.params.contactor_open_deadline_ms == 100
    assert (r.session, r.cp) == ("suspended_ev", "B2")
    assert r.pilot == ("pwm", 533)          # the offer stays for the EV to resume
    r.ev_ready()
    t = r.now
    r.advance(100)
    assert r.session == "charging" and r.contactor_closed_at == t + DEBOUNCE


def test_unplug_while_charging_opens_and_ends_session():
    r = charging()
    r.unplug()
    t = r.now
    r.advance(100)
    delay = r.contactor_opened_at - t
    assert delay == RELEASE and delay <= r.params.contactor_open_deadline_ms
    assert r.events_of("session_ended") == [
        (t + RELEASE + r.travel_ms, "session_ended", "ev_disconnected", 0)]
    assert (r.session, r.cp) == ("idle", "A1")
    assert r.pilot == ("x1", 0) and not r.locked


# -- the EVSE removes PWM while the EV stays in C (Table A.6 seq. 10.2) -------------------------

def test_stop_with_ev_in_c_opens_after_power_off_under_load():
    r = charging()
    r.advance(600)                          # now 1000
    r.stop()
    assert r.pilot_log(1000) == [(1000, "x1", 0)]
    assert r.session == "finishing" and r.cp == "C1"
    r.advance(5999)
    assert r.contactor and r.contactor_opened_at is None
    assert r.events_of("session_ended") == []       # the EV still draws: no stop reading yet
    r.advance(1)
    assert r.contactor_opened_at == 1000 + 6000
    assert r.params.power_off_under_load_ms == 6000
    r.advance(r.travel_ms)
    assert r.events_of("session_ended") == [(7000 + r.travel_ms, "session_ended", "local", 0)]


def test_stop_then_ev_to_b_opens_at_once():
    r = charging()
    r.advance(600)
    r.stop()
    r.advance(2000)
    r.ev_pause()                            # at 3000
    r.advance(100)
    assert r.contactor_opened_at == 3000 + RELEASE


def test_limit_below_6a_suspends_and_opens_after_6s():
    r = charging()
    r.advance(600)
    r.set_limit(5899)                       # < 5.9 A: no PWM (x1); 5.9-6.1 A still offers 6 A
    assert r.pilot_log(1000) == [(1000, "x1", 0)]
    assert r.session == "suspended_evse"
    r.advance(5999)
    assert r.contactor
    r.advance(1)
    assert r.contactor_opened_at == 7000
    r.set_limit(16000)                      # PWM back at once (x1 -> PWM is not throttled)
    assert r.pilot_log(7000) == [(7000, "pwm", 267)]
    assert r.session == "charging" and r.contactor_closed_at == 7000


def test_limit_below_6a_then_ev_to_b_opens_at_once():
    r = charging()
    r.advance(600)
    r.set_limit(0)
    r.advance(1000)
    r.ev_pause()                            # at 2000
    r.advance(100)
    assert r.contactor_opened_at == 2000 + RELEASE


# -- pilot F after a fault ----------------------------------------------------------------------

def test_fault_while_charging_shows_f_for_300ms_then_x1():
    r = charging()
    r.trip_rcd("ac")                        # at 400
    assert r.contactor_opened_at == 400
    assert r.session == "faulted"
    r.advance(1000)
    assert r.pilot_log(400) == [(400, "f", 0), (700, "x1", 0)]
    assert r.params.fault_state_f_ms == 300


def test_fault_in_b2_gives_x1_without_f():
    r = ready()
    r.trip_rcd("dc")                        # at 300
    r.advance(1000)
    assert r.pilot_log(300) == [(300, "x1", 0)]
    assert r.log("contactor") == []
    assert r.session == "faulted" and r.cp == "B1"


# -- PWM update interval --------------------------------------------------------------------

def test_pwm_duty_changes_at_most_once_per_5s():
    r = charging()
    r.advance(4800)                         # now 5200: 5 s since the PWM started at 200
    r.set_limit(16000)
    r.advance(1000)
    r.set_limit(10000)                      # at 6200: the next change is due at 10200
    r.advance(3999)
    assert r.pilot_log(5200) == [(5200, "pwm", 267)]
    r.advance(1)
    assert r.pilot_log(5200) == [(5200, "pwm", 267), (10200, "pwm", 167)]
    assert r.evse.offered_ma() == 10000


def test_limit_change_right_after_pwm_start_waits_5s():
    r = ready()
    r.set_limit(13000)                      # at 300; PWM started at 200
    r.advance(10000)
    assert r.pilot_log() == [(200, "pwm", 533), (5200, "pwm", 217)]


# -- legacy wake-up (IEC 61851-1 A.5.3) -------------------------------------------------------

def test_short_f_pulse_keeps_the_lock():
    # the 4 s wake-up step is F, but shorter than unlock_in_f_ms (5 s): the lock stays
    r = ready()
    assert r.log("lock") == [(200, True)]
    r.advance(200 + 30000 + 4000 + 10 - r.now)
    assert r.pilot_log()[1:] == [(30200, "f", 0), (34200, "pwm", 533)]
    assert r.log("lock") == [(200, True)]


def test_lock_released_after_five_seconds_in_f():
    # with a 6 s wake-up step the pilot sits in F long enough: unlock at exactly 5 s, then
    # lock again when the session offers current again (EVerest IECStateMachine)
    r = ready(timing={"wakeup_step_ms": 6000})
    r.advance(200 + 30000 + 5000 - 1 - r.now)
    assert r.log("lock") == [(200, True)]
    r.advance(1)
    assert r.log("lock") == [(200, True), (35200, False)]
    r.advance(1000)
    assert r.pilot_log()[1:] == [(30200, "f", 0), (36200, "pwm", 533)]
    assert r.log("lock") == [(200, True), (35200, False), (36200, True)]


def test_legacy_wakeup_f_step_then_suspended_ev():
    r = ready()                             # PWM since 200, EV stays in B
    r.advance(200 + 30000 - 1 - r.now)
    assert r.pilot_log() == [(200, "pwm", 533)]
    r.advance(1)
    assert r.pilot_log() == [(200, "pwm", 533), (30200, "f", 0)]
    r.advance(4000)
    assert r.pilot_log() == [(200, "pwm", 533), (30200, "f", 0), (34200, "pwm", 533)]
    r.advance(9999)
    assert r.session == "ready"
    r.advance(1)
    assert r.session == "suspended_ev" and r.now == 44200
    r.advance(60000)                        # one wake-up per session
    assert len(r.pilot_log()) == 3 and r.session == "suspended_ev"


def test_ev_ready_after_wakeup_charges():
    r = ready()
    r.advance(50000)
    assert r.session == "suspended_ev"
    r.ev_ready()
    t = r.now
    r.advance(100)
    assert r.session == "charging" and r.contactor_closed_at == t + DEBOUNCE


# -- state D (ventilation) ------------------------------------------------------------------

def test_state_d_refused_without_ventilation():
    r = ready()
    r.ev_ready("D")
    r.advance(2000)
    assert r.faults_raised() == [(300 + DEBOUNCE, "ventilation_unavailable")]
    assert r.log("contactor") == []
    assert r.session == "faulted" and r.pilot == ("x1", 0)


def test_state_d_fault_clears_when_ev_goes_back_to_b():
    r = ready()
    r.ev_ready("D")
    r.advance(2000)
    r.ev_pause()
    r.advance(100)
    assert r.faults == [] and r.session == "ready" and r.pilot == ("pwm", 533)


def test_state_d_accepted_with_ventilation():
    r = ready(ventilation=True)
    r.ev_ready("D")
    r.advance(2000)
    assert r.faults == [] and (r.session, r.cp) == ("charging", "D2")
    assert r.contactor_closed_at == 300 + DEBOUNCE


# -- fault clearing policies (agent/faults.py) --------------------------------------------------

def test_diode_fault_latched_until_unplug():
    r = Rig()
    r.set_ev(diode_shorted=True)
    r.plug()
    r.advance(100)
    r.authorize()                           # PWM at 200: the low plateau shows the short
    r.advance(100)
    assert r.faults_raised() == [(200 + RELEASE, "diode_fault")]
    assert r.pilot_log() == [(200, "pwm", 533), (205, "x1", 0)]
    r.advance(60000)
    assert r.faults == ["diode_fault"] and r.session == "faulted"
    r.unplug()
    t = r.now
    r.advance(100)
    assert r.faults_cleared() == [(t + RELEASE, "diode_fault")]
    assert r.session == "idle"


def test_state_e_clears_when_cp_leaves_e():
    r = ready()
    r.set_ev(cp_short=True)                 # at 300
    r.advance(1000)
    assert r.faults_raised() == [(305, "state_e")]
    assert r.pilot_log(300) == [(305, "x1", 0)] and r.session == "faulted"
    r.set_ev(cp_short=False)                # at 1300
    r.advance(1000)
    assert r.faults_cleared() == [(1300 + DEBOUNCE, "state_e")]
    assert r.session == "ready" and r.pilot_log(1300) == [(1320, "pwm", 533)]


def test_rcd_ac_latched_until_unplug_and_reset():
    r = charging()
    r.trip_rcd("ac")
    r.residual = False                      # residual current gone, device still latched
    r.advance(60000)
    assert r.faults == ["rcd_ac"] and r.session == "faulted"
    r.unplug()
    t = r.now
    r.advance(100)
    assert r.log("rcd_reset") == [(t + RELEASE, None)]
    assert r.faults_cleared() == [(t + RELEASE, "rcd_ac")]
    assert r.session == "idle" and r.rcd is None


def test_rcd_dc_latched_until_unplug_and_reset():
    r = charging()
    r.trip_rcd("dc")
    assert r.faults == ["rcd_dc"]
    r.residual = False
    r.rcd = None                            # even a device that forgot its trip: still latched
    r.call("rcd_status", None)
    r.advance(30000)
    assert r.faults == ["rcd_dc"] and r.session == "faulted"
    r.unplug()
    r.advance(100)
    assert r.faults == [] and r.session == "idle"


def test_rcd_still_tripped_at_unplug_stays_faulted():
    r = charging()
    r.trip_rcd("ac")                        # residual current stays: resets fail
    r.unplug()
    r.advance(1000)
    assert len(r.log("rcd_reset")) == 1
    assert r.faults == ["rcd_ac"] and r.session == "faulted"


def test_contactor_welded_detected_1000ms_after_open():
    r = charging()
    r.welded = True
    r.ev_pause()                            # at 400: open commanded at 405
    r.advance(RELEASE + 999)
    assert r.contactor_opened_at == 405 and r.faults == []
    r.advance(1)
    assert r.faults_raised() == [(1405, "contactor_welded")]
    assert r.session == "faulted" and r.locked
    r.unplug()
    r.advance(60000)
    assert r.faults == ["contactor_welded"] and r.session == "faulted"
    assert r.log("lock", 400) == []         # never unlocks a plug that may be live


def test_reset_keeps_welded_fault_until_feedback_opens():
    r = charging()
    r.welded = True
    r.ev_pause()
    r.advance(2000)
    r.unplug()
    r.advance(100)
    r.reset_faults()
    assert r.faults == ["contactor_welded"] and r.session == "faulted"
    r.release_contactor()
    assert r.faults == ["contactor_welded"]        # manual: feedback alone does not clear
    r.reset_faults()
    assert r.faults == [] and r.session == "idle"
    assert not r.locked


def test_contactor_not_closed_detected_1000ms_after_close():
    r = ready()
    r.stuck_open = True
    r.ev_ready()                            # close commanded at 320
    r.advance(DEBOUNCE + 999)
    assert r.faults == []
    r.advance(1)
    assert r.faults_raised() == [(1320, "contactor_not_closed")]
    assert r.contactor_opened_at == 1320
    r.advance(1000)                         # the contactor was commanded closed: F first
    assert r.pilot_log(1320) == [(1320, "f", 0), (1620, "x1", 0)]
    assert r.session == "faulted"


def test_contactor_not_closed_clears_at_unplug():
    # BUG (agent/evse.py): see the report. The fault's policy is "unplug", but it only clears
    # through contactor_feedback(), which the runtime calls when the feedback *changes*; the
    # feedback of a contactor stuck open never changes, so the fault stays forever (neither
    # unplug nor reset_faults clears it).
    r = ready()
    r.stuck_open = True
    r.ev_ready()
    r.advance(2000)
    assert r.faults == ["contactor_not_closed"]
    r.unplug()
    r.advance(2000)
    assert r.faults == [] and r.session == "idle"


def test_over_current_after_7000ms():
    r = charging()                          # offered 32 A: limit 32 * 1.10 + 0.5 = 35.7 A
    r.meter(35701)                          # at 400
    r.advance(6999)
    assert r.faults == [] and r.contactor
    r.advance(1)
    assert r.faults_raised() == [(7400, "over_current")]
    assert r.contactor_opened_at == 7400
    r.meter(0)
    r.advance(60000)
    assert r.faults == ["over_current"]     # latched until unplug
    r.unplug()
    r.advance(100)
    assert r.faults == [] and r.session == "idle"


def test_over_current_tolerance_and_restart():
    r = charging()
    r.meter(35700)                          # exactly the limit: allowed
    r.advance(20000)
    assert r.faults == []
    r.meter(40000)                          # at 20400
    r.advance(3000)
    r.meter(30000)                          # back under: the 7 s start again
    r.advance(1000)
    r.meter(40000)                          # at 24400
    r.advance(6999)
    assert r.faults == []
    r.advance(1)
    assert r.faults_raised() == [(31400, "over_current")]


def test_meter_lost_after_10s_and_clears_when_samples_return():
    r = charging()
    r.advance(600)
    r.meter_online = False
    last = r.last_meter_at
    assert last == 1000
    r.advance(last + 9999 - r.now)
    assert r.faults == []
    r.advance(1)
    assert r.faults_raised() == [(11000, "meter_lost")]
    assert r.contactor_opened_at == 11000
    r.advance(5000)
    r.meter_online = True
    r.meter(0)                              # at 16000
    assert r.faults_cleared() == [(16000, "meter_lost")]
    assert r.session == "charging" and r.contactor_closed_at == 16000


def test_temperature_derating_steps():
    r = charging()
    r.advance(4800)                         # now 5200, PWM changes allowed
    r.temperature(650)
    assert r.pilot_log(5200) == [(5200, "pwm", 267)]        # 50 %: 16 A
    r.advance(5000)
    r.temperature(680)
    assert r.pilot_log(10200) == [(10200, "pwm", 133)]      # 25 %: 8 A
    r.advance(5000)
    r.temperature(640)                      # between restore and half: stays at 25 %
    r.advance(5000)
    assert r.pilot_log(10201) == []
    r.temperature(619)                      # below restore: full current
    assert r.pilot_log(20200) == [(20200, "pwm", 533)]


def test_over_temperature_fault_clears_below_restore():
    r = charging()
    r.temperature(710)                      # at 400
    assert r.faults_raised() == [(400, "over_temperature")]
    assert r.contactor_opened_at == 400
    r.advance(1000)
    assert r.pilot_log(400) == [(400, "f", 0), (700, "x1", 0)]
    r.temperature(700)
    r.temperature(620)
    assert r.faults == ["over_temperature"]
    r.temperature(619)
    assert r.faults == [] and r.session == "charging"
    assert r.pilot_log(1400) == [(1400, "pwm", 533)]
    assert r.contactor_closed_at == 1400


def test_pp_fault_after_500ms_while_plugged_and_clears():
    r = ready(pp_ohms=220)
    r.set_ev(pp=5000)                       # at 300: out of every range
    r.advance(499)
    assert r.faults == []
    r.advance(1)
    assert r.faults_raised() == [(800, "pp_fault")]
    assert r.session == "faulted"
    r.set_ev(pp=220)
    assert r.faults == [] and r.session == "ready"


def test_no_pp_fault_at_unplug():
    r = charging(pp_ohms=220)
    r.unplug()                              # PP opens, CP reaches A 5 ms later
    r.advance(5000)
    assert r.faults_raised() == [] and r.session == "idle"


def test_pp_ampacity_caps_the_offer():
    for ohms, duty, offered in ((680, 333, 20000), (1500, 217, 13000), (220, 533, 32000),
                                (100, 533, 32000)):      # 63 A cable, 32 A board
        r = ready(pp_ohms=ohms)
        assert r.pilot_log() == [(200, "pwm", duty)], (ohms, r.pilot_log())
        assert r.evse.offered_ma() == offered


def test_pp_ampacity_caps_the_offer_with_preauthorized_token():
    # BUG (agent/evse.py): see the report. A token remembered before plug-in starts the PWM
    # the moment B is confirmed, before the PP has been read: 32 A on a 20 A cable, and the
    # 5 s PWM update interval keeps that offer until 5 s later.
    r = Rig(pp_ohms=680)
    r.authorize("CARD")                     # at 100, no EV yet: remembered
    r.plug()
    r.advance(6000)
    assert r.pilot_log() == [(120, "pwm", 333)], r.pilot_log()


# -- availability -----------------------------------------------------------------------------

def test_unavailable_while_idle_drives_f():
    r = Rig()
    r.set_available(False)
    assert r.session == "unavailable" and r.pilot_log() == [(100, "f", 0)]
    r.plug()
    r.advance(1000)
    assert r.session == "unavailable" and r.events_of("session_started") == []
    r.set_available(True)                   # at 1100
    r.advance(100)
    assert r.pilot_log(1100) == [(1100, "x1", 0)]
    assert r.session == "authorizing"       # the EV plugged meanwhile is seen now


def test_unavailable_during_session_applies_when_session_ends():
    r = charging()
    r.set_available(False)
    assert r.session == "charging" and r.pilot == ("pwm", 533) and r.contactor
    assert r.evse.disable_scheduled
    r.ev_pause()
    r.unplug()
    t = r.now
    r.advance(100)
    # the plug's PP opens first: no cable rating, so PWM stops at once; F once the session
    # has ended (its stop reading, after the contactor's feedback said open)
    assert r.session == "unavailable"
    (ended, _, _, _), = r.events_of("session_ended")
    assert ended >= t + RELEASE
    assert r.pilot_log(t) == [(t, "x1", 0), (ended, "f", 0)]
    r.set_available(True)
    assert r.session == "idle" and r.pilot == ("x1", 0)


def test_stop_with_scheduled_disable_keeps_power_off_under_load():
    # BUG (agent/evse.py): see the report. With a disable scheduled, stop() goes finishing ->
    # unavailable at once and the pilot jumps from PWM to F; _contactor_wanted() only keeps
    # the contactor closed in x1, so it opens under load at the stop instead of after
    # power_off_under_load_ms (Table A.6 seq. 10.2) while the EV is still in C.
    r = charging()
    r.set_available(False)
    r.advance(600)
    r.stop()                                # at 1000, the EV stays in C
    r.advance(5999)
    assert r.contactor_opened_at is None, r.log("contactor")
    r.advance(1)
    assert r.contactor_opened_at == 7000
    r.advance(1000)
    assert r.session == "unavailable" and r.pilot == ("f", 0)


def test_enable_cancels_a_scheduled_disable():
    r = charging()
    r.set_available(False)
    r.set_available(True)
    r.unplug()
    r.advance(100)
    assert r.session == "idle" and r.pilot == ("x1", 0)


# -- operator reset -------------------------------------------------------------------------

def test_reset_does_not_clear_rcd_still_tripped():
    r = charging()
    r.trip_rcd("ac")
    r.advance(1000)
    r.reset_faults()
    assert r.log("rcd_reset") == [(1400, None)]
    assert r.faults == ["rcd_ac"] and r.session == "faulted"


def test_rcd_selftest_failure_is_manual():
    r = Rig(timing={"rcd_selftest_interval_ms": 60000})    # passed at start-up (0 ms)
    r.selftest_ok = False
    r.advance(60000 - r.now)
    assert r.log("rcd_selftest") == [(0, None), (60000, None)]
    assert r.faults_raised() == [(60000, "rcd_selftest_failed")] and r.session == "faulted"
    r.selftest_ok = True
    r.advance(60000)                        # passes now; the fault stays until a reset
    assert r.faults == ["rcd_selftest_failed"]
    r.reset_faults()
    assert r.faults == [] and r.session == "idle"


# -- station: authorization -------------------------------------------------------------------

def listed(**kw):
    return Rig(authorizer=LocalAuthorizer("list", ("GOOD",)), **kw)


def test_list_mode_rejects_unknown_tag():
    r = listed()
    r.plug()
    r.advance(100)
    r.authorize("BAD")
    r.advance(1000)
    assert r.session == "authorizing" and r.events_of("session_started") == []
    assert r.pilot_log() == []
    assert r.station_events == [(200, "token", "BAD", "Invalid", 1)]


def test_list_mode_accepts_listed_tag_and_same_tag_stops():
    r = listed()
    r.plug()
    r.advance(100)
    r.authorize("GOOD")
    assert r.session == "ready" and r.events_of("session_started") == [(200, "session_started", "GOOD")]
    r.ev_ready()
    r.advance(1000)
    r.authorize("OTHER")                    # another tag does not stop it
    assert r.session == "charging"
    r.authorize("GOOD")                     # at 1200
    assert r.session == "finishing"
    assert r.station_events[-1] == (1200, "token", "GOOD", "stop", 1)
    r.ev_pause()
    r.advance(100)
    assert [e[2:] for e in r.events_of("session_ended")] == [("local", 0)]


def test_token_before_plug_is_remembered():
    r = listed()
    r.authorize("GOOD")                     # at 100
    assert r.session == "idle" and r.evse.pending_tag == "GOOD"
    r.advance(59000)
    r.plug()
    r.advance(100)
    assert r.session == "ready"
    assert r.events_of("session_started") == [(59120, "session_started", "GOOD")]


def test_token_before_plug_is_forgotten_after_connection_timeout():
    r = listed()
    r.authorize("GOOD")                     # at 100
    r.advance(59999)
    assert r.evse.pending_tag == "GOOD"
    r.advance(1)
    assert r.evse.pending_tag is None and r.params.connection_timeout_ms == 60000
    r.plug()
    r.advance(100)
    assert r.session == "authorizing" and r.events_of("session_started") == []


def test_free_mode_starts_a_session_on_plug():
    r = Rig(authorizer=LocalAuthorizer())
    r.plug()
    r.advance(100)
    assert r.session == "ready"
    assert r.events_of("session_started") == [(120, "session_started", "FREE")]
    assert r.pilot_log() == [(120, "pwm", 533)]

"""A meter that stops answering (agent.evse, agent.params meter_timeout_ms = 10 s): by default
the fault meter_lost stops charging (OCPP PowerMeterFailure); a board with
`[meter] on_failure = "continue"` charges on with the energy estimated from the last power
reading, in integers, and flagged (event meter_estimating, OCPP errorCode PowerMeterFailure).
Portable: runs under MicroPython too."""
try:
    from portable.rig import Rig
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from rig import Rig
from hal.interfaces import MeterSample


def charging_at_7360_w(**kw):
    r = Rig(**kw)
    r.charge()
    r.call("meter_sample", MeterSample(energy_import_wh=5000, power_w=7360,
                                       current_ma=(32000, 0, 0)))
    r.meter_online = False
    return r


def test_by_default_a_lost_meter_is_a_fault_that_stops_charging():
    r = charging_at_7360_w()
    lost_at = r.now
    r.advance(10000)
    assert r.evse.faults.codes() == ["meter_lost"]
    assert r.session == "faulted" and not r.contactor
    assert r.events_of("fault")[-1][0] == lost_at + 10000


def test_continue_charges_on_and_estimates_from_the_last_power():
    r = charging_at_7360_w(meter_lost_continues=True)
    lost_at = r.now
    r.advance(10000)
    assert not len(r.evse.faults)
    assert r.session == "charging" and r.contactor
    assert [e[2] for e in r.events_of("meter_estimating")] == [True]
    r.advance(3600000 - 10000)               # an hour after the last reading
    # 7360 W for the 50 min since the loss was declared (10 s after the last reading)
    assert r.evse.energy_estimated_wh() == 7360 * (3600000 - 10000) // 3600000
    assert r.evse.energy_register_wh() == 5000 + r.evse.energy_estimated_wh()
    assert r.now - lost_at == 3600000


def test_continue_stops_with_the_estimate_in_the_stop_value():
    r = charging_at_7360_w(meter_lost_continues=True)
    r.advance(10000 + 1800000)               # loss declared, then half an hour
    r.call("stop", "local")
    ended = r.events_of("session_ended")
    assert len(ended) == 1                   # no fresh reading to wait for: the meter is gone
    assert r.evse.energy_stop_wh == 5000 + 7360 // 2


def test_the_estimate_counts_only_while_the_contactor_is_closed():
    r = charging_at_7360_w(meter_lost_continues=True)
    r.advance(10000)
    r.ev_pause()                             # EV in B: the contactor opens
    r.advance(3600000)
    assert r.evse.energy_estimated_wh() < 10


def test_the_meter_back_ends_the_estimate_and_its_register_rules():
    r = charging_at_7360_w(meter_lost_continues=True)
    r.advance(10000 + 600000)
    r.meter_online = True
    r.call("meter_sample", MeterSample(energy_import_wh=6300, power_w=7360))
    assert [e[2] for e in r.events_of("meter_estimating")] == [True, False]
    assert r.evse.energy_estimated_wh() == 0
    assert r.evse.energy_register_wh() == 6300


def test_an_energy_register_that_goes_backwards_is_held_at_the_last_good_value():
    r = Rig()
    r.charge()
    r.call("meter_sample", MeterSample(energy_import_wh=5000, current_ma=(32000, 0, 0)))
    backwards = MeterSample(energy_import_wh=4200, current_ma=(31000, 0, 0))
    r.call("meter_sample", backwards)
    assert r.evse.energy_wh == 5000
    assert r.evse.meter.energy_import_wh == 5000        # what MeterValues will report
    assert r.evse.meter.current_ma == (31000, 0, 0)     # the rest of the reading stands
    assert any("went backwards" in e[2] for e in r.events_of("info"))


def test_nothing_is_offered_before_the_meter_first_answers():
    """Energy that flowed before the first reading is in no transaction (its meterStart is a
    reading): until the meter answers, the session waits as suspended by the EVSE."""
    r = Rig(meter_online=False)
    r.plug()
    r.advance(100)
    r.authorize()
    r.ev_ready()
    r.advance(2000)
    assert r.session == "suspended_evse" and r.pilot[0] == "x1" and not r.contactor
    r.meter_online = True                   # the meter's first answer
    r.advance(1000)
    assert r.session == "charging" and r.contactor
    assert [e[2] for e in r.events_of("session_energy_start")] == [0]


def test_a_meter_that_never_answers_is_lost_and_no_current_was_offered():
    r = Rig(meter_online=False)
    r.plug()
    r.advance(100)
    r.authorize()
    r.ev_ready()
    r.advance(10000)
    assert r.evse.faults.codes() == ["meter_lost"]
    assert r.log("contactor") == [] and all(mode != "pwm" for _, mode, _ in r.pilot_log())


def test_availability_restored_at_boot_starts_no_timer_at_time_zero():
    """OCPP restores Unavailable as the agent is built, before any clock: the meter's
    silence must count from the first step, not from 0 (a phantom meter_lost at boot)."""
    from agent.evse import Evse
    from agent.params import Params
    evse = Evse(Params())
    evse.set_available(0, False)
    evse.poll(3 * 3600 * 1000)          # the first step, hours into the host's clock
    assert "meter_lost" not in evse.faults and evse.state == "unavailable"
    assert not [e for e in evse.take_events() if e[1] == "fault"]

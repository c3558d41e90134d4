"""A session's stop reading (meterStop) is a fresh meter reading taken once no current can
flow: after the contactor opened (and its feedback says so), not the last periodic one (up
to meter_poll_ms old) nor one taken at the stop itself, while the EV still draws for its
reaction time (up to power_off_under_load_ms). Bounded by stop_reading_timeout_ms (agent.params)
after the opening, after which the last reading stands. Portable: runs under MicroPython too."""
try:
    from portable.rig import Rig
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from rig import Rig
from agent.evse import METER_READ
from hal.interfaces import MeterSample


def charging_with_energy():
    """Charging at 32 A; the meter last read 1000 Wh; the EV goes on drawing."""
    r = Rig()
    r.charge()
    r.meter(32000, energy_wh=1000)
    r.advance(600)                   # next periodic reading is due at +1000 ms
    r.energy_wh = 1003               # what the meter holds at the stop, not yet read
    return r


def stopped_then_ev_reacts(r, reaction_ms=300, drawn_wh=1):
    """Stop; the EV goes on drawing for `reaction_ms` (less than the time to the next periodic
    reading), then stops (B): the contactor opens."""
    stop = r.now
    r.stop()
    r.advance(reaction_ms)
    r.energy_wh += drawn_wh
    r.ev_pause()
    return stop


def test_the_stop_reading_waits_for_the_contactor_to_open():
    r = charging_with_energy()
    stop = stopped_then_ev_reacts(r)
    assert r.log(METER_READ, since=stop) == []           # the EV could still draw
    r.advance(100)                                       # the contactor's feedback arrives
    opened = r.contactor_opened_at
    assert opened is not None and opened > stop
    (read_at, _), = r.log(METER_READ, since=stop)
    assert read_at >= opened and not r.feedback
    ended = r.events_of("session_ended")
    assert [(e[0], e[2], e[3]) for e in ended] == [(read_at, "local", 1004)]   # from 0 Wh
    assert r.evse.energy_stop_wh == 1004


def test_a_silent_meter_delays_the_end_by_the_bound_then_the_last_reading_stands():
    r = charging_with_energy()
    r.meter_online = False
    stopped_then_ev_reacts(r)
    r.advance(100)
    (read_at, _), = r.log(METER_READ)
    r.advance(read_at + 4999 - r.now)
    assert r.events_of("session_ended") == []
    r.advance(1)
    ended = r.events_of("session_ended")
    assert [(e[0], e[3]) for e in ended] == [(read_at + 5000, 1000)]
    assert r.evse.energy_stop_wh == 1000
    assert any("no fresh meter reading" in e[2] for e in r.events_of("info", since=read_at))


def test_a_contactor_that_does_not_open_ends_the_session_with_the_last_reading():
    r = charging_with_energy()
    r.welded = True
    stop = r.now
    r.stop()
    r.ev_pause()
    bound = r.params.power_off_under_load_ms + r.params.stop_reading_timeout_ms
    r.advance(bound - 1)
    assert r.events_of("session_ended") == [] and r.log(METER_READ, since=stop) == []
    r.advance(1)
    ended = r.events_of("session_ended")
    assert [e[0] for e in ended] == [stop + bound]
    assert any("still closed" in e[2] for e in r.events_of("info", since=stop))


def test_a_reading_requested_before_the_opening_does_not_count():
    r = charging_with_energy()
    r.meter_online = False
    stop = r.now
    r.stop()
    # a read that was already on the bus answers after the stop with an older timestamp
    r.call("meter_sample", MeterSample(energy_import_wh=1001, timestamp_ms=stop - 1))
    assert r.events_of("session_ended") == []


def test_without_a_meter_the_session_ends_at_once():
    r = Rig(has_meter=False)
    r.charge()
    stop = r.now
    r.call("stop", "local")
    assert [e[0] for e in r.events_of("session_ended")] == [stop]
    assert r.log(METER_READ) == []


def test_a_new_session_first_ends_the_pending_one():
    r = charging_with_energy()
    r.meter_online = False
    r.call("stop", "local")
    r.unplug()
    r.advance(100)
    r.charge()
    kinds = [e[1] for e in r.events if e[1] in ("session_ended", "session_started")]
    assert kinds[-2:] == ["session_ended", "session_started"], kinds

"""A session's stop reading (meterStop) is a fresh meter reading taken after the stop, not
the last periodic one (up to meter_poll_ms old); bounded by stop_reading_timeout_ms
(agent.params), after which the last reading stands. Portable: runs under MicroPython too."""
try:
    from portable.rig import Rig
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from rig import Rig
from agent.evse import METER_READ


def charging_with_energy():
    """Charging at 32 A; the meter last read 1000 Wh; the EV goes on drawing."""
    r = Rig()
    r.charge()
    r.meter(32000, energy_wh=1000)
    r.advance(600)                   # next periodic reading is due at +1000 ms
    r.energy_wh = 1003               # what the meter holds at the stop, not yet read
    return r


def test_the_stop_asks_the_meter_and_ends_with_its_fresh_reading():
    r = charging_with_energy()
    stop = r.now
    r.call("stop", "local")
    assert r.log(METER_READ, since=stop) == [(stop, None)]
    ended = r.events_of("session_ended")
    assert [(e[0], e[2], e[3]) for e in ended] == [(stop, "local", 1003)]   # from 0 Wh
    assert r.evse.energy_stop_wh == 1003


def test_a_silent_meter_delays_the_end_by_the_bound_then_the_last_reading_stands():
    r = charging_with_energy()
    r.meter_online = False
    stop = r.now
    r.call("stop", "local")
    r.advance(4999)
    assert r.events_of("session_ended") == []
    r.advance(1)
    ended = r.events_of("session_ended")
    assert [(e[0], e[3]) for e in ended] == [(stop + 5000, 1000)]
    assert r.evse.energy_stop_wh == 1000
    assert any("no fresh meter reading" in e[2] for e in r.events_of("info", since=stop))


def test_a_reading_requested_before_the_stop_does_not_count():
    r = charging_with_energy()
    r.meter_online = False
    stop = r.now
    r.call("stop", "local")
    # a read that was already on the bus answers after the stop with an older timestamp
    from hal.interfaces import MeterSample
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

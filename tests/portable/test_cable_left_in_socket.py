"""The cable left in the socket after the EV leaves (agent.evse.Evse through tests/portable/rig.py).

A Type 2 socket codes its cable with a PP resistor; a driver who pulls the cable out of the
car and leaves it in the socket takes the pilot to A while the PP still reads the resistor.
OCPP 1.6 (spec/standards.md §5.2; OCTT TC_005_1/2/3, EVerest E12) then wants:
- StopTransactionOnEVSideDisconnect = true: the session ends (EVDisconnected) and stays
  finishing (OCPP Finishing, "cable still in") until the cable leaves the socket;
  UnlockConnectorOnEVSideDisconnect says whether the lock lets it go at once;
- StopTransactionOnEVSideDisconnect = false: the session goes on (suspended_ev) and keeps the
  cable locked, whatever UnlockConnectorOnEVSideDisconnect says.
A tethered cable has no PP and no lock: the EV leaving frees the connector.
The contactor opens in A whatever the keys say.

Portable: plain functions and asserts; pytest runs it on CPython, tests/mp_run.py on
MicroPython.
"""
try:
    from portable.rig import Rig
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from rig import Rig

RELEASE = 5            # pilot_release_debounce_ms


def charging(stop=True, unlock=True, **kw):
    """A rig charging at 32 A (see test_evse.charging), the two OCPP keys applied."""
    r = Rig(**kw)
    r.evse.stop_on_ev_disconnect = stop
    r.evse.unlock_on_ev_disconnect = unlock
    r.charge()
    return r


def leave_cable(r):
    """The EV end out of the car, the plug still in the socket (PP unchanged)."""
    r.set_ev(ev="A")
    r.advance(RELEASE)


def take_cable_out(r):
    r.set_ev(pp=None)


def test_ev_leaves_cable_in_socket_finishing_until_it_is_taken_out():
    r = charging()
    t = r.now
    leave_cable(r)
    assert (r.session, r.cp) == ("finishing", "A1")
    assert r.contactor_opened_at == t + RELEASE
    r.advance(1000)
    assert [e[2] for e in r.events_of("session_ended")] == ["ev_disconnected"]
    assert r.session == "finishing"
    assert r.locked is False        # UnlockConnectorOnEVSideDisconnect = true
    take_cable_out(r)
    assert r.session == "idle"
    assert r.faults == []


def test_unlock_on_ev_side_disconnect_false_holds_the_cable_until_unlock():
    r = charging(unlock=False)
    leave_cable(r)
    r.advance(1000)
    assert r.session == "finishing" and not r.evse.session_active
    assert r.locked is True and not r.contactor
    assert r.evse.unlock(r.now) is True     # OCPP UnlockConnector
    r.advance(100)
    assert r.locked is False
    take_cable_out(r)
    assert r.session == "idle"


def test_stop_on_ev_side_disconnect_false_keeps_session_and_lock():
    for unlock in (False, True):
        r = charging(stop=False, unlock=unlock)
        leave_cable(r)
        r.advance(1000)
        assert (r.session, r.evse.session_active) == ("suspended_ev", True)
        assert r.locked is True and not r.contactor     # StopTransaction... beats Unlock...
        r.stop("remote")
        assert r.session == "finishing"                 # the cable is still in
        assert r.locked is (not unlock)
        take_cable_out(r)
        assert r.session == "idle" and r.locked is False


def test_ev_back_on_the_cable_left_in_socket_is_a_new_plug_in():
    r = charging()
    leave_cable(r)
    r.plug()
    r.advance(100)
    assert (r.session, r.cp) == ("authorizing", "B1")
    r.authorize("OTHER")
    assert r.session == "ready" and r.evse.session_tag == "OTHER"


def test_ev_and_cable_out_together_frees_the_connector_at_once():
    r = charging(unlock=False)
    r.unplug()                      # PP opens a moment before CP reaches A
    r.advance(100)
    assert r.session == "idle" and r.locked is False
    assert r.events_of("session")[-1][2] == "idle"
    assert "finishing" not in [e[2] for e in r.events_of("session", 400)]


def test_tethered_cable_frees_the_connector_when_the_ev_leaves():
    r = charging(unlock=False, socket=False, cable_max_current_ma=32000, pp_ohms=None)
    leave_cable(r)
    assert r.session == "idle"
    assert r.log("lock") == []


def test_fault_cleared_with_cable_left_returns_to_finishing():
    r = charging()
    leave_cable(r)
    r.temperature(750)                              # over_temperature
    assert r.session == "faulted"
    r.temperature(250)
    assert r.session == "finishing"
    take_cable_out(r)
    assert r.session == "idle"


def test_fault_cleared_during_a_session_without_ev_goes_on():
    r = charging(stop=False)
    leave_cable(r)
    r.temperature(750)
    assert r.session == "faulted" and r.evse.session_active
    r.temperature(250)
    assert (r.session, r.evse.session_active) == ("suspended_ev", True)

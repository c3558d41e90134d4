"""OCPP 1.6J behaviours of spec/everest.md §4.2 (rows 1-30, 35, 41-44) and spec/ocpp_cases.md
§5.3 (OCA 1.6 charge-point cases, Core profile + Remote Trigger) that
tests/test_ocpp16_integration.py does not prove yet. tests/ocpp16_coverage.md maps every row
and case to the test that proves it.

Same harness and style as tests/test_ocpp16_integration.py: the real agent on the simulated
board (or a fixed-cable variant of it), over real WebSockets on 127.0.0.1, against the local
CSMS (simulator/csms.py), in virtual time; an *operator* coroutine acts as the CSMS's user
while a scenario drives the EV side; the assertions read what the CSMS recorded.

Naming in docstrings: "E<n>" = everest.md §4.2 row n, "TC_<nnn>_CS" = OCA 1.6 case. Where a
case's expected sequence is not spelled out in spec/ocpp_cases.md (which lists ids only), the
docstring says where it comes from (spec/standards.md §5, OCPP 1.6 edition 2 text, or the
OCTT case as public 1.6 test harnesses encode it).

Physical situations at a moment the operator chooses come from the harness: the cable pulled
out of the car but left in the socket (`unplug_at_ev`, the scenario's `unplug end=ev`: the PP
resistor still codes a cable, the pilot sees no EV), the cable then taken out of the socket
(`remove_cable`, `unplug end=socket`), and a lock motor that no longer moves (`jam_lock`).

No pytest-asyncio: everything runs inside `simulator.clock.run`; every run is bounded in
virtual time and in wall-clock time (SIGALRM).
"""
import asyncio

import pytest

from simulator.csms import NO_REPLY, CallError, CallErrorReceived

# the shared harness: constants, simulate(), record readers, operator helpers
from ocpp_harness import *  # noqa: F401,F403

# ------------------------------------------------------------------------------ 1. boot

def test_heartbeat_follows_a_heartbeat_interval_changed_by_change_configuration():
    """E1 test_cold_boot ('After HeartbeatInterval=2 a Heartbeat arrives'), TC_001_CS,
    standards §5.4 (HeartbeatInterval = interval of inactivity; RW): ChangeConfiguration
    HeartbeatInterval=2 is Accepted and applies at once: a Heartbeat 2 s after the last
    exchange, and every 2 s of inactivity after that (the boot's interval was 300 s)."""
    async def operator(sim, csms):
        await booted(csms)
        await asyncio.sleep(5)
        reply = await csms.change_configuration(CP, "HeartbeatInterval", "2")
        changed = now()
        await asyncio.sleep(9)
        got = await csms.get_configuration(CP, ["HeartbeatInterval"])
        return reply, changed, got

    run = simulate("wait 30s", operator, heartbeat_interval=300)
    reply, changed, got = run.result
    csms = run.csms
    assert reply == {"status": "Accepted"}
    assert got["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "2"}]
    assert [r for r in calls(csms, "Heartbeat") if r.time < changed] == []
    window = [r for r in calls(csms, "Heartbeat") if changed < r.time <= changed + 9]
    assert len(window) == 4, run.transcript()
    for hb in window:
        gap = hb.time - previous_record(csms, hb).time
        assert 1.99 <= gap <= 2.5, "Heartbeat %.3f s after the previous frame" % gap
        assert answer(csms, hb).kind == "CALLRESULT"


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
def test_heartbeats_start_once_a_pending_or_rejected_boot_is_accepted(status):
    """E2 test_cold_boot_pending / E3 test_boot_notification_rejected / TC_002_CS: after the
    retried BootNotification is Accepted the charge point reports connectors 0 and 1
    Available, takes the Accepted interval as HeartbeatInterval and heartbeats at it (the
    interval of the Pending/Rejected answer was only the retry wait)."""
    run = simulate("wait 1min", boot_script=[(status, 10)], heartbeat_interval=20)
    csms = run.csms
    boots = calls(csms, "BootNotification")
    assert [answer(csms, b).payload["status"] for b in boots] == [status, "Accepted"]
    accepted_at = boots[1].time
    assert [(p["connectorId"], p["status"]) for p in payloads(csms, "StatusNotification")] \
        == [(0, "Available"), (1, "Available")]
    heartbeats = calls(csms, "Heartbeat")
    assert heartbeats and heartbeats[0].time > accepted_at, run.transcript()
    for hb in heartbeats:
        gap = hb.time - previous_record(csms, hb).time
        assert 19.99 <= gap <= 20.5, "Heartbeat %.3f s after the previous frame" % gap
    assert len(heartbeats) >= 2


def test_pending_serves_triggered_status_diagnostics_and_boot():
    """E6 booting.py::test_initiate_message_in_pending (OCPP 1.6 §4.2.1: while Pending no
    request of its own 'unless instructed by the Central System with a TriggerMessage'):
    during Pending a triggered StatusNotification (connector 1, Available) and
    DiagnosticsStatusNotification (Idle) leave after their TriggerMessage answers; a
    triggered BootNotification is sent at once (not at the 60 s retry) and, Accepted, ends the
    Pending state. ExtendedTriggerMessage (Security whitepaper, not offered) is a CALLERROR
    NotSupported."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        got = {"status": await csms.trigger_message(CP, "StatusNotification", connector_id=1)}
        await wait_calls(csms, "StatusNotification", 1, timeout=10)
        got["diagnostics"] = await csms.trigger_message(CP, "DiagnosticsStatusNotification")
        await wait_calls(csms, "DiagnosticsStatusNotification", 1, timeout=10)
        try:
            await csms.call(CP, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"},
                            validate=False)
            got["extended"] = None
        except CallErrorReceived as error:
            got["extended"] = error.code
        got["pending_until"] = now()
        got["boot"] = await csms.trigger_message(CP, "BootNotification")
        await booted(csms, boots=2, timeout=20)
        return got

    run = simulate("wait 40s", operator, boot_script=[("Pending", 60)])
    csms, got = run.csms, run.result
    assert got["status"] == {"status": "Accepted"}
    assert got["diagnostics"] == {"status": "Accepted"}
    assert got["extended"] == "NotSupported"
    assert got["boot"] == {"status": "Accepted"}
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2, run.transcript()
    assert answer(csms, boots[0]).payload["status"] == "Pending"
    assert answer(csms, boots[1]).payload["status"] == "Accepted"
    assert boots[1].time - got["pending_until"] < 5          # the trigger, not the retry
    during = [r for r in calls(csms) if index(csms, r) < index(csms, boots[1])
              and r.action != "BootNotification"]
    assert [(r.action, r.payload.get("connectorId"), r.payload["status"]) for r in during] == [
        ("StatusNotification", 1, "Available"), ("DiagnosticsStatusNotification", None, "Idle")]
    assert during[0].payload["errorCode"] == "NoError"
    for r in during:        # each after the CALLRESULT of the TriggerMessage that asked for it
        previous = previous_record(csms, r)
        assert previous.kind == "CALLRESULT" and previous.action == "TriggerMessage"
    assert [(r.payload["connectorId"], r.payload["status"])
            for r in calls(csms, "StatusNotification")
            if index(csms, r) > index(csms, boots[1])] == [(0, "Available"), (1, "Available")]


# ------------------------------------------------------------------------------ 2. sessions

def test_identification_first_message_order():
    """E9 test_regular_charging_session_identification / TC_004_1_CS: swipe first: Authorize,
    then Preparing; plug-in: StartTransaction (that idTag, connector 1), then Charging; the
    same tag again: StopTransaction(Local, same idTag) without a second Authorize, Finishing;
    unplug: Available."""
    run = simulate("""
        wait 2s
        swipe 04A1B2C3
        wait_for ocpp_status == Preparing timeout=10s
        wait 5s
        plug
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 1min
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        wait 5s
        unplug
        wait_for ocpp_status == Available timeout=10s
        wait 5s
    """)
    run.assert_scenario_held()
    csms = run.csms
    authorize = calls(csms, "Authorize")
    assert [r.payload for r in authorize] == [{"idTag": TAG}]
    assert answer(csms, authorize[0]).payload == {"idTagInfo": {"status": "Accepted"}}
    records = status_records(csms, 1)
    by_status = {}
    for r in records:
        by_status.setdefault(r.payload["status"], r)
    assert [r.payload["status"] for r in records] == [
        "Available", "Preparing", "SuspendedEV", "Charging", "Finishing", "Available"]
    starts, stops = calls(csms, "StartTransaction"), calls(csms, "StopTransaction")
    assert len(starts) == 1 and len(stops) == 1
    assert starts[0].payload["idTag"] == TAG and starts[0].payload["connectorId"] == 1
    assert index(csms, authorize[0]) < index(csms, by_status["Preparing"]) < \
        index(csms, starts[0]) < index(csms, by_status["Charging"]) < index(csms, stops[0])
    tx_id = answer(csms, starts[0]).payload["transactionId"]
    assert stops[0].payload["transactionId"] == tx_id
    assert stops[0].payload["reason"] == "Local"
    assert stops[0].payload["idTag"] == TAG


def test_ev_unplug_stops_transaction_with_reason_ev_disconnected():
    """TC_005_1_CS (StopTransactionOnEVSideDisconnect = UnlockConnectorOnEVSideDisconnect =
    true, the defaults), standards §5.2 ('Unplug during tx, StopTransactionOnEVSideDisconnect
    = true: transaction stopped (Reason EVDisconnected)'): the EV leaves while charging (cable
    out of car and socket): one StopTransaction, reason EVDisconnected, the start's idTag,
    the contactor opened, the lock released, the connector Available."""
    async def operator(sim, csms):
        await booted(csms)
        got = await csms.get_configuration(
            CP, ["StopTransactionOnEVSideDisconnect", "UnlockConnectorOnEVSideDisconnect"])
        tx = await started_tx(csms)
        return got, tx

    run = simulate("""
        %s
        wait 1min
        unplug
        wait 30s
        expect contactor == open
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    got, tx_id = run.result
    assert {k["key"]: k["value"] for k in got["configurationKey"]} == {
        "StopTransactionOnEVSideDisconnect": "true", "UnlockConnectorOnEVSideDisconnect": "true"}
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1, run.transcript()
    assert stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "EVDisconnected"
    assert stops[0]["idTag"] == TAG
    assert lock_locked(run.sim) is False
    assert statuses(csms, 1)[-1] == "Available"
    assert "Charging" in statuses(csms, 1)


def test_ev_side_disconnect_with_cable_left_in_socket_is_finishing_then_available():
    """TC_005_1_CS steps 14-16 (StopTransaction EVDisconnected, then Finishing, then
    Available), standards §5.2 ('StopTransactionOnEVSideDisconnect = true: transaction stopped
    (Reason EVDisconnected); StatusNotification Finishing'; Finishing = 'transaction stopped,
    but the connector is not yet free (cable still in)'): the cable is pulled out of the car
    but stays in the socket (PP still coded): the transaction stops, the lock opens
    (UnlockConnectorOnEVSideDisconnect = true) and the connector is Finishing, not Available,
    until the cable is taken out of the socket."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        unplug_at_ev(sim)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await asyncio.sleep(10)
        cable_in_socket = (last_status(csms, 1), lock_locked(sim))
        remove_cable(sim)
        await asyncio.sleep(10)
        return tx, cable_in_socket

    run = simulate("""
        %s
        wait 3min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id, (status_with_cable, locked_with_cable) = run.result
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1 and stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "EVDisconnected"
    assert locked_with_cable is False
    assert status_with_cable == "Finishing", \
        "cable still in the socket, status %s:\n%s" % (status_with_cable, run.transcript())
    assert last_status(csms, 1) == "Available"


def test_unlock_connector_on_ev_side_disconnect_false_keeps_the_cable_locked():
    """TC_005_2_CS (StopTransactionOnEVSideDisconnect = true, UnlockConnectorOnEVSideDisconnect
    = false), OCPP 1.6 §9.1 UnlockConnectorOnEVSideDisconnect ('When set to true, the Charge
    Point SHALL unlock the cable on Charge Point side when the cable is unplugged at the EV'):
    with false the key is Accepted, the transaction stops (EVDisconnected) when the cable is
    pulled out of the car, and the cable stays locked in the socket until an UnlockConnector,
    which answers Unlocked and opens the lock."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, UnlockConnectorOnEVSideDisconnect="false")
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        unplug_at_ev(sim)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await asyncio.sleep(10)
        locked_after_ev_left = lock_locked(sim)
        unlock = await csms.unlock_connector(CP, 1)
        await asyncio.sleep(5)
        locked_after_unlock = lock_locked(sim)
        remove_cable(sim)
        await asyncio.sleep(10)
        return tx, locked_after_ev_left, unlock, locked_after_unlock

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 3min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id, locked_after_ev_left, unlock, locked_after_unlock = run.result
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1 and stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "EVDisconnected"
    assert locked_after_ev_left is True, \
        "UnlockConnectorOnEVSideDisconnect=false, but the lock opened when the EV left"
    assert unlock == {"status": "Unlocked"}
    assert locked_after_unlock is False


def test_ev_side_disconnect_without_stop_keeps_cable_locked_and_remote_stop_finishes():
    """E12 test_ev_side_disconnect_tx_active / TC_005_3_CS (both keys false), standards §5.2
    ('StopTransactionOnEVSideDisconnect = false: SuspendedEV, NoError; tx continues; cable
    stays locked (this key beats UnlockConnectorOnEVSideDisconnect)'): the cable pulled out of
    the car, left in the socket: no StopTransaction, SuspendedEV, the cable stays locked;
    RemoteStopTransaction then gives StopTransaction(Remote) and Finishing (cable still in the
    socket); Available once the cable is out."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, StopTransactionOnEVSideDisconnect="false",
                        UnlockConnectorOnEVSideDisconnect="false")
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        unplug_at_ev(sim)
        await asyncio.sleep(30)
        after_ev_left = (len(calls(csms, "StopTransaction")), last_status(csms, 1),
                         lock_locked(sim))
        reply = await csms.remote_stop(CP, tx)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await asyncio.sleep(10)
        after_stop = last_status(csms, 1)
        remove_cable(sim)
        await asyncio.sleep(10)
        return tx, after_ev_left, reply, after_stop

    run = simulate("""
        wait_for received ChangeConfiguration == 2 timeout=1min
        %s
        wait 4min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id, (stops_after_ev_left, status_after_ev_left, locked), reply, after_stop = run.result
    assert stops_after_ev_left == 0
    assert status_after_ev_left == "SuspendedEV"
    assert locked is True, "the cable was unlocked while its transaction goes on"
    assert reply == {"status": "Accepted"}
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1 and stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "Remote"
    assert after_stop == "Finishing"
    assert last_status(csms, 1) == "Available"


def test_cable_left_in_socket_by_scenario_then_the_ev_comes_back():
    """The same situation written in the scenario language (`unplug end=ev`, then `unplug
    end=socket`), standards §5.2 (Finishing = 'transaction stopped, but the connector is not
    yet free (cable still in)'; legal transition F2 Finishing -> Preparing): the car is
    plugged back into the cable left in the socket: a new plug-in, Preparing, and a second
    transaction on its own tag; taking both ends out at the end frees the connector."""
    run = simulate("""
        %s
        wait 1min
        unplug end=ev
        wait_for contactor == open timeout=100ms
        wait_for sent StopTransaction == 1 timeout=10s
        wait_for ocpp_status == Finishing timeout=10s
        wait 1min
        expect ocpp_status == Finishing
        plug
        wait_for ocpp_status == Preparing timeout=10s
        swipe 04A1B2C3
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 1min
        unplug end=ev
        wait_for ocpp_status == Finishing timeout=10s
        unplug end=socket
        wait_for ocpp_status == Available timeout=10s
        wait_for sent StopTransaction == 2 timeout=10s
        expect sent StartTransaction == 2
    """ % CHARGE)
    run.assert_scenario_held()
    assert [p["reason"] for p in payloads(run.csms, "StopTransaction")] == [
        "EVDisconnected", "EVDisconnected"]
    assert statuses(run.csms, 1) == [
        "Available", "Preparing", "SuspendedEV", "Charging", "Finishing",
        "Preparing", "SuspendedEV", "Charging", "Finishing", "Available"]


def test_tethered_cable_ev_side_disconnect_is_available_at_once():
    """Standards §5.2 ('Unplug during tx, StopTransactionOnEVSideDisconnect = true ...
    tethered cable -> Available (C1)'), standards §2 ('Tethered-cable EVSEs do not use PP'):
    on a fixed cable the EV leaving frees the connector: StopTransaction(EVDisconnected),
    then Available, never Finishing, even with UnlockConnectorOnEVSideDisconnect = false
    (there is no lock). `unplug end=socket` names its file:line: a fixed cable has no
    socket end."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, UnlockConnectorOnEVSideDisconnect="false")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 1min
        unplug end=ev
        wait_for ocpp_status == Available timeout=10s
        wait_for sent StopTransaction == 1 timeout=10s
        expect session == idle
    """ % CHARGE, operator, board=FIXED_CABLE_BOARD)
    run.assert_scenario_held()
    assert payloads(run.csms, "StopTransaction")[0]["reason"] == "EVDisconnected"
    assert "Finishing" not in statuses(run.csms, 1)
    # a socket end on a tethered cable is a scenario mistake, named before anything runs
    from simulator.scenario import ScenarioError, check
    with pytest.raises(ScenarioError, match=r"<scenario>:3: connector 1 has a tethered cable"):
        check(parse_text("\nplug\nunplug end=socket\n", "<scenario>"), FIXED_CABLE_BOARD)


def test_other_tag_with_same_parent_id_tag_stops_the_transaction():
    """E11 test_stop_transaction_parent_id_tag / TC_069_CS, OCPP 1.6 ed.2 'Stop Transaction'
    and IdTagInfo.parentIdTag (a transaction may be stopped by another idTag whose Authorize
    answer carries the same parentIdTag as the start's): the transaction was started by
    04A1B2C3 (parentIdTag FLEET-1); TAG-001, a different tag of the same group, is presented:
    the charge point sends Authorize(TAG-001), gets parentIdTag FLEET-1, and stops the
    transaction: StopTransaction(Local, idTag TAG-001), Finishing."""
    tags = {TAG: {"status": "Accepted", "parentIdTag": "FLEET-1"},
            OTHER_TAG: {"status": "Accepted", "parentIdTag": "FLEET-1"}}
    run = simulate("""
        %s
        wait 1min
        swipe TAG-001
        wait 30s
        unplug
        wait 10s
    """ % CHARGE, id_tags=tags)
    csms = run.csms
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 1
    assert answer(csms, starts[0]).payload["idTagInfo"] == tags[TAG]
    assert [r.payload for r in calls(csms, "Authorize")] == [{"idTag": TAG},
                                                             {"idTag": OTHER_TAG}], \
        "no Authorize for the other tag of the same group:\n" + run.transcript()
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1
    assert stops[0]["transactionId"] == answer(csms, starts[0]).payload["transactionId"]
    assert stops[0]["reason"] == "Local"
    assert stops[0]["idTag"] == OTHER_TAG
    assert "Finishing" in statuses(csms, 1)


# ------------------------------------------------------------------------------ 3. cache

CACHE_SESSION = """
    plug
    wait_for ocpp_status == Preparing timeout=10s
    swipe 04A1B2C3
    ev_ready
    wait_for ocpp_status == Charging timeout=10s
    wait 30s
    swipe 04A1B2C3
    wait_for ocpp_status == Finishing timeout=10s
    unplug
    wait_for ocpp_status == Available timeout=10s
"""


def test_cached_id_starts_without_authorize():
    """TC_007_1_CS (Regular start charging session - cached id), standards §5.4
    AuthorizationCacheEnabled / LocalPreAuthorize (start for locally-authorized identifiers
    without waiting for or requesting an Authorize.conf): after one Accepted Authorize the tag
    is cached; the next swipe starts the transaction at once, with no second Authorize."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, AuthorizationCacheEnabled="true", LocalPreAuthorize="true")

    run = simulate("""
        wait_for received ChangeConfiguration == 2 timeout=1min
        %s
        wait 5s
        %s
        wait 5s
    """ % (CACHE_SESSION, CACHE_SESSION), operator)
    run.assert_scenario_held()
    csms = run.csms
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 2
    assert all(r.payload["idTag"] == TAG for r in starts)
    assert [r.payload for r in calls(csms, "Authorize")] == [{"idTag": TAG}]
    assert index(csms, calls(csms, "Authorize")[0]) < index(csms, starts[0])
    assert [p["reason"] for p in payloads(csms, "StopTransaction")] == ["Local", "Local"]


def test_remote_start_with_cached_id_does_not_authorize_again():
    """TC_007_2_CS (Remote start charging session - cached id), OCPP 1.6 §5.11 (with
    AuthorizeRemoteTxRequests true the charge point 'SHALL behave as if in response to a local
    action ... to start a transaction with the idTag given'), standards §5.4 LocalPreAuthorize:
    with the tag cached and LocalPreAuthorize true, a RemoteStartTransaction for it starts
    the transaction without an Authorize."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, AuthorizationCacheEnabled="true", LocalPreAuthorize="true",
                        AuthorizeRemoteTxRequests="true")
        await wait_calls(csms, "StopTransaction", timeout=300)
        await wait_status(csms, "Available")
        await asyncio.sleep(5)
        return await csms.remote_start(CP, TAG, connector_id=1)

    run = simulate("""
        wait_for received ChangeConfiguration == 3 timeout=1min
        %s
        wait_for received RemoteStartTransaction == 1 timeout=1min
        wait 2s
        plug
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 30s
    """ % CACHE_SESSION, operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 2 and starts[1].payload["idTag"] == TAG
    authorize = calls(csms, "Authorize")
    assert [r.payload for r in authorize] == [{"idTag": TAG}], \
        "Authorize sent again for a cached tag:\n" + run.transcript()


def test_clear_cache_makes_the_next_swipe_authorize_again():
    """TC_061_CS (Clear authorization data in the authorization cache), OCPP 1.6 §5.4
    ClearCache: with AuthorizationCacheEnabled and LocalPreAuthorize a cached tag starts
    without Authorize; after ClearCache (Accepted) the same tag is unknown again: the next
    swipe sends Authorize before StartTransaction."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, AuthorizationCacheEnabled="true", LocalPreAuthorize="true")
        await wait_calls(csms, "StopTransaction", 2, timeout=300)
        await wait_status(csms, "Available")
        return await csms.clear_cache(CP)

    run = simulate("""
        wait_for received ChangeConfiguration == 2 timeout=1min
        %s
        wait 5s
        %s
        wait_for received ClearCache == 1 timeout=1min
        wait 5s
        %s
        wait 5s
    """ % (CACHE_SESSION, CACHE_SESSION, CACHE_SESSION), operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    starts = calls(csms, "StartTransaction")
    authorize = calls(csms, "Authorize")
    assert len(starts) == 3
    assert [r.payload for r in authorize] == [{"idTag": TAG}, {"idTag": TAG}]
    cleared = csms.records(CP, "ClearCache", "CALL", "to_cp")[0]
    assert index(csms, authorize[0]) < index(csms, starts[0])
    assert index(csms, starts[1]) < index(csms, cleared) < index(csms, authorize[1]) < \
        index(csms, starts[2])


# ------------------------------------------------------------------------------ 4. remote start

def test_remote_start_for_an_invalid_tag_with_authorize_remote_tx_requests():
    """TC_023_x_CS (start with an invalid idTag; the remote variant), standards §5.4
    AuthorizeRemoteTxRequests: RemoteStartTransaction is Accepted, the charge point sends
    Authorize for the remote idTag, the CSMS answers Invalid: no StartTransaction, no energy,
    the plugged connector stays Preparing."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, AuthorizeRemoteTxRequests="true")
        await wait_status(csms, "Preparing")
        return await csms.remote_start(CP, BAD_TAG, connector_id=1)

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        plug
        ev_ready
        wait_for received RemoteStartTransaction == 1 timeout=1min
        wait 40s
        expect contactor == open
        expect offered_current == 0A
    """, operator, id_tags={BAD_TAG: "Invalid"})
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    authorize = calls(csms, "Authorize")
    assert [r.payload for r in authorize] == [{"idTag": BAD_TAG}]
    assert answer(csms, authorize[0]).payload == {"idTagInfo": {"status": "Invalid"}}
    assert calls(csms, "StartTransaction") == []
    assert statuses(csms, 1) == ["Available", "Preparing"]
    assert not contactor_ever_closed(run.sim)


# ------------------------------------------------------------------------------ 5. reset, power

def test_soft_reset_while_idle_reboots_and_reports_status_again():
    """E18 test_soft_reset_without_tx / TC_014_CS: Reset Soft while idle is Accepted; the
    charge point reboots, sends BootNotification again and reports connectors 0 and 1
    Available; no StopTransaction."""
    async def operator(sim, csms):
        await booted(csms)
        reply = await csms.reset(CP, "Soft")
        await booted(csms, boots=2)
        await asyncio.sleep(5)
        return reply

    run = simulate("wait 1min", operator)
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2 and run.sim.boots == 2
    assert answer(csms, boots[1]).payload["status"] == "Accepted"
    assert statuses(csms, 0, after=boots[1].time) == ["Available"]
    assert statuses(csms, 1, after=boots[1].time) == ["Available"]
    assert calls(csms, "StopTransaction") == []


def test_station_unavailable_survives_a_power_failure():
    """E25 test_power_failure_with_unavailable_status / TC_034_CS, standards §5.2 (Unavailable
    is persistent across reboot): ChangeAvailability(0, Inoperative) is Accepted, connectors
    0 and 1 go Unavailable; the power is cut (no Reset); after the new BootNotification both
    are reported Unavailable again; ChangeAvailability(0, Operative) brings both back to
    Available."""
    async def operator(sim, csms):
        await booted(csms)
        off = await csms.change_availability(CP, 0, "Inoperative")
        await until(csms, lambda: (last_status(csms, 0), last_status(csms, 1)) ==
                    ("Unavailable", "Unavailable"), 30)
        await asyncio.sleep(5)
        await sim.reboot("Hard")            # the power cut: no Reset
        await booted(csms, boots=2)
        await asyncio.sleep(5)
        after_boot = (last_status(csms, 0), last_status(csms, 1))
        on = await csms.change_availability(CP, 0, "Operative")
        await until(csms, lambda: (last_status(csms, 0), last_status(csms, 1)) ==
                    ("Available", "Available"), 30)
        return off, after_boot, on

    run = simulate("wait 2min", operator)
    csms = run.csms
    off, after_boot, on = run.result
    assert off == {"status": "Accepted"}
    assert on == {"status": "Accepted"}
    assert after_boot == ("Unavailable", "Unavailable")
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2 and run.sim.boots == 2
    assert statuses(csms, 0) == ["Available", "Unavailable", "Unavailable", "Available"]
    assert statuses(csms, 1) == ["Available", "Unavailable", "Unavailable", "Available"]
    assert statuses(csms, 0, after=boots[1].time)[0] == "Unavailable"
    assert statuses(csms, 1, after=boots[1].time)[0] == "Unavailable"


def test_after_a_power_failure_mid_transaction_the_plugged_connector_is_finishing():
    """TC_032_2_CS (power failure, transaction stopped after going down: after the boot
    'StatusNotification connectorId 0 Available and connectorId 1 Finishing, both reported',
    and StopTransaction PowerLoss), standards §5.2 (Finishing = 'transaction stopped, but the
    connector is not yet free (cable still in)'; Preparing = 'no transaction yet'): the power
    is cut while charging and comes back with the EV still plugged in."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        await sim.reboot("Hard")            # the power cut: no Reset, no graceful stop
        await booted(csms, boots=2)
        await wait_calls(csms, "StopTransaction", timeout=60)
        await asyncio.sleep(10)
        return tx

    run = simulate("""
        %s
        wait 5min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id = run.result
    boots = calls(csms, "BootNotification")
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1 and stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "PowerLoss"
    assert stops[0]["idTag"] == TAG
    assert statuses(csms, 0, after=boots[1].time) == ["Available"]
    assert statuses(csms, 1, after=boots[1].time)[:1] == ["Finishing"], \
        "after the power failure:\n" + run.transcript()


# ------------------------------------------------------------------------------ 6. offline

def test_connection_loss_during_transaction_then_remote_stop():
    """E27 test_connection_loss_during_transaction / TC_036_CS: MeterValueSampleInterval=15;
    the connection drops for 65 s while charging: charging goes on, no MeterValues sample is
    missing (every 15 s from start to stop, timestamps in order), the samples taken offline
    arrive after the reconnect, then sampling continues live every 15 s; the status did not
    change offline, so none is re-sent (standards §5.2: after an outage only the current
    status); RemoteStopTransaction afterwards is Accepted: StopTransaction(Remote) after every
    MeterValues, then Finishing."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, MeterValueSampleInterval="15")
        tx = await started_tx(csms)
        await until(csms, lambda: connection_times(csms, "disconnected"), timeout=300)
        await asyncio.sleep(30)
        offline = (sim.evse(1).state, sim.world.connectors[1].contactor.closed)
        await until(csms, lambda: len(connection_times(csms, "connected")) >= 2, timeout=120)
        await asyncio.sleep(40)
        reply = await csms.remote_stop(CP, tx)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await wait_status(csms, "Finishing", timeout=30)
        return tx, offline, reply

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 35s
        csms_offline 65s
        wait 3min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id, offline, reply = run.result
    assert offline == ("charging", True)
    down = connection_times(csms, "disconnected")[0]
    up = connection_times(csms, "connected")[1]
    assert 64.9 <= up - down <= 70
    assert not [r for r in csms.log if down < r.time < up]
    samples = tx_meter_values(csms, tx_id)
    stamps = [parse_ts(mv["timestamp"]) for r in samples for mv in r.payload["meterValue"]]
    start = calls(csms, "StartTransaction")[0]
    stop = calls(csms, "StopTransaction")[0]
    gaps = [(b - a).total_seconds() for a, b in
            zip([parse_ts(start.payload["timestamp"])] + stamps, stamps)]
    assert gaps and all(14.9 <= g <= 15.1 for g in gaps), gaps
    taken_offline = [s for s in stamps if down < (s - T0).total_seconds() < up]
    assert len(taken_offline) == 4
    live = [r for r in samples if r.time > up + 15]
    assert len(live) >= 2
    for earlier, later in zip(live, live[1:]):
        assert 14.5 <= later.time - earlier.time <= 15.5
    assert statuses(csms, 1, after=up) == ["Finishing"]     # Charging all along: not resent
    assert reply == {"status": "Accepted"}
    assert stop.payload["reason"] == "Remote" and stop.payload["transactionId"] == tx_id
    assert all(index(csms, r) < index(csms, stop) for r in samples)
    assert last_status(csms, 1) == "Finishing"


def test_transaction_started_offline_with_a_cached_tag_continues_after_reconnect():
    """E28 test_offline_start_transaction / TC_037_1_CS (offline start, valid idTag),
    standards §5.4 LocalAuthorizeOffline (default true) + AuthorizationCacheEnabled: a tag
    Accepted earlier is in the cache; while the CSMS is unreachable its swipe starts charging
    with no Authorize; after the reconnect StartTransaction is sent (the offline start time,
    then Charging as the current status), the transaction goes on, and a later swipe stops it
    online with StopTransaction(Local) carrying the new transactionId."""
    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, AuthorizationCacheEnabled="true")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 5s
        csms_offline 3min
        wait 5s
        plug
        swipe 04A1B2C3
        ev_ready
        wait_for session == charging timeout=10s
        wait 4min
        expect session == charging
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        unplug
        wait 30s
    """ % CACHE_SESSION, operator)
    run.assert_scenario_held()
    csms = run.csms
    down = connection_times(csms, "disconnected")[0]
    up = connection_times(csms, "connected")[1]
    assert [r.payload for r in calls(csms, "Authorize")] == [{"idTag": TAG}]
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 2
    offline_start = starts[1]
    assert offline_start.time >= up
    assert down < (parse_ts(offline_start.payload["timestamp"]) - T0).total_seconds() < up
    assert offline_start.payload["idTag"] == TAG
    reply = answer(csms, offline_start).payload
    assert reply["idTagInfo"]["status"] == "Accepted"
    assert statuses(csms, 1, after=up)[:1] == ["Charging"]
    stops = calls(csms, "StopTransaction")
    assert len(stops) == 2
    assert stops[1].payload["transactionId"] == reply["transactionId"]
    assert stops[1].payload["reason"] == "Local"
    assert stops[1].time > offline_start.time + 60          # it went on after the reconnect


@pytest.mark.parametrize("stop_on_invalid", [True, False])
def test_transaction_started_offline_for_an_id_the_csms_calls_invalid(stop_on_invalid):
    """TC_037_3_CS (StopTransactionOnInvalidId = true) / TC_037_2_CS (= false), standards §5.2
    / §5.4: with AllowOfflineTxForUnknownId an unknown tag starts charging while offline; after
    the reconnect StartTransaction.conf says Invalid: with StopTransactionOnInvalidId true the
    charge point stops it, StopTransaction(DeAuthorized), Finishing; with false it keeps the
    transaction and offers no energy, SuspendedEVSE, no StopTransaction."""
    async def operator(sim, csms):
        await booted(csms)
        keys = {"AllowOfflineTxForUnknownId": "true"}
        if not stop_on_invalid:
            keys["StopTransactionOnInvalidId"] = "false"
        await configure(csms, **keys)

    run = simulate("""
        wait_for received ChangeConfiguration == %d timeout=1min
        csms_offline 2min
        wait 5s
        plug
        swipe BADTAG
        ev_ready
        wait_for session == charging timeout=10s
        wait 3min
        expect contactor == open
        expect offered_current == 0A
    """ % (1 if stop_on_invalid else 2), operator, id_tags={BAD_TAG: "Invalid"})
    run.assert_scenario_held()
    csms = run.csms
    up = connection_times(csms, "connected")[1]
    assert calls(csms, "Authorize") == []
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 1 and starts[0].time >= up
    assert starts[0].payload["idTag"] == BAD_TAG
    reply = answer(csms, starts[0]).payload
    assert reply["idTagInfo"] == {"status": "Invalid"}
    stops = payloads(csms, "StopTransaction")
    if stop_on_invalid:
        assert len(stops) == 1
        assert stops[0]["transactionId"] == reply["transactionId"]
        assert stops[0]["reason"] == "DeAuthorized"
        assert last_status(csms, 1) == "Finishing"
    else:
        assert stops == []
        assert last_status(csms, 1) == "SuspendedEVSE"
        assert run.sim.evse(1).state == "suspended_evse"


# ------------------------------------------------------------------------------ 7. tx messages

def test_start_transaction_unanswered_and_refused_until_accepted():
    """E42 broken.py::test_start_transaction_call_error_or_timeout, OCPP 1.6 §4.10
    (TransactionMessageAttempts / TransactionMessageRetryInterval, the wait growing with the
    attempts made): TransactionMessageAttempts=5, RetryInterval=5; the CSMS ignores the first
    StartTransaction, answers the next three with CALLERROR and accepts the fifth; the EV
    leaves meanwhile. The charge point sends the same StartTransaction five times (after the
    timeout + 5 s, then 10, 15, 20 s), and then exactly one StopTransaction(EVDisconnected)
    with the transactionId of the accepted attempt."""
    attempts = []

    def start_override(cp_id, payload):
        attempts.append(payload)
        if len(attempts) == 1:
            return NO_REPLY
        if len(attempts) <= 4:
            raise CallError("InternalError", "database down")
        return None

    async def operator(sim, csms):
        csms.overrides["StartTransaction"] = start_override
        await booted(csms)
        await configure(csms, TransactionMessageAttempts="5", TransactionMessageRetryInterval="5")

    def short_response_timeout(sim):
        # while a CALL is unanswered virtual time runs at real pace (transport_ws holds the
        # clock for answers from another process): a short response timeout keeps this fast
        sim.cp.rpc.response_timeout_ms = 2000

    run = simulate("""
        wait_for received ChangeConfiguration == 2 timeout=1min
        plug
        wait_for ocpp_status == Preparing timeout=10s
        swipe 04A1B2C3
        ev_ready
        wait_for session == charging timeout=10s
        wait 10s
        unplug
        wait 2min
    """, operator, on_boot=short_response_timeout)
    run.assert_scenario_held()
    csms = run.csms
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 5, run.transcript()
    assert all(r.payload == starts[0].payload for r in starts)
    kinds = [answer(csms, r).kind if answer(csms, r) else None for r in starts]
    assert kinds == [None, "CALLERROR", "CALLERROR", "CALLERROR", "CALLRESULT"]
    gaps = [b.time - a.time for a, b in zip(starts, starts[1:])]
    assert 6.99 <= gaps[0] <= 8, gaps              # 2 s response timeout + 1 x 5 s
    for n, gap in enumerate(gaps[1:], start=2):
        assert 5 * n - 0.01 <= gap <= 5 * n + 0.5, gaps     # ms clock: 0.01 s slack
    tx_id = answer(csms, starts[4]).payload["transactionId"]
    stops = calls(csms, "StopTransaction")
    assert len(stops) == 1
    assert stops[0].payload["transactionId"] == tx_id
    assert stops[0].payload["reason"] == "EVDisconnected"
    assert index(csms, answer(csms, starts[4])) < index(csms, stops[0])
    assert all(r.payload.get("transactionId") in (None, tx_id) for r in calls(csms, "MeterValues"))


def test_start_transaction_given_up_after_transaction_message_attempts():
    """E43 message_queue.py::test_call_error_to_transaction_message, OCPP 1.6 §4.10:
    TransactionMessageAttempts=3 (default), RetryInterval=10: a StartTransaction the CSMS
    answers with CALLERROR every time is sent exactly 3 times (10 s, then 20 s apart) and
    then given up; nothing is ever sent for a transaction the CSMS gave no transactionId."""
    def start_override(cp_id, payload):
        raise CallError("InternalError", "database down")

    async def operator(sim, csms):
        csms.overrides["StartTransaction"] = start_override
        await booted(csms)
        await configure(csms, TransactionMessageRetryInterval="10")
        return await csms.get_configuration(CP, ["TransactionMessageAttempts"])

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 3min
        swipe 04A1B2C3
        wait_for session == finishing timeout=10s
        unplug
        wait 3min
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result["configurationKey"][0]["value"] == "3"
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 3, run.transcript()
    assert all(answer(csms, r).kind == "CALLERROR" for r in starts)
    gaps = [b.time - a.time for a, b in zip(starts, starts[1:])]
    assert 9.99 <= gaps[0] <= 10.5 and 19.99 <= gaps[1] <= 20.5, gaps
    assert calls(csms, "StopTransaction") == []
    assert [r for r in calls(csms, "MeterValues") if "transactionId" in r.payload] == []


# ------------------------------------------------------------------------------ 8. unlock

def test_unlock_connector_without_session_socket():
    """TC_017_1_CS (Unlock connector - no charging session, not fixed cable): with an EV
    plugged in but no transaction (Preparing), UnlockConnector(1) answers Unlocked, the lock
    is open, no transaction starts."""
    async def operator(sim, csms):
        await booted(csms)
        await wait_status(csms, "Preparing")
        return await csms.unlock_connector(CP, 1)

    run = simulate("""
        wait 2s
        plug
        wait_for received UnlockConnector == 1 timeout=1min
        wait 10s
    """, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Unlocked"}
    assert lock_locked(run.sim) is False
    assert calls(run.csms, "StartTransaction") == []
    assert last_status(run.csms, 1) == "Preparing"


@pytest.mark.parametrize("with_session", [False, True])
def test_unlock_connector_fixed_cable_not_supported(with_session):
    """E20 test_unlock_connector_no_charging_fixed_cable, TC_017_2_CS / TC_018_2_CS (fixed
    cable, without / with a charging session): a tethered cable has nothing to unlock:
    UnlockConnector(1) answers NotSupported, and a running transaction is not touched (no
    StopTransaction, still charging)."""
    async def operator(sim, csms):
        if with_session:
            await started_tx(csms)
            await asyncio.sleep(30)
        else:
            await booted(csms)
            await wait_status(csms, "Preparing")
        return await csms.unlock_connector(CP, 1)

    run = simulate("""
        %s
        wait_for received UnlockConnector == 1 timeout=10min
        wait 30s
        expect session == %s
    """ % (CHARGE if with_session else "wait 2s\nplug",
           "charging" if with_session else "authorizing"),
        operator, board=FIXED_CABLE_BOARD)
    run.assert_scenario_held()
    assert run.sim.world.connectors[1].lock is None
    assert run.result == {"status": "NotSupported"}
    assert calls(run.csms, "StopTransaction") == []
    assert last_status(run.csms, 1) == ("Charging" if with_session else "Preparing")


def test_unlock_connector_reports_unlock_failed_when_the_lock_does_not_open():
    """TC_030_CS (Unlock connector - unlock failure), OCPP 1.6 §7 UnlockStatus (Unlocked:
    'Connector has successfully been unlocked'; UnlockFailed: 'Failed to unlock the
    connector'): the lock motor jams while the cable is locked; after the transaction is
    stopped the lock cannot open (ConnectorLockFailure); UnlockConnector must answer
    UnlockFailed, not Unlocked."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(30)
        assert lock_locked(sim) is True
        jam_lock(sim)
        await csms.remote_stop(CP, tx)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await asyncio.sleep(10)
        reply = await csms.unlock_connector(CP, 1)
        await asyncio.sleep(10)
        return reply

    run = simulate("""
        %s
        wait 3min
    """ % CHARGE, operator)
    assert lock_locked(run.sim) is True                 # it never moved
    assert run.result == {"status": "UnlockFailed"}, \
        "UnlockConnector answered %r with the lock still locked" % run.result


def test_lock_failure_at_start_reports_connector_lock_failure_and_no_transaction():
    """TC_024_CS (Start charging session - lock failure: StatusNotification Faulted with
    errorCode ConnectorLockFailure, no StartTransaction), fault table (lock_failure ->
    ConnectorLockFailure): the lock does not move when the session wants the cable locked:
    the connector is reported Faulted / ConnectorLockFailure, its contactor is open, and no
    transaction is started at the CSMS."""
    async def operator(sim, csms):
        await booted(csms)
        jam_lock(sim)
        await wait_status(csms, "Preparing")
        reply = await csms.remote_start(CP, REMOTE_TAG, connector_id=1)
        await wait_status(csms, "Faulted", timeout=30)
        await asyncio.sleep(10)
        return reply

    run = simulate("""
        wait 2s
        plug
        ev_ready
        wait_for received RemoteStartTransaction == 1 timeout=1min
        wait 1min
        expect contactor == open
    """, operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    faulted = [p for p in payloads(csms, "StatusNotification") if p["status"] == "Faulted"]
    assert faulted and faulted[0]["connectorId"] == 1
    assert faulted[0]["errorCode"] == "ConnectorLockFailure"
    assert calls(csms, "StartTransaction") == [], \
        "a transaction was started with the lock failed:\n" + run.transcript()


# ------------------------------------------------------------------------------ 9. fault

def test_fault_clears_back_to_available_and_a_new_session_starts():
    """TC_041_CS (fault behaviour), standards §5.2 (Faulted -> back when the fault is gone;
    legal transition I -> 1): an RCD trip while charging reports Faulted / GroundFailure;
    once the leakage is gone and the EV unplugged the connector is Available with errorCode
    NoError, and a new session starts and charges."""
    run = simulate("""
        %s
        wait 1min
        fault rcd_dc
        wait_for ocpp_status == Faulted timeout=10s
        wait 10s
        clear rcd_dc
        unplug
        wait_for ocpp_status == Available timeout=1min
        wait 10s
        %s
        wait 1min
    """ % (CHARGE, CHARGE))
    run.assert_scenario_held()
    csms = run.csms
    reported = [(p["status"], p["errorCode"]) for p in payloads(csms, "StatusNotification")
                if p["connectorId"] == 1]
    faulted = reported.index(("Faulted", "GroundFailure"))
    assert ("Available", "NoError") in reported[faulted + 1:]
    assert reported[-1] == ("Charging", "NoError")
    assert statuses(csms, 0) == ["Available"]
    assert len(calls(csms, "StartTransaction")) == 2
    assert len(calls(csms, "StopTransaction")) == 1


# ------------------------------------------------------------------------------ 10. trigger

def test_trigger_message_sequence_while_idle():
    """E35 test_trigger_message / TC_054_CS (MeterValues connector 1, Heartbeat,
    StatusNotification connector 1, DiagnosticsStatusNotification, FirmwareStatusNotification),
    OCPP 1.6 §5.17 (the TriggerMessage answer first, then the message; nothing running ->
    status Idle): while idle every trigger is Accepted and the requested message follows its
    answer: MeterValues for connector 1 (context Trigger, no transactionId), an empty
    Heartbeat, StatusNotification Available, DiagnosticsStatusNotification and
    FirmwareStatusNotification with status Idle."""
    requests = [("MeterValues", 1), ("Heartbeat", None), ("StatusNotification", 1),
                ("DiagnosticsStatusNotification", None), ("FirmwareStatusNotification", None)]

    async def operator(sim, csms):
        await booted(csms)
        await asyncio.sleep(5)
        got = []
        for message, connector in requests:
            before = len(calls(csms, message))
            reply = await csms.trigger_message(CP, message, connector_id=connector)
            record = await wait_calls(csms, message, before + 1, timeout=5)
            got.append((reply, record))
        return got

    run = simulate("wait 1min", operator, heartbeat_interval=3600)
    csms = run.csms
    for (message, connector), (reply, record) in zip(requests, run.result):
        assert reply == {"status": "Accepted"}, message
        previous = previous_record(csms, record)
        assert previous.kind == "CALLRESULT" and previous.action == "TriggerMessage", message
        if message == "MeterValues":
            assert record.payload["connectorId"] == 1
            assert "transactionId" not in record.payload
            assert {s["context"] for mv in record.payload["meterValue"]
                    for s in mv["sampledValue"]} == {"Trigger"}
        elif message == "Heartbeat":
            assert record.payload == {}
        elif message == "StatusNotification":
            assert (record.payload["connectorId"], record.payload["status"],
                    record.payload["errorCode"]) == (1, "Available", "NoError")
        else:
            assert record.payload == {"status": "Idle"}, message


def test_trigger_meter_values_for_an_unknown_connector_rejected():
    """E35 test_trigger_message_rejected / TC_055_CS: TriggerMessage MeterValues for
    connectorId 4352 on a one-connector charge point is Rejected and no MeterValues is sent."""
    async def operator(sim, csms):
        await booted(csms)
        reply = await csms.trigger_message(CP, "MeterValues", connector_id=4352)
        await asyncio.sleep(10)
        return reply

    run = simulate("wait 30s", operator)
    assert run.result == {"status": "Rejected"}
    assert calls(run.csms, "MeterValues") == []


# ------------------------------------------------------------------------------ 11. profiles

def test_local_list_requests_not_supported():
    """TC_042_1_CS (GetLocalListVersion, not supported: listVersion -1 or CALLERROR
    NotSupported) and TC_043_1_CS (SendLocalList - NotSupported), standards §5.1/§5.4: the
    charge point does not list LocalAuthListManagement in SupportedFeatureProfiles and
    answers both requests as not supported."""
    async def operator(sim, csms):
        await booted(csms)
        got = {"profiles": await csms.get_configuration(CP, ["SupportedFeatureProfiles"])}
        for action, payload in (("GetLocalListVersion", {}),
                                ("SendLocalList", {"listVersion": 1, "updateType": "Full"})):
            try:
                got[action] = await csms.call(CP, action, payload)
            except CallErrorReceived as error:
                got[action] = error.code
        return got

    run = simulate("wait 20s", operator)
    got = run.result
    profiles = got["profiles"]["configurationKey"][0]["value"].split(",")
    assert "LocalAuthListManagement" not in profiles
    assert got["GetLocalListVersion"] in ("NotSupported", {"listVersion": -1})
    assert got["SendLocalList"] in ("NotSupported", {"status": "NotSupported"})

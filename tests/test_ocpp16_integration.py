"""OCPP 1.6J charge point, end to end: the real agent on the simulated board, over real
WebSockets on 127.0.0.1, against the local CSMS (simulator/csms.py), in virtual time.

Each test runs one `Simulation` with `simulator.clock.run`: a scenario (the EV side, written in
the scenario language) and, concurrently, an *operator* coroutine acting as the CSMS's user
(remote start, reset, configuration, ...). The assertions read what the CSMS recorded: the
frames in both directions, the transactions, the status notifications.

Sources of the expected behaviour (named in each test's docstring):
- spec/everest.md §4.2 rows (EVerest's OCPP 1.6 integration tests), "E<row>" below;
- spec/ocpp_cases.md §5.3 (OCA 1.6 charge-point test cases), "TC_<nnn>_CS";
- spec/standards.md §5 (OCPP 1.6: status mapping, stop reasons, configuration keys);
- OCPP 1.6 edition 2 / OCPP-J 1.6 where the notes above quote them.

The CSMS's clock (`currentTime` in BootNotification/Heartbeat answers) follows the virtual clock
from 2030-01-01T00:00:00Z, so the charge point's timestamps are virtual time too and
clock-aligned intervals fall on round virtual seconds.

No pytest-asyncio: everything runs inside `clock.run`. Every run is bounded in virtual time
(`asyncio.timeout`) and in wall-clock time (SIGALRM guard below).
"""
import asyncio
import contextlib
import copy
import signal
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

import tools.boardfile
from simulator import clock
from simulator.csms import NO_REPLY, CallError, CallErrorReceived, LocalCsms
from simulator.runner import OcppOptions, Simulation
from simulator.scenario import parse_text
from simulator.timeline import Timeline

# the shared harness: constants, simulate(), record readers, operator helpers
from ocpp_harness import *  # noqa: F401,F403

# ------------------------------------------------------------------------------ 1. boot

def test_boot_accepted_sets_heartbeat_interval_and_reports_available():
    """E1 test_cold_boot / TC_001_CS: BootNotification first, then StatusNotification Available
    NoError for connector 0 and 1; the Accepted interval becomes HeartbeatInterval
    (standards §5.4: 'replaced by BootNotification.conf interval')."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.get_configuration(CP, ["HeartbeatInterval"])

    run = simulate("wait 1min", operator, heartbeat_interval=45)
    csms = run.csms
    first = calls(csms)[0]
    assert first.action == "BootNotification"
    assert first.payload == {"chargePointVendor": "evse-agent", "chargePointModel": "SIM-22",
                             "chargePointSerialNumber": "SIM-0001",
                             "firmwareVersion": first.payload.get("firmwareVersion")}
    assert answer(csms, first).payload["status"] == "Accepted"
    reported = [(p["connectorId"], p["status"], p["errorCode"])
                for p in payloads(csms, "StatusNotification")]
    assert reported[:2] == [(0, "Available", "NoError"), (1, "Available", "NoError")]
    assert run.result["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "45"}]
    assert csms.station(CP).boots == 1
    heartbeats = calls(csms, "Heartbeat")           # and it is the interval in use
    assert len(heartbeats) == 1
    assert 44.99 <= heartbeats[0].time - previous_record(csms, heartbeats[0]).time <= 45.5


@pytest.mark.parametrize("status,interval", [("Pending", 20), ("Rejected", 15)])
def test_boot_not_accepted_sends_only_boot_until_accepted(status, interval):
    """OCPP 1.6 §4.2 / E2, E3 / TC_002_CS: while the registration is Pending or Rejected the
    charge point sends nothing but BootNotification, retries after the given interval, and
    reports its connectors once a BootNotification is Accepted. Station events during the wait
    (a plug-in, a swipe) must not leak out as StatusNotification/Authorize."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        await asyncio.sleep(2)
        step_plug, step_swipe = parse_text("plug\nswipe 04A1B2C3")
        await sim.execute(step_plug)            # station events while not accepted
        await asyncio.sleep(1)
        await sim.execute(step_swipe)
        await booted(csms, boots=2, timeout=interval + 30)

    run = simulate("wait 30s", operator, boot_script=[(status, interval)])
    csms = run.csms
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2
    assert answer(csms, boots[0]).payload["status"] == status
    assert answer(csms, boots[0]).payload["interval"] == interval
    assert answer(csms, boots[1]).payload["status"] == "Accepted"
    gap = boots[1].time - boots[0].time
    assert interval <= gap <= interval + 1, "retry after %.3f s, interval %d" % (gap, interval)
    accepted_at = csms.log.index(answer(csms, boots[1]))
    early = [(r.time, r.action) for r in calls(csms) if csms.log.index(r) < accepted_at
             and r.action != "BootNotification"]
    assert early == [], "sent before the Accepted BootNotification answer"
    assert [(p["connectorId"], p["status"]) for p in payloads(csms, "StatusNotification")][:2] \
        == [(0, "Available"), (1, "Preparing")]
    assert calls(csms, "Authorize") == []
    assert calls(csms, "StartTransaction") == []


def test_pending_answers_configuration_requests():
    """E2 test_cold_boot_pending: while Pending the charge point accepts GetConfiguration and
    ChangeConfiguration from the CSMS; after Accepted it goes Available."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        got = await csms.get_configuration(CP, ["MeterValueSampleInterval"])
        changed = await csms.change_configuration(CP, "MeterValueSampleInterval", "30")
        again = await csms.get_configuration(CP, ["MeterValueSampleInterval"])
        await booted(csms, boots=2, timeout=60)
        return got, changed, again

    run = simulate("wait 10s", operator, boot_script=[("Pending", 30)])
    got, changed, again = run.result
    assert [k["key"] for k in got["configurationKey"]] == ["MeterValueSampleInterval"]
    assert changed == {"status": "Accepted"}
    assert again["configurationKey"] == [
        {"key": "MeterValueSampleInterval", "readonly": False, "value": "30"}]
    assert last_status(run.csms, 1) == "Available"


def test_pending_rejects_remote_start_and_stop():
    """E5 booting.py::test_remote_start_stop_in_pending (OCPP 1.6 §4.2.1: RemoteStart/Stop
    are not allowed while Pending): both are Rejected and no transaction starts."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        await sim.execute(parse_text("plug")[0])
        start = await csms.remote_start(CP, REMOTE_TAG, connector_id=1)
        stop = await csms.remote_stop(CP, 1)
        await booted(csms, boots=2, timeout=60)
        await asyncio.sleep(10)
        return start, stop

    run = simulate("wait 1min", operator, boot_script=[("Pending", 30)])
    start, stop = run.result
    assert start == {"status": "Rejected"}
    assert stop == {"status": "Rejected"}
    assert calls(run.csms, "StartTransaction") == []
    assert calls(run.csms, "Authorize") == []


def test_rejected_answers_nothing_and_sends_nothing_until_the_interval():
    """OCPP 1.6 §4.2: "If the Central System returns the status Rejected, the Charge Point
    SHALL NOT send any OCPP message to the Central System until the aforementioned retry
    interval has expired ... While Rejected, the Charge Point SHALL NOT respond to any Central
    System initiated message" (Pending, above, answers them). A TriggerMessage is not answered
    either, so nothing it would trigger leaves."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        outcomes = []
        for ask in (lambda: csms.get_configuration(CP, ["HeartbeatInterval"], timeout=5),
                    lambda: csms.trigger_message(CP, "StatusNotification", timeout=5)):
            try:
                outcomes.append(await ask())
            except asyncio.TimeoutError:
                outcomes.append("no answer")
        await booted(csms, boots=2, timeout=60)
        return first.time, outcomes

    run = simulate("wait 1min", operator, boot_script=[("Rejected", 30)])
    rejected_at, outcomes = run.result
    assert outcomes == ["no answer", "no answer"]
    second = calls(run.csms, "BootNotification")[1]
    assert [r.action for r in calls(run.csms) if rejected_at < r.time < second.time] == []
    assert last_status(run.csms, 1) == "Available"


def test_pending_trigger_message_is_served_and_boot_still_completes():
    """E6 booting.py::test_initiate_message_in_pending (OCPP 1.6 §4.2.1: while Pending the
    charge point sends no request 'unless instructed by the Central System with a
    TriggerMessage'): a triggered Heartbeat goes out during Pending, and the next
    BootNotification still leaves on time and is Accepted."""
    async def operator(sim, csms):
        first = await wait_calls(csms, "BootNotification", 1)
        await until(csms, lambda: answer(csms, first) is not None)
        reply = await csms.trigger_message(CP, "Heartbeat")
        try:
            await wait_calls(csms, "Heartbeat", 1, timeout=10)
        except asyncio.TimeoutError:
            pass
        try:
            await booted(csms, boots=2, timeout=60)
        except asyncio.TimeoutError:
            pass
        return reply

    run = simulate("wait 1min", operator, boot_script=[("Pending", 30)])
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2, "no second BootNotification:\n" + run.transcript()
    assert answer(csms, boots[1]).payload["status"] == "Accepted"
    heartbeats = calls(csms, "Heartbeat")
    assert heartbeats and heartbeats[0].time < boots[1].time, \
        "the triggered Heartbeat did not leave while Pending:\n" + run.transcript()


@pytest.mark.parametrize("failure", ["callerror", "no_reply"])
def test_boot_retried_after_callerror_or_no_answer(failure):
    """E4 booting.py::test_boot_notification_callerror / _no_response: a BootNotification
    answered with CALLERROR, or not answered, is retried (a second one within 100 s), and the
    charge point comes up once it is Accepted."""
    async def operator(sim, csms):
        await booted(csms, boots=2, timeout=200)

    first = []

    def boot_override(cp_id, payload):
        if not first:
            first.append(payload)
            if failure == "callerror":
                raise CallError("InternalError", "CSMS hiccup")
            return NO_REPLY
        return None

    async def operator_with_override(sim, csms):
        csms.overrides["BootNotification"] = boot_override
        await operator(sim, csms)

    def short_response_timeout(sim):
        # while a CALL is unanswered virtual time runs at real pace (transport_ws holds the
        # clock for answers from another process): a short response timeout keeps this fast
        sim.cp.rpc.response_timeout_ms = 3000

    run = simulate("wait 2min", operator_with_override, on_boot=short_response_timeout)
    boots = calls(run.csms, "BootNotification")
    assert len(boots) == 2
    assert boots[1].time - boots[0].time <= 100
    assert answer(run.csms, boots[1]).payload["status"] == "Accepted"
    assert last_status(run.csms, 1) == "Available"


# ------------------------------------------------------------------------------ 2. heartbeat

def test_heartbeat_after_interval_of_inactivity():
    """E1 / TC_001_CS, standards §5.4 HeartbeatInterval = 'interval of inactivity before
    Heartbeat': with the Accepted interval 30, an idle charge point sends a Heartbeat 30 s after
    its last exchange, and keeps doing so."""
    run = simulate("wait 100s", heartbeat_interval=30)
    csms = run.csms
    heartbeats = calls(csms, "Heartbeat")
    assert len(heartbeats) == 3, run.transcript()
    for hb in heartbeats:
        assert hb.payload == {}
        gap = hb.time - previous_record(csms, hb).time
        assert 29.99 <= gap <= 30.5, "Heartbeat %.3f s after the previous frame" % gap
        assert answer(csms, hb).kind == "CALLRESULT"


def test_heartbeat_resumes_after_reconnect():
    """E26 test_idle_charge_point: after the WebSocket drops and the charge point reconnects,
    heartbeats resume at HeartbeatInterval."""
    async def operator(sim, csms):
        await booted(csms)
        await asyncio.sleep(10)
        await csms.disconnect(CP)
        await csms.wait_connected(CP, timeout=120)
        return asyncio.get_running_loop().time()

    run = simulate("wait 2min", operator, heartbeat_interval=30)
    reconnected = run.result
    after = [r for r in calls(run.csms, "Heartbeat") if r.time > reconnected]
    assert len(after) >= 2, run.transcript()
    # the WebSocket handshake is the last exchange before the first one
    gap = after[0].time - max(previous_record(run.csms, after[0]).time, reconnected)
    assert 29.99 <= gap <= 30.5
    assert 29.99 <= after[1].time - after[0].time <= 30.5


# ------------------------------------------------------------------------------ 3. status

@pytest.mark.parametrize("order", ["plug_first", "swipe_first"])
def test_status_sequence_of_a_normal_session(order):
    """E8/E9 test_regular_charging_session_plugin/_identification, TC_003_CS/TC_004_1_CS,
    standards §5.2 mapping: Available (0 and 1) -> Preparing -> SuspendedEV (authorized, EV not
    in C yet) -> Charging -> Finishing (stopped, cable in) -> Available, all NoError."""
    start = ("plug\nwait_for ocpp_status == Preparing timeout=10s\nswipe 04A1B2C3"
             if order == "plug_first" else
             "swipe 04A1B2C3\nwait_for ocpp_status == Preparing timeout=10s\nwait 2s\nplug")
    run = simulate("""
        wait 2s
        %s
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 5min
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        wait 10s
        unplug
        wait_for ocpp_status == Available timeout=10s
        wait 5s
    """ % start.replace("\n", "\n        "))
    csms = run.csms
    assert statuses(csms, 0) == ["Available"]
    assert statuses(csms, 1) == ["Available", "Preparing", "SuspendedEV", "Charging",
                                 "Finishing", "Available"], run.transcript()
    run.assert_scenario_held()
    for p in payloads(csms, "StatusNotification"):
        assert p["errorCode"] == "NoError"
    stamps = [parse_ts(p["timestamp"]) for p in payloads(csms, "StatusNotification")]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize("fault,error_code", [
    ("rcd_dc", "GroundFailure"),
    ("rcd_ac", "GroundFailure"),
    ("contactor_weld", "PowerSwitchFailure"),
])
def test_fault_reports_faulted_with_mapped_error_code(fault, error_code):
    """standards §5.2 ('E/F, RCD, welded contactor -> Faulted + errorCode') and the fault table
    (RCD -> GroundFailure, welded contactor -> PowerSwitchFailure); connector 0 stays
    Available; the transaction is closed exactly once."""
    trigger = "fault %s\nev_pause" % fault if fault == "contactor_weld" else "fault %s" % fault
    run = simulate("""
        %s
        wait 2min
        %s
        wait_for ocpp_status == Faulted timeout=10s
        wait 30s
        swipe 04A1B2C3
        wait 10s
        unplug
        wait 30s
    """ % (CHARGE, trigger.replace("\n", "\n        ")))
    run.assert_scenario_held()
    csms = run.csms
    faulted = [p for p in payloads(csms, "StatusNotification") if p["status"] == "Faulted"]
    assert faulted, run.transcript()
    assert faulted[0]["connectorId"] == 1
    assert faulted[0]["errorCode"] == error_code
    assert statuses(csms, 0) == ["Available"]
    stops = calls(csms, "StopTransaction")
    assert len(stops) == 1
    assert stops[0].payload["transactionId"] == 1


# ------------------------------------------------------------------------------ 4. authorize

def test_authorize_accepted_starts_transaction_with_meter_readings():
    """E8 / TC_003_CS: a swipe sends Authorize; Accepted starts a transaction whose idTag is the
    swiped tag; meterStart/meterStop are the agent's energy register in Wh (standards §5.2:
    meterStop in Wh), meterStop - meterStart is the session energy the agent reports, and
    meterStop is the physical meter within one 1 s meter poll; a second swipe stops it
    (reason Local)."""
    async def operator(sim, csms):
        # the physical register when the charge point reported the stop (same virtual instant)
        start = (await wait_calls(csms, "StartTransaction", timeout=60)).time
        meter = sim.world.connectors[1].meter
        assert asyncio.get_running_loop().time() - start < 0.01
        at_start = meter.sample().energy_import_wh
        stop = (await wait_calls(csms, "StopTransaction", timeout=3600)).time
        at_stop = meter.sample().energy_import_wh
        assert asyncio.get_running_loop().time() - stop < 0.01
        return at_start, at_stop

    run = simulate("""
        wait 2s
        %s
        wait 20min
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        wait 5s
        expect energy >= 6kWh
        unplug
        wait 5s
    """ % CHARGE, operator)
    run.assert_scenario_held()
    at_start, at_stop = run.result
    csms, sim = run.csms, run.sim
    authorize = calls(csms, "Authorize")
    start = calls(csms, "StartTransaction")
    assert [r.payload for r in authorize] == [{"idTag": TAG}]
    assert answer(csms, authorize[0]).payload == {"idTagInfo": {"status": "Accepted"}}
    assert len(start) == 1 and authorize[0].time <= start[0].time
    assert start[0].payload["idTag"] == TAG
    assert start[0].payload["connectorId"] == 1
    tx = csms.station(CP).transactions[1]
    evse = sim.evse(1)
    assert tx["meter_start"] == evse.energy_start_wh
    assert tx["meter_stop"] == evse.energy_stop_wh
    assert tx["meter_stop"] - tx["meter_start"] == evse.session_energy_wh()
    one_poll_wh = 3 * 32 * 230 // 3600 + 1          # 22 kW for one 1 s meter poll
    assert at_start - one_poll_wh <= tx["meter_start"] <= at_start
    assert at_stop - one_poll_wh <= tx["meter_stop"] <= at_stop
    assert tx["reason"] == "Local"
    assert tx["stop_id_tag"] == TAG
    assert isinstance(tx["meter_start"], int) and isinstance(tx["meter_stop"], int)


@pytest.mark.parametrize("status", ["Invalid", "Blocked", "Expired"])
def test_rejected_tag_does_not_start_transaction(status):
    """E24 test_authorize_invalid_blocked_expired / TC_023_CS: an idTag the CSMS answers
    Invalid/Blocked/Expired starts no transaction; no power is offered."""
    run = simulate("""
        wait 2s
        plug
        wait_for ocpp_status == Preparing timeout=10s
        swipe BADTAG
        ev_ready
        wait 30s
        expect contactor == open
        expect offered_current == 0A
        expect session == authorizing
    """, id_tags={"BADTAG": status})
    run.assert_scenario_held()
    csms = run.csms
    authorize = calls(csms, "Authorize")
    assert [r.payload for r in authorize] == [{"idTag": "BADTAG"}]
    assert answer(csms, authorize[0]).payload == {"idTagInfo": {"status": status}}
    assert calls(csms, "StartTransaction") == []
    assert statuses(csms, 1) == ["Available", "Preparing"]


# ------------------------------------------------------------------------------ 5. remote start

def test_remote_start_on_connector_zero_rejected():
    """E15 test_remote_start_tx_connector_id_zero / TC_027_CS: RemoteStartTransaction with
    connectorId 0 is Rejected; nothing starts even when an EV is plugged in afterwards."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.remote_start(CP, REMOTE_TAG, connector_id=0)

    run = simulate("""
        wait 10s
        plug
        ev_ready
        wait 1min
        expect contactor == open
    """, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Rejected"}
    assert calls(run.csms, "StartTransaction") == []
    assert calls(run.csms, "Authorize") == []


@pytest.mark.parametrize("order", ["remote_first", "cable_first"])
def test_remote_start_accepted_starts_transaction(order):
    """E13 test_remote_charge_start_stop_remote_first/_cable_first, TC_010_CS/TC_011_1_CS:
    RemoteStartTransaction on connector 1 is Accepted and a transaction starts with the remote
    idTag once an EV is plugged; with AuthorizeRemoteTxRequests false (default) no Authorize."""
    async def operator(sim, csms):
        await booted(csms)
        if order == "cable_first":
            await wait_status(csms, "Preparing")
        return await csms.remote_start(CP, REMOTE_TAG, connector_id=1)

    plug = "" if order == "remote_first" else "plug\n"
    run = simulate("""
        wait 5s
        %s
        wait_for received RemoteStartTransaction == 1 timeout=1min
        wait 5s
        %s
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 1min
    """ % (plug, "plug" if order == "remote_first" else ""), operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    start = payloads(csms, "StartTransaction")
    assert len(start) == 1
    assert start[0]["idTag"] == REMOTE_TAG
    assert start[0]["connectorId"] == 1
    assert calls(csms, "Authorize") == []
    assert statuses(csms, 1)[:2] == ["Available", "Preparing"]
    assert statuses(csms, 1)[-1] == "Charging"


def test_remote_start_on_busy_connector_rejected():
    """TC_026_CS (remote start rejected), OCPP 1.6 §5.11: RemoteStartTransaction for a
    connector that already has a transaction is Rejected and starts nothing new."""
    async def operator(sim, csms):
        await started_tx(csms)
        await asyncio.sleep(10)
        return await csms.remote_start(CP, REMOTE_TAG, connector_id=1)

    run = simulate("""
        %s
        wait_for received RemoteStartTransaction == 1 timeout=10min
        wait 30s
        expect session == charging
    """ % CHARGE, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Rejected"}
    assert len(calls(run.csms, "StartTransaction")) == 1
    assert calls(run.csms, "StopTransaction") == []


def test_remote_start_with_authorize_remote_tx_requests_sends_authorize_first():
    """TC_F_01..03 analogue for 1.6, standards §5.4 AuthorizeRemoteTxRequests: when true the
    charge point sends Authorize for the remote idTag before StartTransaction."""
    async def operator(sim, csms):
        await booted(csms)
        changed = await csms.change_configuration(CP, "AuthorizeRemoteTxRequests", "true")
        started = await csms.remote_start(CP, REMOTE_TAG, connector_id=1)
        return changed, started

    run = simulate("""
        wait_for received RemoteStartTransaction == 1 timeout=1min
        wait 5s
        plug
        ev_ready
        wait_for ocpp_status == Charging timeout=10s
        wait 30s
    """, operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == ({"status": "Accepted"}, {"status": "Accepted"})
    authorize = calls(csms, "Authorize")
    start = calls(csms, "StartTransaction")
    assert [r.payload for r in authorize] == [{"idTag": REMOTE_TAG}]
    assert len(start) == 1 and start[0].payload["idTag"] == REMOTE_TAG
    assert authorize[0].time <= start[0].time
    assert csms.log.index(authorize[0]) < csms.log.index(start[0])


@pytest.mark.parametrize("how", ["swipe", "remote_start"])
def test_authorization_without_plug_expires_after_connection_timeout(how):
    """E10 test_regular_charging_session_identification_conn_timeout / TC_004_2_CS, E14
    test_remote_charge_start_timeout / TC_011_2_CS, standards §5.4 ConnectionTimeOut
    (Preparing -> cancel -> Available): with ConnectionTimeOut=5 set by the CSMS, a swipe or an
    accepted RemoteStartTransaction not followed by a plug-in goes Preparing, then Available
    after 5 s; an EV plugged in after that starts no transaction."""
    async def operator(sim, csms):
        await booted(csms)
        changed = await csms.change_configuration(CP, "ConnectionTimeOut", "5")
        started = None
        if how == "remote_start":
            started = await csms.remote_start(CP, REMOTE_TAG, connector_id=1)
        return changed, started

    run = simulate("""
        wait_for received %s == 1 timeout=1min
        wait 1s
        %s
        wait 10s
        plug
        ev_ready
        wait 30s
        expect contactor == open
    """ % ("ChangeConfiguration" if how == "swipe" else "RemoteStartTransaction",
           "swipe 04A1B2C3" if how == "swipe" else ""), operator)
    csms = run.csms
    changed, started = run.result
    assert changed == {"status": "Accepted"}
    assert started in (None, {"status": "Accepted"})
    assert calls(csms, "StartTransaction") == [], "authorization outlived ConnectionTimeOut=5"
    run.assert_scenario_held()
    records = status_records(csms, 1)
    assert [r.payload["status"] for r in records][:3] == ["Available", "Preparing", "Available"]
    waited = records[2].time - records[1].time
    assert 5 <= waited <= 6, "back to Available after %.1f s, ConnectionTimeOut 5" % waited


# ------------------------------------------------------------------------------ 6. remote stop

def test_remote_stop_ends_transaction_with_reason_remote():
    """E13 / TC_012_CS: RemoteStopTransaction for the running transaction is Accepted and the
    charge point sends StopTransaction(reason Remote), then Finishing."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(120)
        reply = await csms.remote_stop(CP, tx)
        await wait_calls(csms, "StopTransaction")
        await wait_status(csms, "Finishing", timeout=30)
        return tx, reply

    run = simulate("""
        %s
        wait_for received RemoteStopTransaction == 1 timeout=10min
        wait_for session == finishing timeout=30s
        wait 10s
        unplug
        wait 5s
    """ % CHARGE, operator)
    run.assert_scenario_held()
    tx_id, reply = run.result
    assert reply == {"status": "Accepted"}
    stop = payloads(run.csms, "StopTransaction")
    assert len(stop) == 1
    assert stop[0]["transactionId"] == tx_id
    assert stop[0]["reason"] == "Remote"
    assert run.csms.station(CP).transactions[tx_id]["meter_stop"] == run.sim.evse(1).energy_stop_wh
    assert statuses(run.csms, 1)[-2:] == ["Finishing", "Available"]


def test_remote_stop_unknown_transaction_rejected():
    """E16 test_remote_stop_tx_rejected / TC_028_CS: RemoteStopTransaction for a transaction id
    the charge point does not have is Rejected and the running transaction continues."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        return await csms.remote_stop(CP, tx + 1000)

    run = simulate("""
        %s
        wait_for received RemoteStopTransaction == 1 timeout=10min
        wait 30s
        expect session == charging
    """ % CHARGE, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Rejected"}
    assert calls(run.csms, "StopTransaction") == []


# ------------------------------------------------------------------------------ 7. reset

@pytest.mark.parametrize("kind", ["Soft", "Hard"])
def test_reset_during_transaction_stops_it_and_reboots(kind):
    """E17 test_soft_reset_with_transaction / test_hard_reset_with_transaction, TC_015/016_CS,
    DESIGN.md (a Reset reboots the agent inside the simulation, the world stays): Reset is
    Accepted, StopTransaction(reason SoftReset/HardReset) for the running transaction (for Soft
    before the reboot: OCPP 1.6 §5.14 'gracefully stop all transactions'), then a new
    BootNotification; the EV is still plugged in; the transaction is closed exactly once."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(120)
        reply = await csms.reset(CP, kind)
        await booted(csms, boots=2, timeout=120)
        await asyncio.sleep(20)
        return tx, reply

    run = simulate("""
        %s
        wait 5min
    """ % CHARGE, operator)
    csms, sim = run.csms, run.sim
    tx_id, reply = run.result
    assert reply == {"status": "Accepted"}
    stops = calls(csms, "StopTransaction")
    assert len(stops) == 1, run.transcript()
    assert stops[0].payload["transactionId"] == tx_id
    assert stops[0].payload["reason"] == kind + "Reset"
    boots = calls(csms, "BootNotification")
    assert csms.station(CP).boots == 2 and len(boots) == 2
    if kind == "Soft":
        assert stops[0].time <= boots[1].time
    assert sim.boots == 2
    assert sim.world.connectors[1].ev is not None       # the cable is still plugged
    assert statuses(csms, 1, after=boots[1].time)[-1] == "Preparing"
    assert csms.station(CP).transactions[tx_id]["meter_stop"] is not None


def test_status_after_reboot_with_ev_plugged_never_says_available():
    """standards §5.2 (Available = 'free for a new user'; plug-in, not authorized ->
    Preparing), E17/E18 ('reports StatusNotification again'): after a reboot with an EV still
    plugged in, connector 1 is reported Preparing; it is never reported Available meanwhile
    (the CSMS would see a phantom unplug/replug)."""
    async def operator(sim, csms):
        await booted(csms)
        await wait_status(csms, "Preparing")
        reply = await csms.reset(CP, "Soft")
        await booted(csms, boots=2)
        await asyncio.sleep(10)
        return reply

    run = simulate("""
        wait 2s
        plug
        wait 1min
    """, operator)
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2
    assert statuses(csms, 1, after=boots[1].time) == ["Preparing"], run.transcript()


def test_reset_while_idle_reboots_and_reports_status_again():
    """E18 test_soft_reset_without_tx / test_hard_reset_no_tx, TC_013/014_CS: the charge point
    reboots, sends BootNotification again, and reports StatusNotification again."""
    async def operator(sim, csms):
        await booted(csms)
        reply = await csms.reset(CP, "Hard")
        await booted(csms, boots=2)
        return reply

    run = simulate("wait 1min", operator)
    csms = run.csms
    assert run.result == {"status": "Accepted"}
    boots = calls(csms, "BootNotification")
    assert len(boots) == 2
    assert statuses(csms, 0, after=boots[1].time) == ["Available"]
    assert statuses(csms, 1, after=boots[1].time) == ["Available"]
    assert calls(csms, "StopTransaction") == []


def test_power_loss_during_transaction_closes_it_with_power_loss():
    """E7 booting.py::test_stop_pending_transactions, DESIGN.md §6 ('a transaction cut by power
    loss is closed with reason PowerLoss'), TC_032_CS: the agent restarts mid-transaction
    without any warning (same hardware, same persistent storage); after the new boot it sends
    StopTransaction(reason PowerLoss) for the open transaction. Its meterStop is the meter's
    first reading after the boot (its register holds what flowed up to the cut, after the
    last MeterValues), stamped with the time the transaction was last seen."""
    cut = {}

    async def operator(sim, csms):
        tx = await started_tx(csms)
        await wait_calls(csms, "MeterValues", 2)
        await asyncio.sleep(5)
        cut["wh"] = sim.world.connectors[1].meter.import_wms // 3600000
        await sim.reboot("Hard")            # the power cut: no Reset, no graceful stop
        await booted(csms, boots=2)
        try:
            await wait_calls(csms, "StopTransaction", timeout=60)
        except asyncio.TimeoutError:
            pass
        cut["after"] = sim.world.connectors[1].meter.import_wms // 3600000
        return tx

    run = simulate("""
        %s
        wait 10min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id = run.result
    stops = payloads(csms, "StopTransaction")
    assert len(stops) == 1, "no StopTransaction after the power loss:\n" + run.transcript()
    assert stops[0]["transactionId"] == tx_id
    assert stops[0]["reason"] == "PowerLoss"
    values = csms.station(CP).transactions[tx_id]["meter_values"]
    assert energy_register(values[-1]) + 20 < cut["wh"]        # 5 s at 22 kW after it
    # (reboot() lets half a second pass before the cut; nothing flows after the boot)
    assert cut["wh"] <= stops[0]["meterStop"] == cut["after"]
    assert stops[0]["timestamp"] == values[-1]["timestamp"]


# ------------------------------------------------------------------------------ 8. configuration

def test_change_configuration_rules_and_persistence_across_reset():
    """TC_019/021/040_1/040_2_CS, E23, standards §5.4: an Accepted value is persisted across a
    reboot (GetConfiguration after Reset returns it); a read-only key is Rejected, an unknown key
    NotSupported, a bad value Rejected; GetConfiguration lists unknown keys in unknownKey;
    AuthorizationKey is write-only (listed, never with a value)."""
    async def operator(sim, csms):
        await booted(csms)
        change = csms.change_configuration
        got = {
            "sample": await change(CP, "MeterValueSampleInterval", "30"),
            "timeout": await change(CP, "ConnectionTimeOut", "45"),
            "bool": await change(CP, "StopTransactionOnInvalidId", "false"),
            "csl": await change(CP, "MeterValuesSampledData",
                                "Energy.Active.Import.Register,Voltage"),
            "read_only": await change(CP, "NumberOfConnectors", "2"),
            "read_only_2": await change(CP, "GetConfigurationMaxKeys", "10"),
            "unknown": await change(CP, "NoSuchKeyAtAll", "1"),
            "negative": await change(CP, "MeterValueSampleInterval", "-1"),
            "text": await change(CP, "MeterValueSampleInterval", "abc"),
            "decimal": await change(CP, "HeartbeatInterval", "1.5"),
            "bad_bool": await change(CP, "StopTransactionOnInvalidId", "maybe"),
            "bad_measurand": await change(CP, "MeterValuesSampledData", "Energy.Bogus"),
            "auth_key": await change(CP, "AuthorizationKey", AUTH_KEY),
        }
        got["before"] = await csms.get_configuration(
            CP, ["MeterValueSampleInterval", "NoSuchKeyAtAll", "AuthorizationKey",
                 "AnotherUnknown"])
        got["reset"] = await csms.reset(CP, "Soft")
        await booted(csms, boots=2)
        got["after"] = await csms.get_configuration(
            CP, ["MeterValueSampleInterval", "ConnectionTimeOut", "StopTransactionOnInvalidId",
                 "MeterValuesSampledData", "NumberOfConnectors", "AuthorizationKey"])
        got["all"] = await csms.get_configuration(CP)
        return got

    run = simulate("wait 2min", operator)
    got = run.result
    for name in ("sample", "timeout", "bool", "csl", "auth_key"):
        assert got[name] == {"status": "Accepted"}, name
    for name in ("read_only", "read_only_2", "negative", "text", "decimal", "bad_bool",
                 "bad_measurand"):
        assert got[name] == {"status": "Rejected"}, name
    assert got["unknown"] == {"status": "NotSupported"}
    assert got["before"]["configurationKey"] == [
        {"key": "MeterValueSampleInterval", "readonly": False, "value": "30"},
        {"key": "AuthorizationKey", "readonly": False}]
    assert got["before"]["unknownKey"] == ["NoSuchKeyAtAll", "AnotherUnknown"]
    assert got["reset"] == {"status": "Accepted"}
    assert run.csms.station(CP).boots == 2
    assert got["after"]["configurationKey"] == [
        {"key": "MeterValueSampleInterval", "readonly": False, "value": "30"},
        {"key": "ConnectionTimeOut", "readonly": False, "value": "45"},
        {"key": "StopTransactionOnInvalidId", "readonly": False, "value": "false"},
        {"key": "MeterValuesSampledData", "readonly": False,
         "value": "Energy.Active.Import.Register,Voltage"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "1"},
        {"key": "AuthorizationKey", "readonly": False}]
    assert "unknownKey" not in got["after"]
    everything = {k["key"]: k for k in got["all"]["configurationKey"]}
    assert "value" not in everything["AuthorizationKey"]
    assert [r for r in run.csms.log if r.direction == "from_cp" and AUTH_KEY in r.raw] == []
    assert everything["MeterValueSampleInterval"]["value"] == "30"
    for required in ("HeartbeatInterval", "ConnectionTimeOut", "MeterValueSampleInterval",
                     "MeterValuesSampledData", "ClockAlignedDataInterval",
                     "MeterValuesAlignedData", "StopTxnSampledData", "StopTxnAlignedData",
                     "TransactionMessageAttempts", "TransactionMessageRetryInterval",
                     "StopTransactionOnEVSideDisconnect", "UnlockConnectorOnEVSideDisconnect",
                     "StopTransactionOnInvalidId", "LocalPreAuthorize", "LocalAuthorizeOffline",
                     "AuthorizeRemoteTxRequests", "ResetRetries", "ConnectorPhaseRotation",
                     "GetConfigurationMaxKeys", "NumberOfConnectors",
                     "SupportedFeatureProfiles"):
        assert required in everything, required


# ------------------------------------------------------------------------------ 9. availability

def test_change_availability_idle():
    """TC_G_03/04-like for 1.6, standards §5.2 (Unavailable by ChangeAvailability): Inoperative
    while idle is Accepted and reported Unavailable; no session can start; Operative brings it
    back to Available."""
    async def operator(sim, csms):
        await booted(csms)
        off = await csms.change_availability(CP, 1, "Inoperative")
        await wait_status(csms, "Unavailable")
        await asyncio.sleep(40)
        on = await csms.change_availability(CP, 1, "Operative")
        await wait_status(csms, "Available")
        return off, on

    run = simulate("""
        wait_for ocpp_status == Unavailable timeout=1min
        swipe 04A1B2C3
        wait 10s
        expect contactor == open
        wait 1min
    """, operator)
    run.assert_scenario_held()
    off, on = run.result
    assert off == {"status": "Accepted"}
    assert on == {"status": "Accepted"}
    assert statuses(run.csms, 1) == ["Available", "Unavailable", "Available"]
    assert calls(run.csms, "StartTransaction") == []


def test_change_availability_during_transaction_scheduled_then_persisted_across_reset():
    """E44 change_availability.py::test_change_availability_scheduled_in_transaction, E25
    test_power_failure_with_unavailable_status, TC_G_11/18-like: Inoperative during a transaction
    is Scheduled and charging goes on; once the transaction ends the connector is Unavailable;
    after a Reset it is still Unavailable; Operative makes it usable again."""
    async def operator(sim, csms):
        await started_tx(csms)
        await asyncio.sleep(60)
        scheduled = await csms.change_availability(CP, 1, "Inoperative")
        await wait_calls(csms, "StopTransaction", timeout=600)
        await wait_status(csms, "Unavailable", timeout=60)
        await asyncio.sleep(10)
        reset = await csms.reset(CP, "Soft")
        await booted(csms, boots=2)
        await asyncio.sleep(30)
        after_reset = last_status(csms, 1)
        operative = await csms.change_availability(CP, 1, "Operative")
        await asyncio.sleep(10)
        return scheduled, reset, after_reset, operative

    run = simulate("""
        %s
        wait_for received ChangeAvailability == 1 timeout=10min
        wait 30s
        expect session == charging
        expect ocpp_status == Charging
        swipe 04A1B2C3
        wait 10min
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    scheduled, reset, after_reset, operative = run.result
    assert scheduled == {"status": "Scheduled"}
    assert reset == {"status": "Accepted"}
    stop = calls(csms, "StopTransaction")[0]
    unavailable = [r for r in status_records(csms, 1) if r.payload["status"] == "Unavailable"]
    assert unavailable and unavailable[0].time >= stop.time
    boots = calls(csms, "BootNotification")
    assert statuses(csms, 1, after=boots[1].time)[0] == "Unavailable"
    assert after_reset == "Unavailable"
    assert operative == {"status": "Accepted"}
    assert last_status(csms, 1) == "Preparing"          # the EV is still plugged in


@pytest.mark.parametrize("connector", [0, 1])
def test_change_availability_scheduled_leaves_the_charge_point_available_until_the_end(
        connector):
    """OCPP 1.6 §5.2, TC_G_11/14/17: a change Scheduled behind a transaction has not happened
    yet, so neither the connector nor the charge point (connector 0) is reported Unavailable
    before the transaction ends; both are after it."""
    async def operator(sim, csms):
        await started_tx(csms)
        await asyncio.sleep(30)
        scheduled = await csms.change_availability(CP, connector, "Inoperative")
        await wait_calls(csms, "StopTransaction", timeout=600)
        await wait_status(csms, "Unavailable", connector=0, timeout=60)
        return scheduled

    run = simulate("""
        %s
        wait_for received ChangeAvailability == 1 timeout=10min
        wait 1min
        swipe 04A1B2C3
        wait 2min
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    assert run.result == {"status": "Scheduled"}
    stop = calls(csms, "StopTransaction")[0]
    for connector_id in (0, 1):
        early = [r.payload["status"] for r in status_records(csms, connector_id)
                 if r.time < stop.time]
        assert "Unavailable" not in early, (connector_id, early)
        assert statuses(csms, connector_id, after=stop.time)[-1:] == ["Unavailable"]


# ------------------------------------------------------------------------------ 10. trigger

@pytest.mark.parametrize("message", ["StatusNotification", "MeterValues", "Heartbeat",
                                     "BootNotification"])
def test_trigger_message_accepted_and_sent_after_the_answer(message):
    """E35 test_trigger_message, TC_054_CS, OCPP 1.6 §5.17 (the TriggerMessage answer first,
    then the requested message): during a transaction each Core message can be triggered; the
    triggered MeterValues carry context Trigger and the transactionId; a triggered
    BootNotification does not stop the transaction."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(30)
        before = len(calls(csms, message))
        connector = 1 if message in ("StatusNotification", "MeterValues") else None
        reply = await csms.trigger_message(CP, message, connector_id=connector)
        record = await wait_calls(csms, message, before + 1, timeout=30)
        return tx, reply, record

    run = simulate("""
        %s
        wait_for received TriggerMessage == 1 timeout=10min
        wait 30s
        expect session == charging
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    tx_id, reply, record = run.result
    assert reply == {"status": "Accepted"}
    trigger = csms.records(CP, "TriggerMessage", "CALLRESULT", "from_cp")[0]
    assert csms.log.index(trigger) < csms.log.index(record)
    if message == "StatusNotification":
        assert record.payload["connectorId"] == 1
        assert record.payload["status"] == "Charging"
        assert record.payload["errorCode"] == "NoError"
    elif message == "MeterValues":
        assert record.payload["connectorId"] == 1
        assert record.payload["transactionId"] == tx_id
        contexts = {s["context"] for mv in record.payload["meterValue"]
                    for s in mv["sampledValue"]}
        assert contexts == {"Trigger"}
    elif message == "Heartbeat":
        assert record.payload == {}
    else:
        assert csms.station(CP).boots == 2
        assert answer(csms, record).payload["status"] == "Accepted"
    assert calls(csms, "StopTransaction") == []


def test_trigger_message_unknown_connector_and_unsupported_message():
    """E35 test_trigger_message_rejected: an unknown connector gives Rejected. A trigger for a
    message outside the 1.6 enumeration is a schema violation (CALLERROR
    PropertyConstraintViolation, OCPP-J 1.6 §4.2.3); a Firmware-Management message the charge
    point does not offer (SupportedFeatureProfiles) is NotImplemented or, if Accepted, sent with
    status Idle (OCPP 1.6 §5.17)."""
    async def operator(sim, csms):
        await booted(csms)
        got = {"connector": await csms.trigger_message(CP, "StatusNotification",
                                                       connector_id=2)}
        try:
            await csms.call(CP, "TriggerMessage",
                            {"requestedMessage": "SignChargePointCertificate"}, validate=False)
            got["enum"] = None
        except CallErrorReceived as error:
            got["enum"] = error.code
        got["diagnostics"] = await csms.trigger_message(CP, "DiagnosticsStatusNotification")
        await asyncio.sleep(5)
        return got

    run = simulate("wait 1min", operator)
    got = run.result
    assert got["connector"] == {"status": "Rejected"}
    assert got["enum"] == "PropertyConstraintViolation"
    assert got["diagnostics"]["status"] in ("Accepted", "NotImplemented")
    sent = payloads(run.csms, "DiagnosticsStatusNotification")
    if got["diagnostics"]["status"] == "Accepted":
        assert sent == [{"status": "Idle"}]
    else:
        assert sent == []


# ------------------------------------------------------------------------------ 11. unlock

def test_unlock_connector_during_transaction_stops_it():
    """E19 test_unlock_connector_with_charging_session_no_fixed_cable / TC_018_1_CS:
    UnlockConnector during a transaction answers Unlocked, the transaction stops with reason
    UnlockCommand, and the connector is Finishing (the cable is still in)."""
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        reply = await csms.unlock_connector(CP, 1)
        await wait_calls(csms, "StopTransaction", timeout=30)
        await asyncio.sleep(5)
        return tx, reply

    run = simulate("""
        %s
        wait_for received UnlockConnector == 1 timeout=10min
        wait 30s
        expect contactor == open
    """ % CHARGE, operator)
    run.assert_scenario_held()
    tx_id, reply = run.result
    stop = payloads(run.csms, "StopTransaction")
    assert len(stop) == 1
    assert stop[0]["transactionId"] == tx_id
    assert stop[0]["reason"] == "UnlockCommand"
    assert last_status(run.csms, 1) == "Finishing"
    assert reply == {"status": "Unlocked"}
    assert run.sim.world.connectors[1].lock.locked is False


def test_unlock_unknown_connector_not_supported():
    """E20 test_unlock_unknown_connector / TC_031_CS: connector 2 on a one-connector charge
    point gives NotSupported."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.unlock_connector(CP, 2)

    run = simulate("wait 20s", operator)
    assert run.result == {"status": "NotSupported"}


def test_unlock_with_a_welded_contactor_answers_unlock_failed():
    """OCPP 1.6 §5.18 / TC_030 (unlock failure): the answer says whether the connector was
    unlocked. A welded contactor keeps the plug live, so the lock stays shut: the transaction
    is stopped, and the answer, which waits for the lock, is UnlockFailed."""
    async def operator(sim, csms):
        await started_tx(csms)
        await asyncio.sleep(30)
        asked = now()
        reply = await csms.unlock_connector(CP, 1, timeout=30)
        return reply, now() - asked

    run = simulate("""
        %s
        wait 10s
        fault contactor_weld
        wait_for received UnlockConnector == 1 timeout=10min
        wait 1min
    """ % CHARGE, operator)
    reply, waited = run.result
    assert reply == {"status": "UnlockFailed"}
    assert [p["reason"] for p in payloads(run.csms, "StopTransaction")] == ["UnlockCommand"]
    assert lock_locked(run.sim) is True
    assert waited < 10          # the CSMS's call timeout here


def test_unlock_answer_comes_once_the_lock_is_open():
    """OCPP 1.6 §5.18: Unlocked means unlocked. The answer to an UnlockConnector during a
    transaction leaves only after the contactor opened and the lock released."""
    answered = {}

    async def operator(sim, csms):
        await started_tx(csms)
        await asyncio.sleep(30)
        reply = await csms.unlock_connector(CP, 1, timeout=30)
        answered["lock"] = lock_locked(sim)
        answered["contactor"] = sim.world.connectors[1].contactor.closed
        return reply

    run = simulate("""
        %s
        wait_for received UnlockConnector == 1 timeout=10min
        wait 30s
    """ % CHARGE, operator)
    assert run.result == {"status": "Unlocked"}
    assert answered == {"lock": False, "contactor": False}


def test_clear_cache_and_data_transfer():
    """TC_061_CS ClearCache -> Accepted; TC_062_CS DataTransfer for a vendor the charge point
    does not know -> UnknownVendorId (OCPP 1.6 §5.6/§4.3)."""
    async def operator(sim, csms):
        await booted(csms)
        return (await csms.clear_cache(CP),
                await csms.data_transfer(CP, "com.example.nobody", "Hello", "{}"))

    run = simulate("wait 20s", operator)
    assert run.result == ({"status": "Accepted"}, {"status": "UnknownVendorId"})


# ------------------------------------------------------------------------------ 12. CALLERRORs

def test_action_of_unsupported_profile_gets_not_supported():
    """OCPP-J 1.6 §4.2.3 (NotSupported: 'recognized but not supported'; NotImplemented: 'not
    known'): ReserveNow (Reservation profile, not offered) with a valid payload gets CALLERROR
    NotSupported; an action that does not exist gets NotImplemented; the charge point carries
    on (a valid request afterwards is answered)."""
    async def operator(sim, csms):
        await booted(csms)
        got = {}
        try:
            await csms.call(CP, "ReserveNow", {
                "connectorId": 1, "expiryDate": "2030-01-01T01:00:00Z", "idTag": TAG,
                "reservationId": 7})
        except CallErrorReceived as error:
            got["reserve"] = error.code
        try:
            await csms.call(CP, "MakeCoffee", {"strength": 3}, validate=False)
        except CallErrorReceived as error:
            got["unknown"] = error.code
        got["after"] = await csms.get_configuration(CP, ["NumberOfConnectors"])
        return got

    run = simulate("wait 30s", operator)
    assert run.result["reserve"] == "NotSupported"
    assert run.result["unknown"] == "NotImplemented"
    assert run.result["after"]["configurationKey"][0]["value"] == "1"


@pytest.mark.parametrize("action,payload,code", [
    ("ChangeConfiguration", {"key": "HeartbeatInterval"}, "OccurenceConstraintViolation"),
    ("ChangeAvailability", {"connectorId": "1", "type": "Inoperative"},
     "TypeConstraintViolation"),
    ("Reset", {"type": "Medium"}, "PropertyConstraintViolation"),
    ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60", "extra": 1},
     "FormationViolation"),
])
def test_schema_invalid_request_gets_the_right_callerror(action, payload, code):
    """OCPP-J 1.6 §4.2.3, DESIGN.md decision 9, E41 broken.py::test_missing_payload_field /
    test_wrong_payload_type: a request that fails the schema is answered with the CALLERROR
    code for what is wrong (missing field -> OccurenceConstraintViolation, wrong type ->
    TypeConstraintViolation, value outside the enumeration -> PropertyConstraintViolation,
    undeclared property -> FormationViolation), and is not applied."""
    async def operator(sim, csms):
        await booted(csms)
        try:
            await csms.call(CP, action, payload, validate=False)
            error = None
        except CallErrorReceived as raised:
            error = raised.code
        after = await csms.get_configuration(CP, ["HeartbeatInterval"])
        await asyncio.sleep(5)
        return error, after

    run = simulate("wait 30s", operator, heartbeat_interval=300)
    error, after = run.result
    assert error == code
    assert after["configurationKey"][0]["value"] == "300"
    assert calls(run.csms, "BootNotification") == calls(run.csms, "BootNotification")[:1]
    assert last_status(run.csms, 1) == "Available"


# ------------------------------------------------------------------------------ 13. meter values

def test_sampled_meter_values_every_sample_interval():
    """E21 test_sampled_meter_values / TC_070_CS, standards §5.3/§5.4: with
    MeterValueSampleInterval=30 (ChangeConfiguration) a transaction gets a MeterValues every
    30 s with its transactionId, context Sample.Periodic and the MeterValuesSampledData
    measurands; the energy register is monotonic, rising while charging, between meterStart and
    meterStop."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.change_configuration(CP, "MeterValueSampleInterval", "30")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 5min
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        unplug
        wait 5s
    """ % CHARGE, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Accepted"}
    csms = run.csms
    tx = csms.station(CP).transactions[1]
    start = calls(csms, "StartTransaction")[0]
    stop = calls(csms, "StopTransaction")[0]
    samples = tx_meter_values(csms, 1, "Sample.Periodic")
    assert len(samples) == 10, run.transcript()
    times = [start.time] + [r.time for r in samples]
    for earlier, later in zip(times, times[1:]):
        assert 29.5 <= later - earlier <= 30.5
    registers = []
    for r in samples:
        assert r.payload["connectorId"] == 1
        assert r.payload["transactionId"] == 1
        for mv in r.payload["meterValue"]:
            measurands = [s.get("measurand", "Energy.Active.Import.Register")
                          for s in mv["sampledValue"]]
            assert set(measurands) == {"Energy.Active.Import.Register", "Power.Active.Import"}
            assert {s["context"] for s in mv["sampledValue"]} == {"Sample.Periodic"}
            registers.append(energy_register(mv))
    stamps = [parse_ts(mv["timestamp"]) for r in samples for mv in r.payload["meterValue"]]
    for earlier, later in zip(stamps, stamps[1:]):
        assert abs((later - earlier).total_seconds() - 30) <= 0.1
    assert registers == sorted(registers)
    assert all(b > a for a, b in zip(registers, registers[1:]))      # charging all along
    assert tx["meter_start"] <= registers[0] and registers[-1] <= tx["meter_stop"]
    assert samples[-1].time <= stop.time


def test_clock_aligned_meter_values_follow_the_changed_interval():
    """E22 test_clock_aligned_meter_values / TC_071_CS, standards §5.4 ClockAlignedDataInterval:
    after ChangeConfiguration ClockAlignedDataInterval=60, MeterValues with context Sample.Clock
    arrive at every whole minute of the charge point's clock (the CSMS's clock here)."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.change_configuration(CP, "ClockAlignedDataInterval", "60")

    run = simulate("wait 4min", operator)
    assert run.result == {"status": "Accepted"}
    aligned = [r for r in calls(run.csms, "MeterValues")
               if all(s.get("context") == "Sample.Clock"
                      for mv in r.payload["meterValue"] for s in mv["sampledValue"])]
    assert len(aligned) >= 3, run.transcript()
    for r in aligned:
        stamp = parse_ts(r.payload["meterValue"][0]["timestamp"])
        assert stamp.second == 0 and stamp.microsecond < 100000
        assert "transactionId" not in r.payload


def test_stop_transaction_carries_the_configured_transaction_data():
    """OCPP 1.6 §9.1 StopTxnSampledData / StopTxnAlignedData, TC_J_03-like: the Stop's
    transactionData holds the sampled measurands from the start (Transaction.Begin), every
    MeterValueSampleInterval, the clock-aligned ones every ClockAlignedDataInterval and the
    end (Transaction.End); bounded at STOP_TX_DATA_MAX, where the newest replaces the last."""
    from agent.ocpp16 import STOP_TX_DATA_MAX

    async def operator(sim, csms):
        await booted(csms)
        await configure(csms, StopTxnSampledData="Energy.Active.Import.Register",
                        StopTxnAlignedData="Energy.Active.Import.Register,Power.Active.Import",
                        MeterValueSampleInterval="60", ClockAlignedDataInterval="300")

    run = simulate("""
        wait_for received ChangeConfiguration == 4 timeout=1min
        %s
        wait 20min
        swipe 04A1B2C3
        wait_for ocpp_status == Finishing timeout=10s
        wait 5s
    """ % CHARGE, operator)
    run.assert_scenario_held()
    (stop,) = payloads(run.csms, "StopTransaction")
    data = stop["transactionData"]
    contexts = [{s["context"] for s in mv["sampledValue"]} for mv in data]
    assert len(data) == STOP_TX_DATA_MAX
    assert contexts[0] == {"Transaction.Begin"} and contexts[-1] == {"Transaction.End"}
    assert {"Sample.Periodic"} in contexts and {"Sample.Clock"} in contexts
    clock = [mv for mv, c in zip(data, contexts) if c == {"Sample.Clock"}]
    assert all({s["measurand"] for s in mv["sampledValue"]} ==
               {"Energy.Active.Import.Register", "Power.Active.Import"} for mv in clock)
    registers = [energy_register(mv) for mv in data]
    assert registers == sorted(registers)
    start = payloads(run.csms, "StartTransaction")[0]
    assert registers[0] == start["meterStart"] and registers[-1] == stop["meterStop"]
    stamps = [parse_ts(mv["timestamp"]) for mv in data]
    assert stamps == sorted(stamps)



# ------------------------------------------------------------------------------ 14. offline

def test_offline_during_transaction_delivers_queued_messages_in_order():
    """E27 test_connection_loss_during_transaction, E30 test_offline_stop_transaction, TC_036_CS,
    DESIGN.md §6 (never lost, replayed in order), standards §5.2 ('after being offline, send only
    the current status'): during a transaction the CSMS is gone for 5 min; the MeterValues
    sampled while offline and the StopTransaction of a stop made while offline reach the CSMS
    after the reconnect, in order, none lost, none duplicated, exactly as produced; the status
    sent after the reconnect is only the current one."""
    produced = []

    def record_journal(sim):
        append = sim.cp.journal.append

        def recording_append(record):
            produced.append((asyncio.get_running_loop().time(), copy.deepcopy(record)))
            return append(record)
        sim.cp.journal.append = recording_append

    async def operator(sim, csms):
        await booted(csms)
        return await csms.change_configuration(CP, "MeterValueSampleInterval", "30")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 2min
        csms_offline 5min
        wait 2min
        swipe 04A1B2C3
        wait_for session == finishing timeout=10s
        wait 1min
        unplug
        wait_for ocpp_status == Available timeout=5min
        wait 1min
    """ % CHARGE, operator, on_boot=record_journal)
    run.assert_scenario_held()
    csms = run.csms
    disconnected = [e.time for e in csms.connection_events if e.event == "disconnected"]
    connected = [e.time for e in csms.connection_events if e.event == "connected"]
    assert len(connected) == 2          # (the last disconnect is the end of the run)
    assert 299 <= connected[1] - disconnected[0] <= 305
    offline, online = disconnected[0], connected[1]
    assert not [r for r in csms.log if offline < r.time < online]

    tx_id = 1
    produced_mv = [rec["payload"]["meterValue"] for t, rec in produced
                   if rec["action"] == "MeterValues"]
    produced_while_offline = [t for t, rec in produced
                              if rec["action"] == "MeterValues" and offline < t < online]
    assert len(produced_while_offline) == 4       # every 30 s for the 2 min until the stop
    received_mv = [r.payload["meterValue"] for r in tx_meter_values(csms, tx_id)]
    assert received_mv == produced_mv, "MeterValues lost, duplicated or reordered"
    assert csms.station(CP).transactions[tx_id]["meter_values"] == \
        [mv for batch in produced_mv for mv in batch]

    produced_stop = [rec for t, rec in produced if rec["action"] == "StopTransaction"]
    assert len(produced_stop) == 1
    stops = calls(csms, "StopTransaction")
    assert len(stops) == 1
    assert stops[0].payload == dict(produced_stop[0]["payload"], transactionId=tx_id)
    assert stops[0].payload["reason"] == "Local"
    assert stops[0].time >= online
    stop_index = csms.log.index(stops[0])
    assert all(csms.log.index(r) < stop_index for r in tx_meter_values(csms, tx_id))
    stamps = [parse_ts(mv["timestamp"]) for batch in received_mv for mv in batch]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

    # only the current status after the reconnect (the offline Finishing is history)
    assert statuses(csms, 1, after=online) == ["Available"]
    assert statuses(csms, 0, after=online) == []


def test_status_queued_when_the_link_drops_is_sent_after_the_reconnect():
    """spec/standards.md §5.2, TC_B_51/52-like: a StatusNotification still queued when the
    connection drops never reached the CSMS, so after the reconnect the current status is sent
    (here Charging, queued behind a StartTransaction the CSMS left unanswered)."""
    async def operator(sim, csms):
        csms.overrides["StartTransaction"] = lambda cp_id, payload: NO_REPLY
        await wait_calls(csms, "StartTransaction")
        await asyncio.sleep(3)              # Charging is queued behind the unanswered Start
        del csms.overrides["StartTransaction"]
        await csms.go_away(3)
        await started_tx(csms, count=2, timeout=120)     # the Start, replayed
        await wait_status(csms, "Charging", timeout=60)

    run = simulate("""
        plug
        swipe 04A1B2C3
        ev_ready
        wait 2min
    """, operator)
    csms = run.csms
    reconnected = connection_times(csms, "connected")[1]
    assert "Charging" in statuses(csms, 1, after=reconnected)
    assert last_status(csms, 1) == "Charging"


def test_transaction_started_and_stopped_offline_is_replayed_after_reconnect():
    """E28/E29 test_offline_start_transaction / test_offline_transaction, TC_037/039_CS:
    with AllowOfflineTxForUnknownId=true a swipe while the CSMS is unreachable starts a
    transaction; after the reconnect StartTransaction, its MeterValues (with the transactionId
    the CSMS then gave) and StopTransaction(Local) are delivered in that order."""
    async def operator(sim, csms):
        await booted(csms)
        return await csms.change_configuration(CP, "AllowOfflineTxForUnknownId", "true")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        csms_offline 10min
        wait 5s
        plug
        swipe 04A1B2C3
        ev_ready
        wait_for session == charging timeout=10s
        wait 3min
        swipe 04A1B2C3
        wait_for session == finishing timeout=10s
        wait 10s
        unplug
        wait 10min
    """, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Accepted"}
    csms = run.csms
    tx_calls = [r for r in calls(csms) if r.action in
                ("StartTransaction", "MeterValues", "StopTransaction")
                and (r.action != "MeterValues" or "transactionId" in r.payload)]
    actions = [r.action for r in tx_calls]
    assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction", actions
    assert actions.count("StartTransaction") == 1 and actions.count("StopTransaction") == 1
    assert actions.count("MeterValues") >= 2
    tx_id = answer(csms, tx_calls[0]).payload["transactionId"]
    assert tx_calls[0].payload["idTag"] == TAG
    for r in tx_calls[1:]:
        assert r.payload["transactionId"] == tx_id
    assert tx_calls[-1].payload["reason"] == "Local"
    assert parse_ts(tx_calls[0].payload["timestamp"]) < parse_ts(tx_calls[-1].payload["timestamp"])


# ------------------------------------------------------------------------------ 15. invalid id

def test_start_transaction_invalid_id_stops_with_deauthorized():
    """standards §5.4 StopTransactionOnInvalidId (default true), TC_023_CS-like: Authorize
    Accepted, but StartTransaction.conf carries idTagInfo Invalid: the charge point stops the
    transaction with reason DeAuthorized."""
    async def operator(sim, csms):
        def start_override(cp_id, payload):
            csms.id_tags[payload["idTag"]] = "Invalid"
            return None                     # the built-in answer, now with Invalid
        csms.overrides["StartTransaction"] = start_override
        await booted(csms)

    run = simulate("""
        wait 2s
        plug
        swipe 04A1B2C3
        ev_ready
        wait_for session == finishing timeout=1min
        wait 10s
        expect contactor == open
        unplug
        wait 10s
    """, operator)
    run.assert_scenario_held()
    csms = run.csms
    start = calls(csms, "StartTransaction")
    assert len(start) == 1
    reply = answer(csms, start[0]).payload
    assert reply["idTagInfo"] == {"status": "Invalid"}
    stop = payloads(csms, "StopTransaction")
    assert len(stop) == 1
    assert stop[0]["transactionId"] == reply["transactionId"]
    assert stop[0]["reason"] == "DeAuthorized"


def test_start_transaction_invalid_id_without_stop_suspends():
    """standards §5.2/§5.4: with StopTransactionOnInvalidId=false a StartTransaction.conf that is
    not Accepted keeps the transaction but offers no energy (SuspendedEVSE)."""
    async def operator(sim, csms):
        def start_override(cp_id, payload):
            csms.id_tags[payload["idTag"]] = "Invalid"
            return None
        csms.overrides["StartTransaction"] = start_override
        await booted(csms)
        return await csms.change_configuration(CP, "StopTransactionOnInvalidId", "false")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        plug
        swipe 04A1B2C3
        ev_ready
        wait 1min
        expect contactor == open
        expect session == suspended_evse
        expect ocpp_status == SuspendedEVSE
    """, operator)
    run.assert_scenario_held()
    assert run.result == {"status": "Accepted"}
    assert calls(run.csms, "StopTransaction") == []


# ------------------------------------------------------------------------------ more: E12, E42/43

def test_ev_side_disconnect_with_stop_on_ev_side_disconnect_false():
    """E12 test_ev_side_disconnect_tx_active / TC_005_x_CS, standards §5.2 table ('Unplug
    during tx, StopTransactionOnEVSideDisconnect = false -> SuspendedEV, tx continues'): the
    transaction survives the unplug; RemoteStop then stops it with reason Remote."""
    async def operator(sim, csms):
        await booted(csms)
        for key in ("StopTransactionOnEVSideDisconnect", "UnlockConnectorOnEVSideDisconnect"):
            assert await csms.change_configuration(CP, key, "false") == {"status": "Accepted"}
        tx = await started_tx(csms)
        await until(csms, lambda: sim.world.connectors[1].ev is None, timeout=600)
        await asyncio.sleep(30)
        unplugged = (last_status(csms, 1), len(calls(csms, "StopTransaction")))
        reply = await csms.remote_stop(CP, tx)
        await asyncio.sleep(10)
        return tx, unplugged, reply

    run = simulate("""
        wait_for received ChangeConfiguration == 2 timeout=1min
        %s
        wait 1min
        unplug
        wait 2min
    """ % CHARGE, operator)
    csms = run.csms
    tx_id, (status_after_unplug, stops_after_unplug), reply = run.result
    assert stops_after_unplug == 0, "transaction stopped on unplug:\n" + run.transcript()
    assert status_after_unplug == "SuspendedEV"
    assert reply == {"status": "Accepted"}
    stop = payloads(csms, "StopTransaction")
    assert len(stop) == 1 and stop[0]["reason"] == "Remote"
    assert stop[0]["transactionId"] == tx_id


def test_start_transaction_retried_after_callerror():
    """E43 message_queue.py::test_call_error_to_transaction_message, E42, OCPP 1.6 §4.10
    (TransactionMessageAttempts / TransactionMessageRetryInterval): a StartTransaction answered
    with CALLERROR is sent again after the retry interval; the transaction then carries the
    transactionId of the accepted attempt to its MeterValues and StopTransaction."""
    async def operator(sim, csms):
        failures = []

        def start_override(cp_id, payload):
            if not failures:
                failures.append(payload)
                raise CallError("InternalError", "database down")
            return None
        csms.overrides["StartTransaction"] = start_override
        await booted(csms)
        return await csms.change_configuration(CP, "TransactionMessageRetryInterval", "20")

    run = simulate("""
        wait_for received ChangeConfiguration == 1 timeout=1min
        %s
        wait 3min
        swipe 04A1B2C3
        wait_for session == finishing timeout=10s
        wait 10s
        unplug
        wait 10s
    """ % CHARGE, operator)
    run.assert_scenario_held()
    csms = run.csms
    starts = calls(csms, "StartTransaction")
    assert len(starts) == 2
    assert answer(csms, starts[0]).kind == "CALLERROR"
    assert starts[0].payload == starts[1].payload
    assert 20 <= starts[1].time - starts[0].time <= 21
    tx_id = answer(csms, starts[1]).payload["transactionId"]
    assert tx_meter_values(csms, tx_id)
    assert all("transactionId" not in r.payload or r.payload["transactionId"] == tx_id
               for r in calls(csms, "MeterValues"))
    stop = payloads(csms, "StopTransaction")
    assert len(stop) == 1 and stop[0]["transactionId"] == tx_id and stop[0]["reason"] == "Local"

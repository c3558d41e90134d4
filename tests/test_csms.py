"""simulator.csms: the local OCPP 1.6J CSMS, over real WebSockets on 127.0.0.1 (port 0).

The charge point side is a minimal test client on `ocpp.v16.ChargePoint` (or raw `websockets`
for malformed frames). No pytest-asyncio: each test runs its body with `run()`, bounded by a
timeout, and every wait inside has its own short timeout.
"""
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from datetime import datetime

import pytest
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from simulator import clock
from simulator.csms import (NO_REPLY, CallError, CallErrorReceived, InvalidResponse, LocalCsms,
                            NotConnected, Record)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY1 = "0123456789abcdef0123"          # AuthorizationKey-like: 20 chars
BOOT = call.BootNotification(charge_point_model="SimBox", charge_point_vendor="evse-agent")
PROFILE = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
           "chargingProfileKind": "Relative",
           "chargingSchedule": {"chargingRateUnit": "A",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.5}]}}


def run(body, timeout=20):
    """Run the coroutine function `body` to completion, failing after `timeout` seconds."""
    async def main():
        return await asyncio.wait_for(body(), timeout)
    return asyncio.run(main())


class Client(ChargePoint):
    """A charge point that answers the CSMS commands the tests send (UnlockConnector is left
    unimplemented on purpose: the ocpp package answers it with CALLERROR NotImplemented)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.got = []
        self.config = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag, **kw):
        self.got.append(("RemoteStartTransaction", dict(kw, id_tag=id_tag)))
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id, **kw):
        self.got.append(("RemoteStopTransaction", transaction_id))
        return call_result.RemoteStopTransaction(
            status="Accepted" if transaction_id == 1 else "Rejected")

    @on(Action.reset)
    def on_reset(self, type, **kw):
        self.got.append(("Reset", type))
        return call_result.Reset(status="Accepted")

    @on(Action.trigger_message)
    def on_trigger(self, requested_message, **kw):
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger(self, requested_message, **kw):
        if requested_message == "Heartbeat":
            await self.call(call.Heartbeat())

    @on(Action.change_configuration)
    def on_change_configuration(self, key, value, **kw):
        if key not in self.config:
            return call_result.ChangeConfiguration(status="NotSupported")
        self.config[key] = value
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.get_configuration)
    def on_get_configuration(self, key=None, **kw):
        keys = key if key is not None else list(self.config)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": False, "value": self.config[k]}
                               for k in keys if k in self.config],
            unknown_key=[k for k in keys if k not in self.config] or None)

    @on(Action.change_availability)
    def on_change_availability(self, connector_id, type, **kw):
        return call_result.ChangeAvailability(status="Scheduled")

    @on(Action.clear_cache)
    def on_clear_cache(self, **kw):
        return call_result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id, message_id=None, data=None, **kw):
        return call_result.DataTransfer(status="Accepted", data=(data or "")[::-1])


@contextlib.asynccontextmanager
async def client(url, cp_id="CP1", cls=Client, response_timeout=5, **options):
    """A connected ocpp client running its receive loop."""
    options.setdefault("subprotocols", ["ocpp1.6"])
    async with connect("%s/%s" % (url, cp_id), compression=None, proxy=None, open_timeout=5,
                       close_timeout=2, **options) as ws:
        cp = cls(cp_id, ws, response_timeout=response_timeout)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def raw(url, cp_id="CP1", **options):
    """A raw WebSocket to the CSMS (frames by hand)."""
    return connect("%s/%s" % (url, cp_id), subprotocols=["ocpp1.6"], compression=None,
                   proxy=None, open_timeout=5, close_timeout=2, **options)


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def status_of_rejected_connect(url, **options):
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, compression=None, proxy=None, open_timeout=5, **options):
            pass
    return info.value.response


def start_tx(tag, connector=1, meter=0):
    return call.StartTransaction(connector_id=connector, id_tag=tag, meter_start=meter,
                                 timestamp="2026-01-01T10:00:00Z")


# ------------------------------------------------------------------------------ CP -> CSMS

def test_boot_pending_then_accepted_from_script():
    async def body():
        async with LocalCsms(boot_script=[("Pending", 5)], heartbeat_interval=120) as csms:
            assert csms.url == "ws://127.0.0.1:%d/ocpp" % csms.port and csms.port > 0
            async with client(csms.url) as cp:
                first = await cp.call(BOOT)
                assert csms.station("CP1").registration == "Pending"
                second = await cp.call(BOOT)
            assert (first.status, first.interval) == ("Pending", 5)
            assert (second.status, second.interval) == ("Accepted", 120)
            for answer in (first, second):
                assert answer.current_time.endswith("Z")
                datetime.fromisoformat(answer.current_time.replace("Z", "+00:00"))
            st = csms.station("CP1")
            assert (st.registration, st.boots) == ("Accepted", 2)
            assert st.boot_notification == {"chargePointModel": "SimBox",
                                            "chargePointVendor": "evse-agent"}
            assert csms.received("CP1", "BootNotification") == 2
            assert csms.sent("CP1", "BootNotification") == 0
            results = csms.records("CP1", "BootNotification", "CALLRESULT", "to_cp")
            assert [r.payload["status"] for r in results] == ["Pending", "Accepted"]
            calls = csms.records(kind="CALL", direction="from_cp")
            assert all(isinstance(r, Record) for r in calls)
            assert results[0].unique_id == calls[0].unique_id
            assert json.loads(results[0].raw)[0] == 3
            times = [r.time for r in csms.log]
            assert times == sorted(times)
    run(body)


def test_boot_script_per_charge_point_and_rejected():
    async def body():
        script = {"CP2": [("Rejected", 7), ("Pending", 3)]}
        async with LocalCsms(boot_script=script) as csms:
            async with client(csms.url, "CP1") as cp1, client(csms.url, "CP2") as cp2:
                assert (await cp1.call(BOOT)).status == "Accepted"
                assert [(r.status, r.interval) for r in
                        [await cp2.call(BOOT) for _ in range(3)]] == \
                    [("Rejected", 7), ("Pending", 3), ("Accepted", 300)]
    run(body)


def test_heartbeat_and_wait_received():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                waiter = asyncio.create_task(csms.wait_received("CP1", "Heartbeat", count=2,
                                                                timeout=5))
                await cp.call(call.Heartbeat())
                await asyncio.sleep(0)
                assert not waiter.done()
                answer = await cp.call(call.Heartbeat())
                rec = await waiter
            assert answer.current_time.endswith("Z")
            assert rec.kind == "CALL" and rec.action == "Heartbeat" and rec.payload == {}
            assert csms.received("CP1", "Heartbeat") == 2
            with pytest.raises(asyncio.TimeoutError, match="sent 2 Heartbeat"):
                await csms.wait_received("CP1", "Heartbeat", count=3, timeout=0.05)
            with pytest.raises(asyncio.TimeoutError):
                await csms.wait_for(lambda: False, timeout=0.05)
            assert await csms.wait_for(lambda: 42, timeout=0.05) == 42
    run(body)


def test_authorize_accepted_invalid_and_unknown_tags():
    async def body():
        tags = {"BAD": "Invalid", "KID": {"status": "Accepted", "parentIdTag": "PARENT",
                                          "expiryDate": "2030-01-01T00:00:00Z"}}
        async with LocalCsms(id_tags=tags) as csms:
            async with client(csms.url) as cp:
                ok = await cp.call(call.Authorize(id_tag="ANYONE"))
                bad = await cp.call(call.Authorize(id_tag="BAD"))
                kid = await cp.call(call.Authorize(id_tag="KID"))
                csms.unknown_tag_status = "Invalid"
                stranger = await cp.call(call.Authorize(id_tag="STRANGER"))
                csms.id_tags["LATE"] = "Blocked"
                late = await cp.call(call.Authorize(id_tag="LATE"))
            assert ok.id_tag_info == {"status": "Accepted"}
            assert bad.id_tag_info == {"status": "Invalid"}
            assert stranger.id_tag_info == {"status": "Invalid"}
            assert late.id_tag_info == {"status": "Blocked"}
            wire = csms.records("CP1", "Authorize", "CALLRESULT")[2].payload
            assert wire == {"idTagInfo": {"status": "Accepted", "parentIdTag": "PARENT",
                                          "expiryDate": "2030-01-01T00:00:00Z"}}
            assert kid.id_tag_info["parent_id_tag"] == "PARENT"
    run(body)


def test_transactions_numbered_from_one_with_meter_values():
    async def body():
        async with LocalCsms(id_tags={"BAD": "Invalid"}) as csms:
            async with client(csms.url) as cp:
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                                      status="Preparing"))
                first = await cp.call(start_tx("TAG1", meter=100))
                second = await cp.call(start_tx("BAD", connector=2, meter=5))
                sample = {"timestamp": "2026-01-01T10:01:00Z",
                          "sampledValue": [{"value": "1100", "measurand":
                                            "Energy.Active.Import.Register", "unit": "Wh"}]}
                await cp.call(call.MeterValues(connector_id=1, transaction_id=1,
                                               meter_value=[sample]))
                await cp.call(call.MeterValues(connector_id=1, meter_value=[sample]))
                stopped = await cp.call(call.StopTransaction(
                    meter_stop=1234, timestamp="2026-01-01T11:00:00Z", transaction_id=1,
                    reason="EVDisconnected", id_tag="TAG1", transaction_data=[sample]))
                stopped2 = await cp.call(call.StopTransaction(
                    meter_stop=5, timestamp="2026-01-01T11:00:00Z", transaction_id=2))
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                                      status="Finishing"))
            assert first.transaction_id == 1 and first.id_tag_info == {"status": "Accepted"}
            assert second.transaction_id == 2 and second.id_tag_info == {"status": "Invalid"}
            assert stopped.id_tag_info == {"status": "Accepted"}
            assert stopped2.id_tag_info is None
            assert csms.records("CP1", "StopTransaction", "CALLRESULT")[1].payload == {}
            st = csms.station("CP1")
            tx = st.transactions[1]
            assert tx is csms.transactions[1]
            assert (tx["id_tag"], tx["connector_id"], tx["meter_start"], tx["timestamp"]) == \
                ("TAG1", 1, 100, "2026-01-01T10:00:00Z")
            assert (tx["meter_stop"], tx["reason"], tx["stop_timestamp"]) == \
                (1234, "EVDisconnected", "2026-01-01T11:00:00Z")
            assert tx["meter_values"] == [sample] and tx["transaction_data"] == [sample]
            assert st.transactions[2]["meter_values"] == []
            assert st.transactions[2]["reason"] is None
            assert len(st.meter_values) == 2
            assert st.connectors == {1: "Finishing"}
            assert st.status_notifications[1]["errorCode"] == "NoError"
    run(body)


def test_data_transfer_from_cp_default_and_handler():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                default = await cp.call(call.DataTransfer(vendor_id="acme", data="x"))
                seen = []

                async def handler(cp_id, vendor_id, message_id, data):
                    seen.append((cp_id, vendor_id, message_id, data))
                    return ("Accepted", {"echo": data}) if vendor_id == "acme" \
                        else "UnknownVendorId"
                csms.data_transfer_handler = handler
                echoed = await cp.call(call.DataTransfer(vendor_id="acme", message_id="m",
                                                         data="hi"))
                unknown = await cp.call(call.DataTransfer(vendor_id="other"))
                fw = await cp.call(call.FirmwareStatusNotification(status="Downloading"))
                diag = await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
            assert (default.status, default.data) == ("Accepted", None)
            assert (echoed.status, json.loads(echoed.data)) == ("Accepted", {"echo": "hi"})
            assert unknown.status == "UnknownVendorId"
            assert seen == [("CP1", "acme", "m", "hi"), ("CP1", "other", None, None)]
            assert fw is not None and diag is not None
            st = csms.station("CP1")
            assert (st.firmware_status, st.diagnostics_status) == ("Downloading", "Uploaded")
    run(body)


# ------------------------------------------------------------------------------ CSMS -> CP

def test_commands_round_trip():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                await csms.wait_connected("CP1", timeout=5)
                profile = json.loads(json.dumps(PROFILE))
                assert await csms.remote_start("CP1", "TAG1", connector_id=1,
                                               charging_profile=profile) == {"status": "Accepted"}
                # the schema check ran on a copy: no Decimal leaked into the caller's dict
                assert type(profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]) \
                    is float
                assert await csms.remote_stop("CP1", 1) == {"status": "Accepted"}
                assert await csms.remote_stop("CP1", 99) == {"status": "Rejected"}
                assert await csms.reset("CP1", "Hard") == {"status": "Accepted"}
                assert await csms.change_configuration("CP1", "MeterValueSampleInterval", 30) \
                    == {"status": "Accepted"}
                assert await csms.change_configuration("CP1", "Nope", True) == \
                    {"status": "NotSupported"}
                conf = await csms.get_configuration("CP1", ["MeterValueSampleInterval", "X"])
                assert conf == {"configurationKey": [{"key": "MeterValueSampleInterval",
                                                      "readonly": False, "value": "30"}],
                                "unknownKey": ["X"]}
                everything = await csms.get_configuration("CP1")
                assert len(everything["configurationKey"]) == 2
                assert await csms.change_availability("CP1", 0, "Inoperative") == \
                    {"status": "Scheduled"}
                assert await csms.clear_cache("CP1") == {"status": "Accepted"}
                assert await csms.data_transfer("CP1", "acme", "m1", "abc") == \
                    {"status": "Accepted", "data": "cba"}
                assert await csms.trigger_message("CP1", "Heartbeat") == {"status": "Accepted"}
                await csms.wait_received("CP1", "Heartbeat", timeout=5)
                assert await csms.trigger_message("CP1", "StatusNotification", 1) == \
                    {"status": "Accepted"}
                generic = await csms.call("CP1", "Reset", {"type": "Soft"})
            assert generic == {"status": "Accepted"}
            name, args = cp.got[0]
            assert name == "RemoteStartTransaction" and args["id_tag"] == "TAG1"
            assert args["connector_id"] == 1
            assert [g for g in cp.got if g[0] == "Reset"] == [("Reset", "Hard"), ("Reset", "Soft")]
            start = csms.records("CP1", "RemoteStartTransaction", "CALL", "to_cp")[0]
            assert '"limit":6.5' in start.raw and start.payload["chargingProfile"] == PROFILE
            assert csms.sent("CP1", "Reset") == 2
            assert csms.sent("CP1", "RemoteStopTransaction") == 2
            answers = csms.records("CP1", "Reset", "CALLRESULT", "from_cp")
            assert [a.payload for a in answers] == [{"status": "Accepted"}] * 2
            assert csms.received("CP1", "Reset") == 0
    run(body)


def test_call_error_received_and_bad_payloads():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                with pytest.raises(CallErrorReceived) as info:
                    await csms.unlock_connector("CP1", 1)
                assert info.value.code == "NotImplemented"
                err = csms.records("CP1", "UnlockConnector", "CALLERROR", "from_cp")[0]
                assert err.payload["code"] == "NotImplemented" and "description" in err.payload
                with pytest.raises(CallErrorReceived) as info:
                    await csms.call("CP1", "MakeCoffee", {}, validate=False)
                assert info.value.code == "NotSupported"
                before = len(csms.log)
                with pytest.raises(ValueError, match="schema"):
                    await csms.reset("CP1", "Gentle")
                with pytest.raises(ValueError):
                    await csms.call("CP1", "MakeCoffee", {})
                assert len(csms.log) == before          # nothing was sent
                assert cp.got == []
            with pytest.raises(NotConnected):
                await csms.reset("NOBODY")
    run(body)


def test_timeout_invalid_response_and_disconnect_during_call():
    async def body():
        async with LocalCsms(call_timeout=0.2) as csms:
            async with raw(csms.url) as ws:
                await csms.wait_connected("CP1", timeout=5)
                with pytest.raises(asyncio.TimeoutError, match="did not answer Reset"):
                    await csms.reset("CP1")
                unanswered = await recv_json(ws)
                assert unanswered[:3] == [2, unanswered[1], "Reset"]
                await ws.send(json.dumps([3, unanswered[1], {"status": "Accepted"}]))
                await csms.wait_for(lambda: csms.records(kind="CALLRESULT"), timeout=5)
                late = csms.records(kind="CALLRESULT")[0]
                assert late.action is None      # answers nothing still pending

                # a schema-invalid answer
                task = asyncio.create_task(csms.reset("CP1", timeout=5))
                msg = await recv_json(ws)
                await ws.send(json.dumps([3, msg[1], {"status": "Maybe"}]))
                with pytest.raises(InvalidResponse) as info:
                    await task
                assert info.value.payload == {"status": "Maybe"}
                csms.lenient = True
                task = asyncio.create_task(csms.reset("CP1", timeout=5))
                msg = await recv_json(ws)
                await ws.send(json.dumps([3, msg[1], {"status": "Maybe"}]))
                assert await task == {"status": "Maybe"}

                # the CP goes away while a CALL is outstanding
                task = asyncio.create_task(csms.reset("CP1", timeout=5))
                await recv_json(ws)
                await ws.close()
                with pytest.raises(NotConnected):
                    await task
    run(body)


# ------------------------------------------------------------------------------ schema, frames

def test_malformed_frames_recorded_and_csms_keeps_answering():
    async def body():
        async with LocalCsms() as csms:
            async with raw(csms.url) as ws:
                await ws.send("this is not json")
                await ws.send('{"not": "an array"}')
                await ws.send(b"\x00\x01binary")
                await ws.send('[9,"z",{}]')
                await ws.send('[2,"m1","Heartbeat"]')           # no payload: answered
                error = await recv_json(ws)
                assert error[:3] == [4, "m1", "FormationViolation"]
                await ws.send('[2,"h1","Heartbeat",{}]')
                ok = await recv_json(ws)
                assert ok[0:2] == [3, "h1"] and ok[2]["currentTime"].endswith("Z")
            invalid = csms.records("CP1", kind="INVALID")
            assert [r.payload for r in invalid] == ["this is not json", '{"not": "an array"}',
                                                    "\x00\x01binary", '[9,"z",{}]',
                                                    '[2,"m1","Heartbeat"]']
            assert all(r.direction == "from_cp" for r in invalid)
            assert invalid[-1].unique_id == "m1" and invalid[-1].action == "Heartbeat"
            reply = csms.records("CP1", kind="CALLERROR", direction="to_cp")[0]
            assert reply.unique_id == "m1" and reply.action == "Heartbeat"
            assert csms.received("CP1", "Heartbeat") == 1
            await csms.wait_disconnected("CP1", timeout=5)      # the CSMS survived until then
    run(body)


def test_schema_violations_strict_and_lenient():
    frames = [('[2,"a","BootNotification",{"chargePointVendor":"v"}]', "ProtocolError"),
              ('[2,"b","BootNotification",{"chargePointVendor":"v","chargePointModel":"m",'
               '"bogus":1}]', "FormationViolation"),     # 1.6 spelling, not "FormatViolation"
              ('[2,"c","BootNotification",{"chargePointVendor":1,"chargePointModel":"m"}]',
               "TypeConstraintViolation")]

    async def body():
        async with LocalCsms() as csms:
            async with raw(csms.url) as ws:
                for frame, code in frames:
                    await ws.send(frame)
                    answer = await recv_json(ws)
                    assert answer[0] == 4 and answer[2] == code, answer
                assert csms.station("CP1").boots == 0
                csms.lenient = True                 # takes effect on the open connection
                await ws.send(frames[0][0])
                assert (await recv_json(ws))[0] == 3
            assert csms.station("CP1").boots == 1
            assert csms.received("CP1", "BootNotification") == 4
        async with LocalCsms(lenient=True) as csms:
            async with raw(csms.url) as ws:
                for frame, _ in frames:
                    await ws.send(frame)
                    answer = await recv_json(ws)
                    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
            assert csms.station("CP1").boots == 3
    run(body)


def test_overrides_callerror_no_reply_and_custom_payload():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url, response_timeout=0.3) as cp:
                def stop(cp_id, payload):
                    if payload["transactionId"] == 1:
                        raise CallError("InternalError", "database down")
                    if payload["transactionId"] == 2:
                        return NO_REPLY
                    if payload["transactionId"] == 3:
                        return {"idTagInfo": {"status": "Expired"}}
                    return None                     # the built-in answer
                csms.overrides["StopTransaction"] = stop
                msg = dict(meter_stop=1, timestamp="2026-01-01T11:00:00Z")
                with pytest.raises(Exception) as info:
                    await cp.call(call.StopTransaction(transaction_id=1, **msg), suppress=False)
                assert info.value.code == "InternalError"
                with pytest.raises(asyncio.TimeoutError):
                    await cp.call(call.StopTransaction(transaction_id=2, **msg))
                expired = await cp.call(call.StopTransaction(transaction_id=3, **msg))
                assert expired.id_tag_info == {"status": "Expired"}
                normal = await cp.call(call.StopTransaction(transaction_id=4, id_tag="T", **msg))
                assert normal.id_tag_info == {"status": "Accepted"}

                async def boot(cp_id, payload):    # may await a command to the same CP
                    conf = await csms.get_configuration(cp_id, ["HeartbeatInterval"], timeout=2)
                    return {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z",
                            "interval": int(conf["configurationKey"][0]["value"])}
                csms.overrides["BootNotification"] = boot
                cp._response_timeout = 5
                assert (await cp.call(BOOT)).interval == 300
            assert csms.received("CP1", "StopTransaction") == 4
            assert len(csms.records("CP1", "StopTransaction", "CALLRESULT", "to_cp")) == 2
    run(body)


# ------------------------------------------------------------------------------ connections

def test_charge_point_id_from_path():
    async def body():
        async with LocalCsms() as csms:
            base = "ws://127.0.0.1:%d" % csms.port
            for path, cp_id in [("/CP7", "CP7"), ("/ocpp/CP8/", "CP8"),
                                ("/org/ocpp/CP%209?x=1", "CP 9")]:
                async with connect(base + path, subprotocols=["ocpp1.6"], proxy=None) as ws:
                    await csms.wait_connected(cp_id, timeout=5)
                    await ws.send('[2,"1","Heartbeat",{}]')
                    await recv_json(ws)
                await csms.wait_disconnected(cp_id, timeout=5)
                assert csms.received(cp_id, "Heartbeat") == 1
            response = await status_of_rejected_connect(base + "/", subprotocols=["ocpp1.6"])
            assert response.status_code == 404
    run(body)


def test_basic_auth_accepted_and_rejected():
    async def body():
        keys = {"CP1": KEY1, "CP2": "fedcba9876543210fedc"}
        async with LocalCsms(auth_keys=keys) as csms:
            host = "127.0.0.1:%d" % csms.port
            async with client("ws://CP1:%s@%s/ocpp" % (KEY1, host)) as cp:   # userinfo form
                assert (await cp.call(BOOT)).status == "Accepted"
            assert csms.station("CP1").username == "CP1"
            header = "Basic " + base64.b64encode(("CP2:" + keys["CP2"]).encode()).decode()
            async with client(csms.url, "CP2", additional_headers={"Authorization": header}):
                await csms.wait_connected("CP2", timeout=5)
            proto = {"subprotocols": ["ocpp1.6"]}
            wrong = await status_of_rejected_connect(
                "ws://CP1:wrongwrongwrongwrong@%s/ocpp/CP1" % host, **proto)
            assert wrong.status_code == 401
            assert wrong.headers["WWW-Authenticate"].startswith('Basic realm="ocpp"')
            missing = await status_of_rejected_connect(csms.url + "/CP1", **proto)
            assert missing.status_code == 401
            other = await status_of_rejected_connect(       # CP2's key on CP1's path
                "ws://CP2:%s@%s/ocpp/CP1" % (keys["CP2"], host), **proto)
            assert other.status_code == 401
            unknown = await status_of_rejected_connect(
                "ws://CP3:%s@%s/ocpp/CP3" % (KEY1, host), **proto)
            assert unknown.status_code == 401
            rejected = [e for e in csms.connection_events if e.event == "rejected"]
            assert [e.detail["status"] for e in rejected] == [401] * 4
            assert [e.cp_id for e in rejected] == ["CP1", "CP1", "CP1", "CP3"]
    run(body)


def test_subprotocol_missing_is_rejected():
    async def body():
        async with LocalCsms() as csms:
            url = csms.url + "/CP1"
            assert (await status_of_rejected_connect(url)).status_code == 400
            assert (await status_of_rejected_connect(
                url, subprotocols=["ocpp2.0.1"])).status_code == 400
            async with connect(url, subprotocols=["ocpp2.0.1", "ocpp1.6"], proxy=None) as ws:
                assert ws.subprotocol == "ocpp1.6"
                await csms.wait_connected("CP1", timeout=5)
            assert [e.detail["status"] for e in csms.connection_events
                    if e.event == "rejected"] == [400, 400]
    run(body)


def test_refuse_then_accept_again():
    async def body():
        async with LocalCsms() as csms:
            csms.refuse(0.3)
            response = await status_of_rejected_connect(csms.url + "/CP1",
                                                        subprotocols=["ocpp1.6"])
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert not csms.connected("CP1")
            await asyncio.sleep(0.35)
            async with client(csms.url) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
            csms.refuse(10)
            csms.refuse(0)                      # refusing can be cancelled
            async with client(csms.url):
                await csms.wait_connected("CP1", timeout=5)
    run(body)


def test_disconnect_then_come_back():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                await cp.call(start_tx("TAG1"))
                assert csms.connected("CP1")
                assert await csms.disconnect("CP1") is True
                assert not csms.connected("CP1")
                await asyncio.wait_for(cp._connection.wait_closed(), 5)
                assert cp._connection.close_code == 1000
                with pytest.raises(ConnectionClosed):
                    await cp.call(call.Heartbeat())
            assert await csms.disconnect("CP1") is False
            events = [e.event for e in csms.connection_events]
            assert events == ["connected", "disconnected"]
            async with client(csms.url) as cp:     # comes back: state and numbering kept
                assert (await cp.call(start_tx("TAG2"))).transaction_id == 2
            assert sorted(csms.station("CP1").transactions) == [1, 2]
            assert csms.station("CP1").connects == 2

            async with client(csms.url) as cp:     # go away for a while
                await csms.wait_connected("CP1", timeout=5)
                await csms.go_away(0.3)
                await asyncio.wait_for(cp._connection.wait_closed(), 5)
                assert cp._connection.close_code == 1001
            response = await status_of_rejected_connect(csms.url + "/CP1",
                                                        subprotocols=["ocpp1.6"])
            assert response.status_code == 503
    run(body)


def test_restart_on_same_port_keeps_records():
    async def body():
        async with LocalCsms() as csms:
            port = csms.port
            async with client(csms.url) as cp:
                await cp.call(start_tx("TAG1"))
                await csms.restart()
                await asyncio.wait_for(cp._connection.wait_closed(), 5)
                assert cp._connection.close_code == 1001
            assert csms.port == port and csms.running
            async with client(csms.url) as cp:
                assert (await cp.call(start_tx("TAG2"))).transaction_id == 2
            assert csms.received("CP1", "StartTransaction") == 2
        assert not csms.running
    run(body)


def test_new_connection_replaces_old_one():
    async def body():
        async with LocalCsms() as csms:
            async with client(csms.url) as old, client(csms.url) as new:
                await asyncio.wait_for(old._connection.wait_closed(), 5)
                assert csms.connected("CP1")
                assert await csms.reset("CP1") == {"status": "Accepted"}
                assert new.got == [("Reset", "Soft")] and old.got == []
    run(body)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_security_profile_2(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def body():
        async with LocalCsms(ssl_context=server_ctx, auth_keys={"CP1": KEY1}) as csms:
            assert csms.url.startswith("wss://127.0.0.1:")
            header = "Basic " + base64.b64encode(("CP1:" + KEY1).encode()).decode()
            async with client(csms.url, ssl=client_ctx,
                              additional_headers={"Authorization": header}) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
            with pytest.raises(ssl.SSLCertVerificationError):
                async with connect(csms.url + "/CP1", subprotocols=["ocpp1.6"], proxy=None,
                                   ssl=ssl.create_default_context()):
                    pass
    run(body)


def test_runs_in_virtual_time():
    async def body():
        loop = asyncio.get_running_loop()
        async with LocalCsms() as csms:
            async with client(csms.url) as cp:
                await cp.call(BOOT)
                started = loop.time()
                with pytest.raises(asyncio.TimeoutError):      # an hour, with pings every 20 s
                    await csms.wait_for(lambda: False, timeout=3600)
                assert loop.time() - started >= 3600
                assert csms.connected("CP1")
                await cp.call(call.Heartbeat())
            assert csms.records()[0].time < 1
    wall = time.perf_counter()
    clock.run(asyncio.wait_for(body(), 7200))
    assert time.perf_counter() - wall < 10


# ------------------------------------------------------------------------------ CLI

def test_cli_prints_records_until_interrupted():
    async def body():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulator.csms", "--port", "0", "--boot", "Pending:7",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
            assert first.startswith("CSMS listening on ws://127.0.0.1:"), first
            url = first.split()[3]
            async with client(url) as cp:
                assert (await cp.call(BOOT)).status == "Pending"
            lines = []
            while not any("Pending" in line for line in lines):
                lines.append((await asyncio.wait_for(proc.stdout.readline(), 5)).decode())
            assert any("CP1 -> CALL BootNotification" in line for line in lines), lines
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    run(body, timeout=30)

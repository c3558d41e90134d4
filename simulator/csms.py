"""A small local OCPP 1.6J central system (CSMS) for `evse demo` and the tests (CPython only).

Built on the server side of the `ocpp` package (`ocpp.v16.ChargePoint`, one per connection) and
`websockets.asyncio.server.serve` (subprotocol "ocpp1.6", compression off). It records every
frame in both directions, answers the Core profile correctly and schema-valid, and can be
scripted: boot Pending then Accepted, reject id tags, send any command, go away and come back.

    async with LocalCsms(boot_script=[("Pending", 5)], id_tags={"BAD": "Invalid"}) as csms:
        ...                                   # a charge point connects to f"{csms.url}/CP1"
        await csms.wait_received("CP1", "BootNotification", count=2)
        tx_start = await csms.wait_received("CP1", "StartTransaction")
        reply = await csms.remote_stop("CP1", 1)          # {"status": "Accepted"}
        assert csms.station("CP1").transactions[1]["meter_stop"] == 1234

Records: `Record(time, cp_id, direction, kind, unique_id, action, payload, raw)`; `time` is
`loop.time()` (virtual time under `simulator.clock`), `direction` "from_cp" | "to_cp", `kind`
"CALL" | "CALLRESULT" | "CALLERROR" | "INVALID"; a result's `action` is the action of the CALL it
answers (None if it answers none); a CALLERROR's payload is {"code", "description", "details"};
an INVALID frame's payload is its raw text (str). Frames are recorded as they are handed to /
taken from the socket, by a wrapper around the connection object given to `ocpp.v16.ChargePoint`
(which only needs `send(str)` / `recv() -> str`), so malformed frames are recorded too.

Connection attempts are logged as `ConnectionEvent(time, cp_id, event, detail)` with event
"connected" | "disconnected" | "rejected" (detail: HTTP status, close code, …).

Library workarounds (ocpp 2.1.0, websockets 17.4), see also spec/libraries.md:
- `ocpp.messages.ASYNC_VALIDATION = False` is set on import (inline validation, 2x faster);
  it is a process-wide switch of the package.
- `basic_auth(check_credentials=…)` only sees (username, password), not the path: we build one
  per request with the path's charge point id, so a valid key of CP2 on /ocpp/CP1 gets 401.
- The package silently drops frames it cannot parse; our reader records them as INVALID first,
  and answers one that still carries a CALL's unique id with CALLERROR FormationViolation
  (so the charge point does not wait for its timeout).
- The CSMS's own CALLs do not go through `ChargePoint.call()` (dataclass-only, snake_case
  results, waits out its timeout when the socket closes): they are built as
  `ocpp.messages.Call`, validated on a *copy* (validation rewrites 1.6 RemoteStartTransaction /
  SetChargingProfile payloads with Decimal in place), and answers are matched by our reader.
- The package answers schema violations with the 2.0 code "FormatViolation" even on 1.6; we
  send the 1.6 spelling "FormationViolation" (OCPP-J 1.6 §4.2.3).
- Its CALL routing is sequential per connection; our reader task is separate, so a handler
  (or an `override`) may await a CSMS command to the same charge point without deadlock.
"""
import argparse
import asyncio
import contextlib
import copy
import hmac
import http
import inspect
import json
import logging
import math
import signal
import sys
import time as _time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

import ocpp.exceptions
import ocpp.messages
from ocpp.charge_point import camel_to_snake_case
from ocpp.routing import on
from ocpp.v16 import ChargePoint as _ChargePoint16
from ocpp.v16 import call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import basic_auth, serve
from websockets.exceptions import ConnectionClosed

# one CallError for the whole project: raise it from an `override` to answer a CP's CALL
# with CALLERROR; CallErrorReceived is what a CSMS command raises when the CP answers one
from agent.rpc import CallError  # noqa: E402

ocpp.messages.ASYNC_VALIDATION = False     # inline validation: 2x faster (spec/libraries.md §1)

SUBPROTOCOL = "ocpp1.6"
OCPP_VERSION = "1.6"

log = logging.getLogger("simulator.csms")
# The ocpp package logs every frame at INFO and tracebacks for every rejected CALL; we record
# all of that ourselves, so its per-connection logger stays silent.
_ocpp_log = logging.getLogger("simulator.csms.ocpp")
_ocpp_log.addHandler(logging.NullHandler())
_ocpp_log.propagate = False

# ocpp 2.1.0 raises 2.0-spelled codes on 1.6 connections: send the 1.6 names
_CODES_16 = {"FormatViolation": "FormationViolation",
             "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}

NO_REPLY = object()
"""Return this from an `override` to leave the CALL unanswered (the CP sees a timeout)."""


class CallErrorReceived(CallError):
    """The charge point answered a CSMS CALL with CALLERROR."""


class InvalidResponse(Exception):
    """The charge point's CALLRESULT fails the OCPP 1.6 schema (not raised when lenient)."""

    def __init__(self, action, code, description, payload):
        super().__init__("%s response: %s: %s" % (action, code, description))
        self.action = action
        self.code = code
        self.description = description
        self.payload = payload


class NotConnected(ConnectionError):
    """The charge point is not connected (or its connection closed before it answered)."""


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class Record:
    time: float
    cp_id: str
    direction: str          # "from_cp" | "to_cp"
    kind: str               # "CALL" | "CALLRESULT" | "CALLERROR" | "INVALID"
    unique_id: object
    action: object
    payload: object         # dict; str (the raw text) for INVALID
    raw: str

    def line(self):
        arrow = "cp->csms" if self.direction == "from_cp" else "csms->cp"
        body = self.payload if self.kind == "INVALID" else _compact(self.payload)
        return "%10.3f %-12s %s %-10s %-28s %s" % (self.time, self.cp_id, arrow, self.kind,
                                                   self.action or "-", body)


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    time: float
    cp_id: object
    event: str              # "connected" | "disconnected" | "rejected"
    detail: dict

    def line(self):
        return "%10.3f %-12s %s %s" % (self.time, self.cp_id, self.event, _compact(self.detail))


class Station:
    """What the CSMS knows about one charge point (kept across reconnects and restarts)."""

    def __init__(self, cp_id):
        self.cp_id = cp_id
        self.registration = None        # last BootNotification answer: Accepted|Pending|Rejected
        self.boot_notification = None   # last BootNotification payload (camelCase)
        self.boots = 0                  # BootNotifications answered
        self.connects = 0
        self.username = None            # HTTP Basic user of the current/last connection
        self.connectors = {}            # connector id -> last status
        self.status_notifications = {}  # connector id -> last StatusNotification payload
        self.transactions = {}          # transaction id -> dict (see LocalCsms.transactions)
        self.meter_values = []          # every MeterValues payload, in order
        self.diagnostics_status = None
        self.firmware_status = None

    def __repr__(self):
        return "<Station %s registration=%s connectors=%s transactions=%s>" % (
            self.cp_id, self.registration, self.connectors, sorted(self.transactions))


def _classify(text):
    """(kind, unique_id, action, payload) of a frame; kind "INVALID" with a reason as payload
    when it is not a well-formed OCPP-J message (unique_id then set when one can be read)."""
    try:
        msg = json.loads(text)
    except ValueError:
        return "INVALID", None, None, "not JSON"
    if not isinstance(msg, list) or not msg:
        return "INVALID", None, None, "not a JSON array"
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    t = msg[0]
    if t == 2 and len(msg) == 4 and uid is not None and isinstance(msg[2], str) \
            and isinstance(msg[3], dict):
        return "CALL", uid, msg[2], msg[3]
    if t == 3 and len(msg) == 3 and uid is not None and isinstance(msg[2], dict):
        return "CALLRESULT", uid, None, msg[2]
    if t == 4 and len(msg) == 5 and uid is not None and isinstance(msg[2], str) \
            and isinstance(msg[3], str) and isinstance(msg[4], dict):
        return "CALLERROR", uid, None, {"code": msg[2], "description": msg[3],
                                        "details": msg[4]}
    if t not in (2, 3, 4) or isinstance(t, bool):
        return "INVALID", uid, None, "MessageTypeId must be 2, 3 or 4"
    return "INVALID", uid, None, _SHAPES[t]


_SHAPES = {2: 'a CALL is [2, "<uniqueId>", "<action>", {<payload>}]',
           3: 'a CALLRESULT is [3, "<uniqueId>", {<payload>}]',
           4: 'a CALLERROR is [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {<details>}]'}


def _schema_error(message):
    """None if `message` (Call or CallResult) passes the 1.6 schema, else (code, description).
    Validates a copy: the package rewrites some 1.6 payloads with Decimal in place."""
    probe = copy.copy(message)
    probe.payload = copy.deepcopy(message.payload)
    try:
        ocpp.messages._validate_payload(probe, OCPP_VERSION)
    except ocpp.exceptions.OCPPError as e:
        cause = e.details.get("cause") if isinstance(e.details, dict) else None
        return _CODES_16.get(e.code, e.code), cause or e.description
    return None


class _Connection:
    """One WebSocket connection: what `ocpp.v16.ChargePoint` sees as its connection (send/recv),
    the recorder, and the matcher of answers to the CSMS's own CALLs."""

    def __init__(self, csms, cp_id, ws):
        self.csms = csms
        self.cp_id = cp_id
        self.ws = ws
        self.calls = asyncio.Queue()    # CALL frames from the CP, for ChargePoint.start()
        self.incoming = {}              # unique id -> (action, payload) of CP CALLs not answered
        self.pending = {}               # unique id -> (action, future) of CSMS CALLs
        self.call_lock = asyncio.Lock() # one outstanding CSMS CALL per connection
        self.closed = asyncio.Event()

    # --- the interface the ocpp package uses
    async def recv(self):
        return await self.calls.get()

    async def send(self, text):
        kind, uid, action, payload = _classify(text)
        if kind == "CALLERROR":
            code = _CODES_16.get(payload["code"])
            if code is not None:
                payload["code"] = code
                text = _compact([4, uid, code, payload["description"], payload["details"]])
        if kind in ("CALLRESULT", "CALLERROR"):
            action = self.incoming.pop(uid, (None, None))[0]
        self.csms._record(self.cp_id, "to_cp", kind, uid, action, payload, text)
        await self.ws.send(text)

    # --- our reader
    async def frame(self, raw):
        if isinstance(raw, bytes):
            text = raw.decode("utf-8", "replace")
            kind, uid, action, payload = "INVALID", None, None, "binary frame"
        else:
            text = raw
            kind, uid, action, payload = _classify(text)
        if kind == "INVALID":
            msg = json.loads(text) if uid is not None else None
            if msg is not None and msg[0] == 2:
                # a CALL we can answer: say why instead of letting the CP time out
                action = msg[2] if len(msg) > 2 and isinstance(msg[2], str) else None
                self.csms._record(self.cp_id, "from_cp", kind, uid, action, text, text)
                self.incoming[uid] = (action, None)
                await self.send(_compact([4, uid, "FormationViolation", payload, {}]))
            else:
                self.csms._record(self.cp_id, "from_cp", kind, uid, None, text, text)
            return
        if kind == "CALL":
            self.incoming[uid] = (action, payload)
            self.csms._record(self.cp_id, "from_cp", kind, uid, action, payload, text)
            self.calls.put_nowait(text)
            return
        entry = self.pending.pop(uid, None)
        action = entry[0] if entry else None
        self.csms._record(self.cp_id, "from_cp", kind, uid, action, payload, text)
        if entry and not entry[1].done():
            entry[1].set_result((kind, payload))

    def fail_pending(self):
        for action, fut in self.pending.values():
            if not fut.done():
                fut.set_exception(NotConnected("%s disconnected before answering %s"
                                               % (self.cp_id, action)))
        self.pending.clear()


class _CentralSystem(_ChargePoint16):
    """The server side of one connection: answers the CALLs a charge point sends."""

    def __init__(self, conn):
        super().__init__(conn.cp_id, conn, response_timeout=conn.csms.call_timeout,
                         logger=_ocpp_log)
        self._conn = conn
        self._csms = conn.csms
        self._station = conn.csms.station(conn.cp_id)

    def _payload(self, uid):
        return self._conn.incoming.get(uid, (None, None))[1] or {}

    async def _handle_call(self, msg):
        fn = self._csms.overrides.get(msg.action)
        if fn is None:
            route = self.route_map.get(msg.action)
            if route is not None:       # `lenient` may change while connected
                route["_skip_schema_validation"] = self._csms.lenient
            return await super()._handle_call(msg)
        if not self._csms.lenient:
            await ocpp.messages.validate_payload(msg, OCPP_VERSION)   # OCPPError -> CALLERROR
        try:
            result = fn(self.id, msg.payload)
            if inspect.isawaitable(result):
                result = await result
        except CallError as e:
            await self._send(_compact([4, msg.unique_id, e.code, e.description, e.details]))
            return
        if result is NO_REPLY:
            self._conn.incoming.pop(msg.unique_id, None)
            return
        if result is None:
            return await super()._handle_call(msg)
        await self._send(ocpp.messages.CallResult(msg.unique_id, result).to_json())

    # --- Core profile, CP -> CSMS
    @on(Action.boot_notification)
    def on_boot_notification(self, call_unique_id, **kw):
        status, interval = self._csms._next_boot(self._station)
        st = self._station
        st.registration = status
        st.boot_notification = self._payload(call_unique_id)
        st.boots += 1
        return call_result.BootNotification(current_time=self._csms._now(), interval=interval,
                                            status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **kw):
        return call_result.Heartbeat(current_time=self._csms._now())

    @on(Action.authorize)
    def on_authorize(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        return call_result.Authorize(id_tag_info=self._csms._id_tag_info(p.get("idTag")))

    @on(Action.start_transaction)
    def on_start_transaction(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        csms = self._csms
        # A charger that lost power between our answer and saving it sends the very same
        # Start again (OCPP 1.6 has no idempotency key): recognise it and give the same id,
        # so its Stop closes the one transaction instead of leaving an orphan open.
        for known in self._station.transactions.values():
            if (known["connector_id"], known["id_tag"], known["meter_start"],
                    known["timestamp"]) == (p.get("connectorId"), p.get("idTag"),
                                            p.get("meterStart"), p.get("timestamp")):
                known["replays"] = known.get("replays", 0) + 1
                return call_result.StartTransaction(
                    transaction_id=known["id"], id_tag_info=known["id_tag_info"])
        tid = csms._next_transaction_id
        csms._next_transaction_id += 1
        info = csms._id_tag_info(p.get("idTag"))
        tx = {"id": tid, "cp_id": self.id, "id_tag": p.get("idTag"),
              "connector_id": p.get("connectorId"), "meter_start": p.get("meterStart"),
              "timestamp": p.get("timestamp"), "reservation_id": p.get("reservationId"),
              "id_tag_info": info, "meter_stop": None, "stop_timestamp": None,
              "stop_id_tag": None, "reason": None, "transaction_data": None,
              "meter_values": []}
        self._station.transactions[tid] = tx
        csms.transactions[tid] = tx
        return call_result.StartTransaction(transaction_id=tid, id_tag_info=info)

    @on(Action.stop_transaction)
    def on_stop_transaction(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        tid = p.get("transactionId")
        tx = self._station.transactions.get(tid)
        if tx is None:      # unknown to us (e.g. started against another CSMS): keep it anyway
            tx = {"id": tid, "cp_id": self.id, "id_tag": None, "connector_id": None,
                  "meter_start": None, "timestamp": None, "reservation_id": None,
                  "id_tag_info": None, "meter_values": []}
            self._station.transactions[tid] = tx
            self._csms.transactions.setdefault(tid, tx)
        tx.update(meter_stop=p.get("meterStop"), stop_timestamp=p.get("timestamp"),
                  stop_id_tag=p.get("idTag"), reason=p.get("reason"),
                  transaction_data=p.get("transactionData"))
        info = self._csms._id_tag_info(p["idTag"]) if "idTag" in p else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.status_notification)
    def on_status_notification(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        cid = p.get("connectorId")
        self._station.connectors[cid] = p.get("status")
        self._station.status_notifications[cid] = p
        return call_result.StatusNotification()

    @on(Action.meter_values)
    def on_meter_values(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        self._station.meter_values.append(p)
        tx = self._station.transactions.get(p.get("transactionId"))
        if tx is not None:
            tx["meter_values"].extend(p.get("meterValue") or [])
        return call_result.MeterValues()

    @on(Action.data_transfer)
    async def on_data_transfer(self, call_unique_id, **kw):
        p = self._payload(call_unique_id)
        handler = self._csms.data_transfer_handler
        result = None
        if handler is not None:
            result = handler(self.id, p.get("vendorId"), p.get("messageId"), p.get("data"))
            if inspect.isawaitable(result):
                result = await result
        if result is None:
            result = {"status": "Accepted"}
        elif isinstance(result, str):
            result = {"status": result}
        elif isinstance(result, tuple):
            result = {"status": result[0], "data": result[1]}
        data = result.get("data")
        if data is not None and not isinstance(data, str):
            data = _compact(data)
        return call_result.DataTransfer(status=result["status"], data=data)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, call_unique_id, **kw):
        self._station.diagnostics_status = self._payload(call_unique_id).get("status")
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, call_unique_id, **kw):
        self._station.firmware_status = self._payload(call_unique_id).get("status")
        return call_result.FirmwareStatusNotification()

    # security whitepaper notifications: acknowledged, kept in the records
    @on(Action.security_event_notification)
    def on_security_event_notification(self, **kw):
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **kw):
        return call_result.LogStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status_notification(self, **kw):
        return call_result.SignedFirmwareStatusNotification()


def _cp_id_from_path(path):
    """Last non-empty segment of the request path ("/ocpp/CP1" and "/CP1/" -> "CP1")."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else None


class LocalCsms:
    """An OCPP 1.6J central system on 127.0.0.1 for demos and tests (see the module docstring).

    Scripting knobs (attributes, may be changed while running):
    - `boot_script`: list of (status, interval) answering a charge point's first boots in order
      (each charge point walks the list on its own), then ("Accepted", heartbeat_interval);
      or a dict cp_id -> such a list.
    - `id_tags`: tag -> status ("Accepted", "Invalid", "Blocked", "Expired", "ConcurrentTx") or a
      camelCase idTagInfo dict; other tags get `unknown_tag_status`.
    - `data_transfer_handler(cp_id, vendor_id, message_id, data)` (sync or async) returns a
      status str, (status, data), {"status", "data"} or None (= Accepted, no data).
    - `overrides[action] = fn(cp_id, payload)` (sync or async) answers that action instead of the
      built-in handler: return a camelCase payload dict (sent as is, NOT schema-checked, so a
      broken CSMS can be imitated), None for the built-in answer, NO_REPLY for silence, or raise
      CallError(code, description) for a CALLERROR.
    - `lenient`: do not schema-check what charge points send.
    - `clock`: callable returning an aware datetime for currentTime (default: UTC now).
    - `auth_keys`: cp_id -> the Basic-auth password it must connect with (None: no auth);
      `change_configuration(cp, "AuthorizationKey", new)` switches it once Accepted.
    - `ssl_context`: TLS (security profile 2) from the next `start()`/`restart()` on.
    """

    def __init__(self, host="127.0.0.1", port=0, auth_keys=None, ssl_context=None,
                 heartbeat_interval=300, *, boot_script=None, id_tags=None,
                 unknown_tag_status="Accepted", data_transfer_handler=None, lenient=False,
                 call_timeout=10, ping_interval=20, clock=None):
        self.host = host
        self.port = port
        self.auth_keys = dict(auth_keys) if auth_keys is not None else None
        self.ssl_context = ssl_context
        self.heartbeat_interval = heartbeat_interval
        self.boot_script = boot_script if boot_script is not None else []
        self.id_tags = dict(id_tags) if id_tags else {}
        self.unknown_tag_status = unknown_tag_status
        self.data_transfer_handler = data_transfer_handler
        self.lenient = lenient
        self.call_timeout = call_timeout
        self.ping_interval = ping_interval
        self.clock = clock
        self.overrides = {}
        self.stations = {}              # cp_id -> Station
        self.transactions = {}          # transaction id -> dict, all charge points
        self.log = []                   # every Record, in order
        self.connection_events = []     # every ConnectionEvent, in order
        self.listeners = []             # fn(Record | ConnectionEvent), called synchronously
        self._next_transaction_id = 1
        self._counts = {}               # (cp_id, direction, action) -> CALLs
        self._conns = {}                # cp_id -> _Connection
        self._waiters = []
        self._server = None
        self._loop = None
        self._refuse_until = None
        self._tasks = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        if self._server is not None:
            return self
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handler, self.host, self.port, subprotocols=[SUBPROTOCOL], compression=None,
            process_request=self._process_request, process_response=self._process_response,
            ssl=self.ssl_context, ping_interval=self.ping_interval, logger=log)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        server.close()          # closes open connections with 1001 (going away)
        await server.wait_closed()

    async def restart(self):
        """Stop (charge points see 1001) and listen again on the same port."""
        await self.stop()
        await self.start()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    @property
    def url(self):
        """Base URL; a charge point appends "/<id>"."""
        host = self.host if self.host not in ("", "0.0.0.0", "::", None) else "127.0.0.1"
        if ":" in host:
            host = "[%s]" % host
        return "%s://%s:%d/ocpp" % ("wss" if self.ssl_context else "ws", host, self.port)

    @property
    def running(self):
        return self._server is not None

    # ------------------------------------------------------------------ going away
    async def disconnect(self, cp_id, code=1000, reason=""):
        """Close that charge point's connection; returns once it is gone (False if none)."""
        conn = self._conns.get(cp_id)
        if conn is None:
            return False
        await conn.ws.close(code, reason)
        await conn.closed.wait()
        return True

    def refuse(self, seconds):
        """Answer new connections with HTTP 503 for `seconds` (loop time); 0 stops refusing."""
        loop = self._loop or asyncio.get_running_loop()
        self._refuse_until = loop.time() + seconds if seconds > 0 else None

    async def go_away(self, seconds, cp_id=None):
        """Refuse new connections for `seconds` and drop `cp_id` (or every charge point)."""
        self.refuse(seconds)
        for cid in [cp_id] if cp_id is not None else list(self._conns):
            await self.disconnect(cid, 1001, "going away")

    # ------------------------------------------------------------------ queries
    def station(self, cp_id):
        st = self.stations.get(cp_id)
        if st is None:
            st = self.stations[cp_id] = Station(cp_id)
        return st

    def records(self, cp_id=None, action=None, kind=None, direction=None):
        return [r for r in self.log
                if (cp_id is None or r.cp_id == cp_id) and (action is None or r.action == action)
                and (kind is None or r.kind == kind)
                and (direction is None or r.direction == direction)]

    def received(self, cp_id, action):
        """CALLs of `action` the charge point sent."""
        return self._counts.get((cp_id, "from_cp", action), 0)

    def sent(self, cp_id, action):
        """CALLs of `action` the CSMS sent to the charge point."""
        return self._counts.get((cp_id, "to_cp", action), 0)

    def connected(self, cp_id):
        return cp_id in self._conns

    def connected_ids(self):
        return list(self._conns)

    async def wait_for(self, predicate, timeout=10):
        """Wait until `predicate()` is true (checked now and on every record or connection
        event); returns its value, raises asyncio.TimeoutError after `timeout` (loop time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("condition not met within %gs" % timeout)
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                pass
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def wait_connected(self, cp_id, timeout=10):
        await self.wait_for(lambda: self.connected(cp_id), timeout)

    async def wait_disconnected(self, cp_id, timeout=10):
        await self.wait_for(lambda: not self.connected(cp_id), timeout)

    async def wait_received(self, cp_id, action, count=1, timeout=10):
        """Wait until the charge point has sent `count` CALLs of `action`; returns the last
        such Record."""
        try:
            await self.wait_for(lambda: self.received(cp_id, action) >= count, timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError("%s sent %d %s within %gs, expected %d" % (
                cp_id, self.received(cp_id, action), action, timeout, count)) from None
        return self.records(cp_id, action, "CALL", "from_cp")[-1]

    # ------------------------------------------------------------------ commands
    async def call(self, cp_id, action, payload=None, *, validate=True, timeout=None):
        """Send any CALL (camelCase payload) and return the CALLRESULT payload (a dict).
        Raises ValueError if the payload fails the schema (unless validate=False),
        NotConnected, CallErrorReceived, InvalidResponse (answer fails the schema, unless
        validate=False or lenient) or asyncio.TimeoutError after `timeout` (default
        call_timeout)."""
        payload = {} if payload is None else payload
        timeout = self.call_timeout if timeout is None else timeout
        conn = self._conns.get(cp_id)
        if conn is None:
            raise NotConnected("%s is not connected" % cp_id)
        msg = ocpp.messages.Call(str(uuid.uuid4()), action, payload)
        if validate:
            error = _schema_error(msg)
            if error is not None:
                raise ValueError("%s payload fails the OCPP 1.6 schema: %s: %s"
                                 % (action, error[0], error[1]))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                async with conn.call_lock:
                    fut = loop.create_future()
                    conn.pending[msg.unique_id] = (action, fut)
                    try:
                        await conn.send(msg.to_json())
                        kind, answer = await fut
                    finally:
                        conn.pending.pop(msg.unique_id, None)
        except TimeoutError:
            raise asyncio.TimeoutError("%s did not answer %s within %gs"
                                       % (cp_id, action, timeout)) from None
        except ConnectionClosed:
            raise NotConnected("%s disconnected before %s was sent" % (cp_id, action)) from None
        if kind == "CALLERROR":
            raise CallErrorReceived(answer["code"], answer["description"], answer["details"])
        if validate and not self.lenient:
            error = _schema_error(ocpp.messages.CallResult(msg.unique_id, answer, action))
            if error is not None:
                raise InvalidResponse(action, error[0], error[1], answer)
        return answer

    async def remote_start(self, cp_id, id_tag, connector_id=None, charging_profile=None,
                           timeout=None):
        payload = {"idTag": id_tag}
        if connector_id is not None:
            payload["connectorId"] = connector_id
        if charging_profile is not None:
            payload["chargingProfile"] = charging_profile
        return await self.call(cp_id, "RemoteStartTransaction", payload, timeout=timeout)

    async def remote_stop(self, cp_id, transaction_id, timeout=None):
        return await self.call(cp_id, "RemoteStopTransaction",
                               {"transactionId": transaction_id}, timeout=timeout)

    async def reset(self, cp_id, kind="Soft", timeout=None):
        return await self.call(cp_id, "Reset", {"type": kind}, timeout=timeout)

    async def change_configuration(self, cp_id, key, value, timeout=None):
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, str):
            value = str(value)
        answer = await self.call(cp_id, "ChangeConfiguration", {"key": key, "value": value},
                                 timeout=timeout)
        if key.lower() == "authorizationkey" and answer.get("status") == "Accepted" and \
                self.auth_keys is not None:
            # Security Whitepaper A01.FR.03: from now on only the new key is good (this runs
            # as the answer arrives, before the charge point can reconnect with the new key).
            # `call(..., "ChangeConfiguration", ...)` leaves the keys alone, to imitate a
            # CSMS that lost the change.
            self.auth_keys[cp_id] = value
        return answer

    async def get_configuration(self, cp_id, keys=None, timeout=None):
        payload = {"key": list(keys)} if keys is not None else {}
        return await self.call(cp_id, "GetConfiguration", payload, timeout=timeout)

    async def change_availability(self, cp_id, connector_id, kind, timeout=None):
        return await self.call(cp_id, "ChangeAvailability",
                               {"connectorId": connector_id, "type": kind}, timeout=timeout)

    async def unlock_connector(self, cp_id, connector_id, timeout=None):
        return await self.call(cp_id, "UnlockConnector", {"connectorId": connector_id},
                               timeout=timeout)

    async def clear_cache(self, cp_id, timeout=None):
        return await self.call(cp_id, "ClearCache", {}, timeout=timeout)

    async def trigger_message(self, cp_id, requested_message, connector_id=None, timeout=None):
        payload = {"requestedMessage": requested_message}
        if connector_id is not None:
            payload["connectorId"] = connector_id
        return await self.call(cp_id, "TriggerMessage", payload, timeout=timeout)

    async def data_transfer(self, cp_id, vendor_id, message_id=None, data=None, timeout=None):
        payload = {"vendorId": vendor_id}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data if isinstance(data, str) else _compact(data)
        return await self.call(cp_id, "DataTransfer", payload, timeout=timeout)

    # ------------------------------------------------------------------ internals
    def _now(self):
        now = self.clock() if self.clock is not None else datetime.now(timezone.utc)
        return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
            "%03dZ" % (now.microsecond // 1000)

    def _next_boot(self, station):
        script = self.boot_script
        if isinstance(script, dict):
            script = script.get(station.cp_id, ())
        if station.boots < len(script):
            status, interval = script[station.boots]
            return status, int(interval)
        return "Accepted", int(self.heartbeat_interval)

    def _id_tag_info(self, tag):
        value = self.id_tags.get(tag, self.unknown_tag_status)
        if isinstance(value, str):
            return {"status": value}
        return camel_to_snake_case(dict(value))

    def _record(self, cp_id, direction, kind, uid, action, payload, raw):
        rec = Record(self._loop.time() if self._loop else _time.monotonic(), cp_id, direction,
                     kind, uid, action, payload, raw)
        self.log.append(rec)
        if kind == "CALL":
            key = (cp_id, direction, action)
            self._counts[key] = self._counts.get(key, 0) + 1
        self._emit(rec)

    def _event(self, cp_id, event, **detail):
        ev = ConnectionEvent(self._loop.time() if self._loop else _time.monotonic(), cp_id,
                             event, detail)
        self.connection_events.append(ev)
        self._emit(ev)

    def _emit(self, item):
        for fn in list(self.listeners):
            try:
                fn(item)
            except Exception:
                log.exception("CSMS listener failed")
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _process_request(self, connection, request):
        cp_id = _cp_id_from_path(request.path)
        connection.cp_id = cp_id
        if self._refuse_until is not None:
            left = self._refuse_until - self._loop.time()
            if left > 0:
                response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                              "CSMS refusing connections\n")
                response.headers["Retry-After"] = str(max(1, math.ceil(left)))
                return response
            self._refuse_until = None
        if cp_id is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND,
                                      "No charge point id in the path\n")
        if self.auth_keys is not None:
            keys = self.auth_keys

            def check(username, password):
                key = keys.get(cp_id)
                return username == cp_id and key is not None and hmac.compare_digest(
                    key.encode(errors="surrogateescape"),
                    password.encode(errors="surrogateescape"))

            return await basic_auth(realm="ocpp", check_credentials=check)(connection, request)
        return None

    def _process_response(self, connection, request, response):
        if response.status_code != 101:
            self._event(getattr(connection, "cp_id", None), "rejected",
                        status=response.status_code, reason=response.reason_phrase,
                        path=request.path)
        return None

    async def _handler(self, ws):
        cp_id = getattr(ws, "cp_id", None) or _cp_id_from_path(ws.request.path)
        conn = _Connection(self, cp_id, ws)
        station = self.station(cp_id)
        old = self._conns.get(cp_id)
        self._conns[cp_id] = conn
        station.connects += 1
        station.username = getattr(ws, "username", None)
        self._event(cp_id, "connected", subprotocol=ws.subprotocol, username=station.username,
                    path=ws.request.path)
        if old is not None:     # the newest connection of an id wins, as in real back ends
            closing = asyncio.create_task(old.ws.close(1000, "replaced by a new connection"))
            self._tasks.add(closing)
            closing.add_done_callback(self._tasks.discard)
        cp = _CentralSystem(conn)
        task = asyncio.create_task(cp.start())
        task.add_done_callback(lambda t: self._routing_ended(t, conn))
        try:
            async for raw in ws:
                await conn.frame(raw)
        except ConnectionClosed:
            pass
        finally:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            conn.fail_pending()
            if self._conns.get(cp_id) is conn:
                del self._conns[cp_id]
            self._event(cp_id, "disconnected", code=ws.close_code, reason=ws.close_reason)
            conn.closed.set()

    def _routing_ended(self, task, conn):
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            log.error("CSMS routing for %s failed", conn.cp_id, exc_info=exc)
            closing = asyncio.ensure_future(conn.ws.close(1011, "CSMS internal error"))
            self._tasks.add(closing)
            closing.add_done_callback(self._tasks.discard)


# ---------------------------------------------------------------------------------------- CLI

def _parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m simulator.csms",
        description="Run the local OCPP 1.6J CSMS and print every message until Ctrl-C. "
                    "Charge points connect to ws://HOST:PORT/ocpp/<id> (or ws://HOST:PORT/<id>).")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default %(default)s)")
    ap.add_argument("--port", type=int, default=9000, help="port (default %(default)s; 0 = any)")
    ap.add_argument("--auth", action="append", default=[], metavar="ID:KEY",
                    help="require HTTP Basic auth (security profile 1/2); repeat per charge point")
    ap.add_argument("--heartbeat-interval", type=int, default=300, metavar="S",
                    help="interval in the Accepted BootNotification answer (default %(default)s)")
    ap.add_argument("--boot", action="append", default=[], metavar="STATUS[:INTERVAL]",
                    help="answer the first boots with this status (Pending, Rejected), in order")
    ap.add_argument("--tag", action="append", default=[], metavar="TAG=STATUS",
                    help="idTag status, e.g. BAD=Invalid (others: --unknown-tag-status)")
    ap.add_argument("--unknown-tag-status", default="Accepted", metavar="STATUS",
                    help="status of tags not given with --tag (default %(default)s)")
    ap.add_argument("--lenient", action="store_true",
                    help="do not schema-check what charge points send")
    ap.add_argument("--cert", metavar="PEM", help="serve wss:// with this certificate chain")
    ap.add_argument("--key", metavar="PEM", help="private key for --cert")
    args = ap.parse_args(argv)
    try:
        args.auth = dict(a.split(":", 1) for a in args.auth) if args.auth else None
        args.tag = dict(t.split("=", 1) for t in args.tag)
        boots = []
        for b in args.boot:
            status, _, interval = b.partition(":")
            boots.append((status, int(interval or 10)))
        args.boot = boots
    except ValueError as e:
        ap.error("bad --auth/--tag/--boot value (%s)" % e)
    if args.key and not args.cert:
        ap.error("--key needs --cert")
    return args


async def _serve_cli(args):
    ssl_context = None
    if args.cert:
        import ssl
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.cert, args.key)
    csms = LocalCsms(args.host, args.port, auth_keys=args.auth, ssl_context=ssl_context,
                     heartbeat_interval=args.heartbeat_interval, boot_script=args.boot,
                     id_tags=args.tag, unknown_tag_status=args.unknown_tag_status,
                     lenient=args.lenient)

    def show(item):
        now = _time.time()
        stamp = _time.strftime("%H:%M:%S", _time.localtime(now)) + ".%03d" % (now % 1 * 1000)
        if isinstance(item, Record):
            arrow = "->" if item.direction == "from_cp" else "<-"
            body = item.payload if item.kind == "INVALID" else _compact(item.payload)
            print("%s %s %s %s %s %s" % (stamp, item.cp_id, arrow, item.kind,
                                         item.action or "-", body), flush=True)
        else:
            print("%s %s %s %s" % (stamp, item.cp_id, item.event, _compact(item.detail)),
                  flush=True)

    csms.listeners.append(show)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # also when started with SIGINT ignored (a background job of a script)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with csms:
        print("CSMS listening on %s (charge points connect to %s/<id>)" % (csms.url, csms.url),
              flush=True)
        await stop.wait()


def main(argv=None):
    args = _parse_args(argv)
    try:
        asyncio.run(_serve_cli(args))
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

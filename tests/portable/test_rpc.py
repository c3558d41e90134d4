"""agent.rpc: OCPP-J framing, one CALL in flight, timeouts, CALLERROR (portable)."""
import json

from agent.rpc import CALL, CALLERROR, CALLRESULT, DEFERRED, NO_ANSWER, CallError, Rpc


def handler(action, payload):
    if action == "Reset":
        return {"status": "Accepted"}
    if action == "Explode":
        raise ValueError("bug in a handler")
    if action == "Refuse":
        raise CallError("NotSupported", "not here")
    raise CallError("NotImplemented", "unknown action " + action)


def rpc(**kw):
    r = Rpc(handler, id_prefix="b1-", **kw)
    r.connection_made(0)
    return r


def frames(r):
    return [json.loads(f) for f in r.take_frames()]


def test_call_frame_and_one_in_flight():
    r = rpc()
    results = []
    r.call(0, "Heartbeat", {}, lambda now, p, e: results.append((now, p, e)))
    r.call(0, "StatusNotification", {"connectorId": 1}, None)
    assert frames(r) == [[CALL, "b1-1", "Heartbeat", {}]]     # the second waits
    assert r.queued() == 2
    r.receive(5, json.dumps([CALLRESULT, "b1-1", {"currentTime": "2024-01-01T00:00:00Z"}]))
    assert results == [(5, {"currentTime": "2024-01-01T00:00:00Z"}, None)]
    assert frames(r) == [[CALL, "b1-2", "StatusNotification", {"connectorId": 1}]]


def test_callerror_reaches_the_callback():
    r = rpc()
    got = []
    r.call(0, "Authorize", {"idTag": "X"}, lambda now, p, e: got.append(e))
    r.take_frames()
    r.receive(1, json.dumps([CALLERROR, "b1-1", "GenericError", "nope", {}]))
    assert got[0].code == "GenericError" and got[0].description == "nope"
    assert r.queued() == 0


def test_timeout_frees_the_line_and_reports():
    r = rpc(response_timeout_ms=1000)
    got = []
    r.call(0, "Heartbeat", {}, lambda now, p, e: got.append((now, e.code)))
    r.call(0, "Heartbeat", {}, None)
    r.take_frames()
    assert r.next_deadline() == 1000
    r.poll(999)
    assert got == []
    r.poll(1000)
    assert got == [(1000, "Timeout")]
    assert frames(r) == [[CALL, "b1-2", "Heartbeat", {}]]
    # a late answer to the timed-out call is ignored, not matched to the next one
    r.receive(1001, json.dumps([CALLRESULT, "b1-1", {}]))
    assert r.queued() == 1


def test_calls_wait_for_a_connection_and_the_gate():
    r = Rpc(handler)
    r.call(0, "StatusNotification", {}, None)
    assert r.take_frames() == []
    r.gate = lambda action: action == "BootNotification"
    r.connection_made(1)
    assert r.take_frames() == []            # the gate holds it (boot not accepted yet)
    r.gate = None
    r.resume(2)
    assert len(r.take_frames()) == 1


def test_connection_lost_fails_the_call_in_flight_and_keeps_the_queue():
    r = rpc()
    got = []
    r.call(0, "Heartbeat", {}, lambda now, p, e: got.append(e.code))
    r.call(0, "StatusNotification", {}, None)
    r.take_frames()
    r.connection_lost(3)
    assert got == ["ConnectionLost"] and r.queued() == 1
    r.connection_made(4)
    assert json.loads(r.take_frames()[0])[2] == "StatusNotification"
    assert r.drop_queued(0, lambda action: False) == 0     # already sent: nothing queued


def test_incoming_call_is_answered():
    r = rpc()
    r.receive(0, json.dumps([CALL, "csms-7", "Reset", {"type": "Soft"}]))
    assert frames(r) == [[CALLRESULT, "csms-7", {"status": "Accepted"}]]


def test_handler_errors_become_callerrors():
    r = rpc()
    r.receive(0, json.dumps([CALL, "a", "Refuse", {}]))
    r.receive(0, json.dumps([CALL, "b", "Nope", {}]))
    r.receive(0, json.dumps([CALL, "c", "Explode", {}]))
    answers = frames(r)
    assert answers == [[CALLERROR, "a", "NotSupported", "not here", {}],
                       [CALLERROR, "b", "NotImplemented", "unknown action Nope", {}],
                       [CALLERROR, "c", "InternalError", "Explode failed", {}]]


def test_garbage_never_raises_and_gets_formation_violation_when_it_has_an_id():
    r = rpc()
    for text in ("", "not json", "{}", "[]", "42", "[2]", '[2, "x"]', '[2, "x", "Reset"]',
                 '[2, "x", "Reset", []]', '[2, 5, "Reset", {}]', '[9, "y", "A", {}]',
                 '[2, "' + "i" * 37 + '", "Reset", {}]', '[2, "z", 7, {}]', '[3, "q"]',
                 '[2, "t", "Reset", {}', "\x00\xff"):
        r.receive(0, text)
    answers = frames(r)
    assert answers == [
        [CALLERROR, "x", "FormationViolation", "a CALL is [2, id, action, payload]", {}],
        [CALLERROR, "x", "FormationViolation", "a CALL is [2, id, action, payload]", {}],
        [CALLERROR, "x", "FormationViolation", "payload must be a JSON object", {}],
        [CALLERROR, "y", "ProtocolError", "unknown message type 9", {}],
        [CALLERROR, "z", "FormationViolation", "a CALL is [2, id, action, payload]", {}],
    ]
    kinds = [event[0] for event in r.take_events()]
    assert kinds.count("invalid_in") == 16


def test_unique_ids_do_not_repeat():
    r = rpc()
    ids = set()
    for n in range(50):
        ids.add(r.call(0, "Heartbeat", {}, None))
    assert len(ids) == 50 and all(len(i) <= 36 for i in ids)


class Strict:
    """A stand-in validator: StatusNotification needs connectorId."""

    def request(self, action, payload):
        if action == "StatusNotification" and "connectorId" not in payload:
            raise CallError("OccurenceConstraintViolation", "connectorId missing")

    def response(self, action, payload):
        if action == "Reset" and payload.get("status") not in ("Accepted", "Rejected"):
            raise CallError("PropertyConstraintViolation", "status")


def test_validator_rejects_invalid_incoming_and_lenient_lets_it_through():
    strict = rpc(validator=Strict())
    strict.receive(0, json.dumps([CALL, "s", "StatusNotification", {}]))
    assert frames(strict) == [[CALLERROR, "s", "OccurenceConstraintViolation",
                               "connectorId missing", {}]]
    lenient = Rpc(lambda action, payload: {}, validator=Strict(), lenient=True)
    lenient.connection_made(0)
    lenient.receive(0, json.dumps([CALL, "s", "StatusNotification", {}]))
    assert frames(lenient) == [[CALLRESULT, "s", {}]]
    assert [e[0] for e in lenient.take_events()] == ["received", "schema", "sent"]


def test_invalid_result_from_the_csms_is_an_error_for_the_caller():
    r = rpc(validator=Strict())
    got = []
    r.call(0, "Reset", {}, lambda now, p, e: got.append((p, e and e.code)))
    r.take_frames()
    r.receive(1, json.dumps([CALLRESULT, "b1-1", {"status": "Maybe"}]))
    assert got == [(None, "PropertyConstraintViolation")]


def test_own_invalid_call_is_not_sent():
    r = rpc(validator=Strict())
    got = []
    r.call(0, "StatusNotification", {}, lambda now, p, e: got.append(e.code))
    assert r.take_frames() == [] and got == ["OccurenceConstraintViolation"]


def test_a_deferred_call_is_answered_later_once_and_not_across_connections():
    r = Rpc(None)
    owed = []

    def handler(action, payload):
        owed.append(r.calling)
        return DEFERRED if action == "UnlockConnector" else NO_ANSWER
    r.handler = handler
    r.connection_made(0)
    r.receive(0, json.dumps([CALL, "u1", "UnlockConnector", {"connectorId": 1}]))
    r.receive(0, json.dumps([CALL, "g1", "GetConfiguration", {}]))
    assert frames(r) == [] and owed == ["u1", "g1"] and r.calling is None
    assert r.answer("u1", {"status": "Unlocked"}) is True
    assert r.answer("u1", {"status": "Unlocked"}) is False          # answered already
    assert r.answer("g1", {}) is False                              # never owed
    assert frames(r) == [[CALLRESULT, "u1", {"status": "Unlocked"}]]
    r.receive(1, json.dumps([CALL, "u2", "UnlockConnector", {"connectorId": 1}]))
    r.connection_lost(2)
    r.connection_made(3)
    assert r.answer("u2", {"status": "Unlocked"}) is False          # the asker has gone
    assert frames(r) == []


def test_dropped_calls_hear_connection_lost():
    r = Rpc(handler)            # offline: every CALL waits in the queue
    heard = []
    r.call(0, "Heartbeat", {}, lambda now, p, e: heard.append(("Heartbeat", e.code)))
    r.call(0, "Authorize", {"idTag": "T"}, lambda now, p, e: heard.append(("Authorize", e.code)))
    r.call(0, "BootNotification", {}, lambda now, p, e: heard.append(("Boot", e.code)))
    assert r.drop_queued(1, lambda action: action == "BootNotification") == 2
    assert heard == [("Heartbeat", "ConnectionLost"), ("Authorize", "ConnectionLost")]
    assert r.queued() == 1

"""Inbound frames fuzzed against the RPC layer with the official OCPP 1.6 schemas.

Never a crash; every answer is a well-formed CALLRESULT/CALLERROR; a CALL with a usable id
gets exactly one answer; and the CALLERROR code is the one OCPP-J prescribes for what is
wrong with the payload.
"""
import json

from hypothesis import given, settings, strategies as st

from agent.ocpp_schemas import SchemaValidator
from agent.rpc import CALL, CALLERROR, CALLRESULT, Rpc

VALIDATOR = SchemaValidator("1.6")
CODES = {"FormationViolation", "ProtocolError", "TypeConstraintViolation",
         "PropertyConstraintViolation", "OccurenceConstraintViolation", "NotImplemented",
         "NotSupported", "InternalError", "SecurityError", "GenericError"}

# minimal valid CSMS -> charge point requests, and what a charge point answers
VALID = {
    "Reset": ({"type": "Soft"}, {"status": "Accepted"}),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "60"},
                            {"status": "Accepted"}),
    "RemoteStartTransaction": ({"idTag": "TAG1"}, {"status": "Accepted"}),
    "RemoteStopTransaction": ({"transactionId": 1}, {"status": "Accepted"}),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "TriggerMessage": ({"requestedMessage": "Heartbeat"}, {"status": "Accepted"}),
    "ChangeAvailability": ({"connectorId": 0, "type": "Inoperative"}, {"status": "Accepted"}),
    "GetConfiguration": ({}, {"configurationKey": [], "unknownKey": []}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "DataTransfer": ({"vendorId": "acme"}, {"status": "UnknownVendorId"}),
}


def handler(action, payload):
    return VALID[action][1]


def new_rpc():
    rpc = Rpc(handler, validator=VALIDATOR)
    rpc.connection_made(0)
    return rpc


def answers(rpc):
    return [json.loads(frame) for frame in rpc.take_frames()]


def well_formed(answer):
    if answer[0] == CALLRESULT:
        return len(answer) == 3 and isinstance(answer[2], dict)
    return (answer[0] == CALLERROR and len(answer) == 5 and answer[2] in CODES
            and isinstance(answer[3], str) and isinstance(answer[4], dict))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                        max_size=4),
    max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")),
                 json_values.map(json.dumps)))
def test_any_text_is_survived(text):
    rpc = new_rpc()
    rpc.receive(0, text)
    out = answers(rpc)
    assert len(out) <= 1 and all(well_formed(a) for a in out)


@settings(max_examples=500, deadline=None)
@given(unique_id=st.text(min_size=1, max_size=36), action=st.sampled_from(sorted(VALID)),
       payload=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_every_call_gets_exactly_one_answer(unique_id, action, payload):
    rpc = new_rpc()
    rpc.receive(0, json.dumps([CALL, unique_id, action, payload]))
    out = answers(rpc)
    assert len(out) == 1 and out[0][1] == unique_id and well_formed(out[0])


@settings(max_examples=200, deadline=None)
@given(action=st.sampled_from(sorted(VALID)), size=st.integers(10000, 300000))
def test_huge_payloads_are_answered(action, size):
    rpc = new_rpc()
    payload = dict(VALID[action][0], junk="x" * size)
    rpc.receive(0, json.dumps([CALL, "big", action, payload]))
    assert answers(rpc) == [[CALLERROR, "big", "FormationViolation",
                             answers_description(action, payload), {}]]


def answers_description(action, payload):
    rpc = new_rpc()
    rpc.receive(0, json.dumps([CALL, "big", action, payload]))
    return answers(rpc)[0][3]


def error_code(action, payload):
    rpc = new_rpc()
    rpc.receive(0, json.dumps([CALL, "m", action, payload]))
    (answer,) = answers(rpc)
    return answer[2] if answer[0] == CALLERROR else "ok"


def test_valid_requests_are_answered_with_results():
    for action, (request, _) in VALID.items():
        assert error_code(action, request) == "ok", action


def test_the_right_callerror_for_each_kind_of_wrong():
    assert error_code("Reset", {}) == "OccurenceConstraintViolation"
    assert error_code("Reset", {"type": 1}) == "TypeConstraintViolation"
    assert error_code("Reset", {"type": "Gentle"}) == "PropertyConstraintViolation"
    assert error_code("Reset", {"type": "Soft", "extra": 1}) == "FormationViolation"
    assert error_code("RemoteStartTransaction", {"idTag": "T" * 21}) == \
        "PropertyConstraintViolation"
    assert error_code("RemoteStopTransaction", {"transactionId": "7"}) == \
        "TypeConstraintViolation"
    assert error_code("ChangeConfiguration", {"key": "K"}) == "OccurenceConstraintViolation"
    assert error_code("UnlockConnector", {"connectorId": 1.5}) == "TypeConstraintViolation"
    assert error_code("NoSuchAction", {}) == "NotImplemented"


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(sorted(VALID)), data=st.data())
def test_a_missing_required_field_is_an_occurence_violation(action, data):
    schema = VALIDATOR._validator(action + ".json").schema
    required = schema.get("required", [])
    if not required:
        return
    field = data.draw(st.sampled_from(required))
    payload = dict(VALID[action][0])
    payload.pop(field, None)
    assert error_code(action, payload) == "OccurenceConstraintViolation"


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(sorted(VALID)), data=st.data())
def test_a_wrongly_typed_field_is_a_type_violation(action, data):
    request = VALID[action][0]
    if not request:
        return
    field = data.draw(st.sampled_from(sorted(request)))
    wrong = [] if not isinstance(request[field], list) else {}
    payload = dict(request)
    payload[field] = wrong
    assert error_code(action, payload) == "TypeConstraintViolation"

"""OCPP-J RPC: framing, unique ids, one outstanding CALL, response timeouts, CALLERROR (sans-I/O).

Frames in (`receive(now, text)`), frames out (`take_frames()`), events out (`take_events()`),
`next_deadline()` / `poll(now)` for the response timeout, like the controller. Portable: the
same file runs on the MCU, where it is the whole RPC layer.

- `call(now, action, payload, callback)` queues a CALL. OCPP-J allows one CALL in flight per
  direction: the next leaves when the previous one's CALLRESULT/CALLERROR arrived or timed
  out. `callback(now, payload, error)` gets the result payload, or a `CallError` (code
  "Timeout" or "ConnectionLost" for what never got an answer; those are never sent).
- Incoming CALLs go to `handler(action, payload) -> response payload`; a handler raises
  `CallError` to answer with CALLERROR. Anything it raises otherwise becomes InternalError:
  a bug in one handler never takes the connection down. A handler whose answer depends on
  what happens next (an unlock: did the lock open?) takes the CALL's id from `calling`,
  returns `DEFERRED` and answers later with `answer(unique_id, payload)`; one that must not
  answer at all (OCPP 1.6 §4.2: while the boot is Rejected) returns `NO_ANSWER`.
- An optional `validator` (CPython: the official JSON schemas) checks every payload both ways
  and raises `CallError` with the code OCPP-J prescribes for what is wrong. With
  `lenient=True` a schema problem is reported as an event and the payload goes through.
- Garbage in (not JSON, not an array, wrong element types) is answered with
  FormationViolation when it carries a usable message id, an unknown message type id with
  ProtocolError (1.6 has no MessageTypeNotSupported; the frame breaks the RPC framework, not
  an action's PDU), and each is reported as an event; it never raises.
"""
import json

CALL = 2
CALLRESULT = 3
CALLERROR = 4

# OCPP-J 1.6 §4.2.3 error codes (2.0.1 renames FormationViolation to FormatViolation and adds
# MessageTypeNotSupported, RpcFrameworkError; the mapping lives with the version layer)
FORMATION_VIOLATION = "FormationViolation"
PROTOCOL_ERROR = "ProtocolError"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"   # sic, as in OCPP 1.6
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
SECURITY_ERROR = "SecurityError"
GENERIC_ERROR = "GenericError"
# local outcomes, never on the wire
TIMEOUT = "Timeout"
CONNECTION_LOST = "ConnectionLost"

MAX_ID_LENGTH = 36      # OCPP-J: the message id is at most 36 characters

# what a handler returns instead of a payload
DEFERRED = "deferred"       # the answer comes later, through answer()
NO_ANSWER = "no answer"     # the CALL goes unanswered


class CallError(Exception):
    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details if details is not None else {}

    def __str__(self):
        return "%s: %s" % (self.code, self.description) if self.description else self.code


def _message_id(frame):
    """The id of a frame that failed validation, if it has a usable one."""
    if isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str) and \
            0 < len(frame[1]) <= MAX_ID_LENGTH:
        return frame[1]
    return None


class _Pending:
    __slots__ = ("unique_id", "action", "payload", "callback", "deadline", "ungated")

    def __init__(self, unique_id, action, payload, callback, ungated):
        self.unique_id = unique_id
        self.action = action
        self.payload = payload
        self.callback = callback
        self.deadline = None
        self.ungated = ungated


class Rpc:
    def __init__(self, handler, validator=None, lenient=False, response_timeout_ms=30000,
                 id_prefix=""):
        self.handler = handler
        self.validator = validator
        self.lenient = lenient
        self.response_timeout_ms = response_timeout_ms
        self.id_prefix = id_prefix
        self.gate = None          # optional gate(action) -> bool: may this CALL leave now?
        self._counter = 0
        self._queue = []
        self._outstanding = None
        self._frames = []
        self._events = []
        self._deferred = {}       # unique id -> action, of CALLs a handler answers later
        self.calling = None       # the id of the CALL whose handler is running
        self.connected = False

    # ------------------------------------------------------------------ outputs
    def take_frames(self):
        frames, self._frames = self._frames, []
        return frames

    def take_events(self):
        events, self._events = self._events, []
        return events

    def next_deadline(self):
        pending = self._outstanding
        return None if pending is None else pending.deadline

    def awaiting(self):
        """A CALL is out and its answer has not come yet."""
        return self._outstanding is not None

    def has_frames(self):
        return bool(self._frames)

    def busy(self):
        return self._outstanding is not None or bool(self._queue)

    def queued(self):
        return len(self._queue) + (1 if self._outstanding is not None else 0)

    # ------------------------------------------------------------------ outgoing CALLs
    def new_id(self):
        self._counter += 1
        return "%s%d" % (self.id_prefix, self._counter)

    def call(self, now, action, payload, callback=None, ungated=False):
        """Queue a CALL; returns its message id. `ungated` CALLs pass the gate (a message
        the CSMS itself triggered may leave while the boot is still pending)."""
        pending = _Pending(self.new_id(), action, payload, callback, ungated)
        self._queue.append(pending)
        self._send_next(now)
        return pending.unique_id

    def _send_next(self, now):
        if self._outstanding is not None or not self._queue or not self.connected:
            return
        # the oldest CALL the gate lets through; the ones it holds keep their order
        for index in range(len(self._queue)):
            head = self._queue[index]
            if head.ungated or self.gate is None or self.gate(head.action):
                break
        else:
            return
        self._queue.pop(index)
        if self.validator is not None:
            # our own CALL failing the schema is our bug: say so, do not send it
            try:
                self.validator.request(head.action, head.payload)
            except CallError as error:
                if not self.lenient:
                    self._event("invalid_out", head.action, str(error))
                    self._finish(now, head, None, error)
                    self._send_next(now)
                    return
                self._event("schema", head.action, str(error))
        head.deadline = now + self.response_timeout_ms
        self._outstanding = head
        self._frames.append(json.dumps([CALL, head.unique_id, head.action, head.payload]))
        self._event("sent", CALL, head.action, head.payload)

    def resume(self, now):
        """Re-check the gate / connection (e.g. after BootNotification was accepted)."""
        self._send_next(now)

    def _finish(self, now, pending, payload, error):
        if pending.callback is not None:
            pending.callback(now, payload, error)

    def poll(self, now):
        pending = self._outstanding
        if pending is not None and now >= pending.deadline:
            self._outstanding = None
            self._event("timeout", pending.action, pending.unique_id)
            self._finish(now, pending, None, CallError(TIMEOUT, "no answer within %d ms"
                                                       % self.response_timeout_ms))
        self._send_next(now)

    # ------------------------------------------------------------------ connection
    def connection_made(self, now):
        self.connected = True
        self._send_next(now)

    def connection_lost(self, now):
        """The CALL in flight is lost; queued CALLs wait for the next connection. Answers
        still owed are moot: the CSMS that asked has gone."""
        self.connected = False
        self._deferred = {}
        pending = self._outstanding
        self._outstanding = None
        if pending is not None:
            self._finish(now, pending, None, CallError(CONNECTION_LOST, pending.action))

    def drop_queued(self, now, keep):
        """Forget queued CALLs except those `keep(action)` wants (non-transaction messages
        are not worth replaying after a long outage); each dropped one's callback hears
        ConnectionLost, as it never reached the CSMS. Returns how many were dropped."""
        dropped = [p for p in self._queue if not keep(p.action)]
        self._queue = [p for p in self._queue if keep(p.action)]
        for pending in dropped:
            self._finish(now, pending, None, CallError(CONNECTION_LOST, pending.action))
        return len(dropped)

    # ------------------------------------------------------------------ incoming frames
    def receive(self, now, text):
        try:
            frame = json.loads(text)
        except (ValueError, TypeError):
            self._reject(None, FORMATION_VIOLATION, "not JSON", text)
            return
        if not isinstance(frame, list) or not frame:
            self._reject(frame, FORMATION_VIOLATION, "an OCPP-J message is a JSON array", text)
            return
        kind = frame[0]
        if kind == CALL:
            self._receive_call(now, frame, text)
        elif kind == CALLRESULT or kind == CALLERROR:
            self._receive_answer(now, frame, text)
        else:
            self._reject(frame, PROTOCOL_ERROR, "unknown message type %r" % (kind,), text)
        self._send_next(now)

    def _reject(self, frame, code, description, text):
        unique_id = _message_id(frame)
        self._event("invalid_in", code, description, text if len(text) <= 200 else
                    text[:200] + "...")
        # answer only what could have been a CALL: never CALLERROR a CALLRESULT/CALLERROR
        if unique_id is not None and isinstance(frame, list) and frame[0] not in (
                CALLRESULT, CALLERROR):
            self._answer_error(unique_id, code, description)

    def _answer_error(self, unique_id, code, description, details=None):
        self._frames.append(json.dumps([CALLERROR, unique_id, code, description,
                                        details if details is not None else {}]))
        self._event("sent", CALLERROR, code, description)

    def _receive_call(self, now, frame, text):
        if len(frame) != 4 or _message_id(frame) is None or not isinstance(frame[2], str):
            self._reject(frame, FORMATION_VIOLATION,
                         "a CALL is [2, id, action, payload]", text)
            return
        unique_id, action, payload = frame[1], frame[2], frame[3]
        if not isinstance(payload, dict):
            self._reject(frame, FORMATION_VIOLATION, "payload must be a JSON object", text)
            return
        self._event("received", CALL, action, payload)
        self.calling = unique_id
        try:
            if self.validator is not None:
                self._check(self.validator.request, action, payload)
            response = self.handler(action, payload)
        except CallError as error:
            self._answer_error(unique_id, error.code, error.description, error.details)
            return
        except Exception as error:   # a handler bug answers InternalError, never crashes
            self._event("handler_error", action, repr(error))
            self._answer_error(unique_id, INTERNAL_ERROR, "%s failed" % action)
            return
        finally:
            self.calling = None
        if response is DEFERRED:
            self._deferred[unique_id] = action
        elif response is NO_ANSWER:
            self._event("unanswered", action, unique_id)
        else:
            self._answer(unique_id, action, response)

    def answer(self, unique_id, payload):
        """The answer to a CALL whose handler returned DEFERRED; False if it is no longer
        owed (the connection it came on has gone, or it was answered already)."""
        action = self._deferred.pop(unique_id, None)
        if action is None:
            return False
        self._answer(unique_id, action, payload)
        return True

    def _answer(self, unique_id, action, response):
        if self.validator is not None:
            try:
                self._check(self.validator.response, action, response)
            except CallError as error:
                self._answer_error(unique_id, error.code, error.description, error.details)
                return
            except Exception as error:   # a payload the validator chokes on: our bug
                self._event("handler_error", action, repr(error))
                self._answer_error(unique_id, INTERNAL_ERROR, "%s failed" % action)
                return
        self._frames.append(json.dumps([CALLRESULT, unique_id, response]))
        self._event("sent", CALLRESULT, action, response)

    def _check(self, validate, action, payload):
        try:
            validate(action, payload)
        except CallError as error:
            if error.code == NOT_IMPLEMENTED or not self.lenient:
                raise
            self._event("schema", action, str(error))

    def _receive_answer(self, now, frame, text):
        kind = frame[0]
        expected = 3 if kind == CALLRESULT else 5
        if len(frame) != expected or _message_id(frame) is None:
            self._reject(frame, FORMATION_VIOLATION, "malformed answer", text)
            return
        pending = self._outstanding
        if pending is None or pending.unique_id != frame[1]:
            self._event("invalid_in", "unexpected answer", frame[1], text[:200])
            return
        self._outstanding = None
        if kind == CALLERROR:
            error = CallError(str(frame[2]), str(frame[3]),
                              frame[4] if isinstance(frame[4], dict) else {})
            self._event("received", CALLERROR, pending.action, {"code": error.code,
                                                               "description": error.description})
            self._finish(now, pending, None, error)
            return
        payload = frame[2]
        self._event("received", CALLRESULT, pending.action, payload)
        if not isinstance(payload, dict):
            self._finish(now, pending, None, CallError(FORMATION_VIOLATION,
                                                       "result payload is not an object"))
            return
        if self.validator is not None:
            try:
                self._check(self.validator.response, pending.action, payload)
            except CallError as error:
                self._finish(now, pending, None, error)
                return
        self._finish(now, pending, payload, None)

    def _event(self, kind, *data):
        self._events.append((kind,) + data)

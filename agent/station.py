"""The station: connectors, authorization and availability above the per-connector controllers.

Sans-I/O like the controllers. Until OCPP is wired in, authorization is local: free charging,
or a list of id tags from the board file. The authorizer is a replaceable object with one
method, `check(now, tag)` -> ACCEPTED / REJECTED / PENDING; an OCPP authorizer answers PENDING,
sends Authorize, and reports the answer later through `Station.token_result`.
"""
ACCEPTED = "Accepted"
REJECTED = "Invalid"
PENDING = "Pending"


class LocalAuthorizer:
    """Free charging (every plug-in starts a session as `free_tag`), an allow-list, or
    "csms": the CSMS decides (OCPP replaces this authorizer); without one nobody charges."""

    def __init__(self, mode="free", id_tags=(), free_tag="FREE"):
        if mode not in ("free", "list", "csms"):
            raise ValueError("authorization mode must be 'free', 'list' or 'csms'")
        self.mode = mode
        self.id_tags = set(id_tags)
        self.free_tag = free_tag

    @property
    def free(self):
        return self.mode == "free"

    def check(self, now, tag):
        if self.mode == "free" or tag in self.id_tags:
            return ACCEPTED
        return REJECTED


class Station:
    def __init__(self, evses, authorizer):
        self.evses = {}
        for evse in evses:
            self.evses[evse.connector_id] = evse
        self.authorizer = authorizer
        self._pending = {}        # tag -> connector id it was presented for (or None)
        self._events = []

    def take_events(self):
        events, self._events = self._events, []
        return events

    def connector(self, connector_id):
        evse = self.evses.get(connector_id)
        if evse is None:
            raise ValueError("no connector %r" % connector_id)
        return evse

    # ------------------------------------------------------------------ commands
    def present_token(self, now, tag, connector_id=None):
        """An RFID swipe (or app start). Stops the session it started, else authorizes."""
        for evse in self.evses.values():
            if evse.session_active and evse.session_tag == tag and \
                    (connector_id is None or evse.connector_id == connector_id):
                self._events.append((now, "token", tag, "stop", evse.connector_id))
                evse.stop(now, "local")
                return
        target = self._target_for_token(connector_id)
        if target is None:
            # another tag at a busy connector may stop it if the authorizer says it belongs
            # to the same group (OCPP parentIdTag); a local authorizer has no groups
            session = self._session_for_stop(connector_id)
            check_stop = getattr(self.authorizer, "check_stop", None)
            if session is None or check_stop is None:
                self._events.append((now, "token", tag, "ignored", connector_id))
                return
            status = check_stop(now, tag, session)
            self._events.append((now, "token", tag, "stop " + status.lower(),
                                 session.connector_id))
            if status == ACCEPTED:
                self.stop_by_token(now, tag, session.connector_id)
            return
        status = self.authorizer.check(now, tag)
        if status == PENDING:
            self._pending[tag] = target.connector_id
            self._events.append((now, "token", tag, "pending", target.connector_id))
            return
        self.token_result(now, tag, status, target.connector_id)

    def token_result(self, now, tag, status, connector_id=None):
        """The answer to a PENDING check (or an immediate one)."""
        if connector_id is None:
            connector_id = self._pending.pop(tag, None)
        else:
            self._pending.pop(tag, None)
        self._events.append((now, "token", tag, status, connector_id))
        if status != ACCEPTED or connector_id is None:
            return
        evse = self.evses[connector_id]
        if evse.state in ("idle", "authorizing"):
            evse.authorize(now, tag)

    def stop(self, now, connector_id, reason):
        self.connector(connector_id).stop(now, reason)

    def stop_by_token(self, now, tag, connector_id):
        """A tag other than the starting one ends the session (same group)."""
        evse = self.connector(connector_id)
        if evse.session_active:
            evse.stop_tag = tag
            evse.stop(now, "local")

    def _session_for_stop(self, connector_id):
        for evse in self.evses.values():
            if evse.session_active and (connector_id is None or
                                        evse.connector_id == connector_id):
                return evse
        return None

    def set_available(self, now, connector_id, available):
        """connector_id 0 = the whole station."""
        targets = self.evses.values() if connector_id == 0 else (self.connector(connector_id),)
        for evse in targets:
            evse.set_available(now, available)

    def _target_for_token(self, connector_id):
        if connector_id is not None:
            evse = self.evses.get(connector_id)
            if evse is not None and evse.state in ("idle", "authorizing"):
                return evse
            return None
        for wanted in ("authorizing", "idle"):
            for evse in self.evses.values():
                if evse.state == wanted:
                    return evse
        return None

    # ------------------------------------------------------------------ controller events
    def handle(self, evse, event):
        kind = event[1]
        if kind == "session" and event[2] == "authorizing" and self.authorizer.free:
            tag = self.authorizer.free_tag
            self._events.append((event[0], "token", tag, ACCEPTED, evse.connector_id))
            evse.authorize(event[0], tag)


def station_from_board(board):
    """Controllers and station for a normalised board dict (see tools/boardfile.py)."""
    from agent.evse import Evse
    from agent.params import Params
    params = Params(board.get("timing"))
    meter = board.get("meter", {})
    has_meter = meter.get("model", "sim") != "none"
    meter_lost_continues = meter.get("on_failure", "stop") == "continue"
    evses = []
    for c in board["connectors"]:
        evses.append(Evse(
            params, connector_id=c["id"], max_current_ma=c["max_current"],
            phases=c["phases"], socket=c["type"] == "socket",
            cable_max_current_ma=c.get("cable_max_current"), ventilation=c["ventilation"],
            contactor_feedback=c["contactor_feedback"], lock_feedback=c["lock_feedback"],
            supports_state_e=c.get("state_e", False), has_meter=has_meter,
            meter_lost_continues=meter_lost_continues))
    auth = board.get("authorization", {})
    authorizer = LocalAuthorizer(auth.get("mode", "free"), auth.get("id_tags", ()),
                                 auth.get("free_tag", "FREE"))
    return Station(evses, authorizer)

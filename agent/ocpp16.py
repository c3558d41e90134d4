"""OCPP 1.6J charge point: station events <-> OCPP messages (sans-I/O, portable).

`ChargePoint16` sits between the station (controllers, authorization, availability) and the
RPC layer. Inputs: station/controller events (`on_event`), CALLs from the CSMS (`handle`,
which the RPC layer calls), the connection coming and going, and `poll(now)` for its timers.
Outputs: CALLs through the RPC layer, commands to the station, and `take_requests()` for the
shell (a reset to perform), `take_reconnect()` for its transport (new credentials to use).

- One method per CSMS action, `on_<Action>`, found through `HANDLERS`; what the charge point
  sends is built in one `_send_<Action>` each.
- Status, stop-reason and measurand mappings are tables.
- StartTransaction, transaction MeterValues and StopTransaction go through the persistent
  journal before they are sent, one at a time and in order; retried per
  TransactionMessageAttempts / TransactionMessageRetryInterval (a failed attempt is one that
  was sent and answered with CALLERROR or not answered; a lost connection is no attempt);
  replayed after reconnect or reboot; a transaction left open by a power loss is closed with
  reason PowerLoss and the last meter value the journal holds.
"""
import json

from agent import faults as fault_table
from agent import rpc as rpc_mod
from agent.station import ACCEPTED, PENDING, REJECTED
from agent.timeutil import iso_utc, parse_iso

# session state -> ChargePointStatus (spec/standards.md §5.2)
STATUS = {
    "idle": "Available",
    "authorizing": "Preparing",
    "ready": "SuspendedEV",          # authorized, PWM on, EV not in C yet (B4)
    "charging": "Charging",
    "suspended_ev": "SuspendedEV",
    "suspended_evse": "SuspendedEVSE",
    "finishing": "Finishing",
    "faulted": "Faulted",
    "unavailable": "Unavailable",
}

# controller stop reason -> StopTransaction.reason
STOP_REASON = {
    "local": "Local",
    "remote": "Remote",
    "ev_disconnected": "EVDisconnected",
    "reboot": "Reboot",
    "power_loss": "PowerLoss",
    "soft_reset": "SoftReset",
    "hard_reset": "HardReset",
    "unlock_command": "UnlockCommand",
    "deauthorized": "DeAuthorized",
    "emergency_stop": "EmergencyStop",
    "other": "Other",
}

# configuration key -> the Evse attribute that applies it (each connector's controller
# decides what an EV-side disconnect does to the session and the cable lock)
EVSE_KEYS = {
    "StopTransactionOnEVSideDisconnect": "stop_on_ev_disconnect",
    "UnlockConnectorOnEVSideDisconnect": "unlock_on_ev_disconnect",
}

TRANSACTION_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
DEFAULT_RETRY_MS = 60000         # Pending/Rejected boot without an interval
# StopTransaction.transactionData: at most this many meter values per transaction; once full,
# the newest replaces the last, so Begin, the first samples and the latest are kept (as
# MicroOcpp's 4 slots, spec/embedded.md §A.6): it travels in open_tx and in one Stop record
STOP_TX_DATA_MAX = 8
UNLOCK_CHECK_MS = 100            # how often a pending UnlockConnector looks at the lock
UNLOCK_MARGIN_MS = 1000          # beyond the lock's own feedback deadline
POWER_LOSS_CHECK_MS = 100        # how often a recovered transaction looks for a reading
# what a PowerLoss Stop needs of an open_tx entry (an entry without them is not one of ours)
OPEN_TX_FIELDS = {"connector", "tag", "transaction_id", "wh", "time"}
# after how many dropped MeterValues the log says so (not each one of a long outage)
DROPPED_TOLD = (1, 10, 100, 1000, 10000, 100000)

# measurand -> (unit, phased, how to read it from (evse, sample)) in milli-units for A/V
MEASURANDS = {
    "Energy.Active.Import.Register": ("Wh", False),
    "Energy.Active.Export.Register": ("Wh", False),
    "Power.Active.Import": ("W", True),
    "Current.Import": ("A", True),
    "Voltage": ("V", True),
    "Current.Offered": ("A", False),
    "Power.Offered": ("W", False),
    "Frequency": (None, False),
}
PHASES = ("L1", "L2", "L3")


def _milli(value):
    """16020 -> "16.02", 16000 -> "16": OCPP values are decimal strings."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 1000)
    if not frac:
        return "%s%d" % (sign, whole)
    return ("%s%d.%03d" % (sign, whole, frac)).rstrip("0")


def _reading(measurand, evse, sample, phase_index):
    """(value text, phase) or None if the meter does not have it."""
    if measurand == "Energy.Active.Import.Register":
        value = sample.energy_import_wh if sample is not None else evse.energy_wh
        return None if value is None else str(value)
    if measurand == "Current.Offered":
        return _milli(evse.offered_ma())
    if measurand == "Power.Offered":
        return str(evse.offered_ma() * 230 * evse.phases // 1000)
    if sample is None:
        return None
    if measurand == "Energy.Active.Export.Register":
        return None if sample.energy_export_wh is None else str(sample.energy_export_wh)
    if measurand == "Frequency":
        return None if sample.frequency_mhz is None else _milli(sample.frequency_mhz)
    if phase_index is None:
        if measurand == "Power.Active.Import" and sample.power_w is not None:
            return str(sample.power_w)
        return None
    table = {"Power.Active.Import": sample.power_w_phases, "Current.Import": sample.current_ma,
             "Voltage": sample.voltage_dv}[measurand]
    if not table or table[phase_index] is None:
        return None
    value = table[phase_index]
    if measurand == "Voltage":
        return _milli(value * 100)
    if measurand == "Current.Import":
        return _milli(value)
    return str(value)


class ChargePoint16:
    def __init__(self, station, config, journal, storage=None, identity=None, wall_ms=None,
                 boot_count=1):
        self.station = station
        self.config = config
        self.journal = journal
        self.storage = storage
        self.identity = identity or {}
        self.rpc = None                 # set by attach()
        self.boot_count = self._count_boot(storage, boot_count)
        self._wall_offset = (wall_ms or 0)
        self.boot = "none"              # none -> pending/rejected -> accepted
        self.online = False
        self.now = 0
        self._timers = {}
        self._last_activity = 0
        self._reported = {}             # connector -> (status, error) the CSMS has
        self._tx = {}                   # connector -> {"key", "transaction_id", "tag"}
        self._tx_counter = 0
        self._deferred_start = {}       # connector -> (tag, timestamp) awaiting a reading
        self._status_since = {}         # connector -> (status, since): MinimumStatusDuration
        self._tx_in_flight = None       # journal seq being sent
        self._requests = []
        self._reconnect = None          # key whose change the connection must pick up
        self._auth_cache = self._load_auth_cache()
        self._remote_tags = {}          # tag -> connector, for AuthorizeRemoteTxRequests
        self._unlocks = {}              # UnlockConnector id -> (connector, deadline)
        self._power_lost = {}           # tx key -> open_tx entry awaiting a reading (_recover)
        self._power_lost_deadline = None
        self._open_since = {}           # tx key -> since when its contactor has been open
        self._reset_kind = None         # a Reset waiting for the sessions' Stops
        self.sent_counts = {}
        self.received_counts = {}
        self._recover()
        self._restore_availability()
        config.on_change.append(self._config_changed)
        for key in ("ConnectionTimeOut",) + tuple(EVSE_KEYS):
            self._config_changed(key, config.get(key))

    @staticmethod
    def _count_boot(storage, fallback):
        """A persistent boot counter: transaction keys ("boot-n") must never repeat across
        reboots, or a recovered transaction and a new one would share journal records."""
        if storage is None:
            return fallback
        raw = storage.read("boot_count")
        try:
            count = int(raw) + 1 if raw else 1
        except ValueError:
            count = fallback + 1000000      # unreadable: jump clear of any earlier key
        try:
            storage.write("boot_count", str(count).encode())
        except OSError:
            pass        # flash full: boot on (the journal says so); keys repeat only if
            #             this boot's records outlive it
        return count

    def _config_changed(self, key, value):
        """Apply a configuration change at once (OCPP: no reboot needed for these)."""
        now = self.now
        if key == "ConnectionTimeOut":
            for evse in self.station.evses.values():
                evse.params.connection_timeout_ms = value * 1000
        elif key in EVSE_KEYS:
            for evse in self.station.evses.values():
                setattr(evse, EVSE_KEYS[key], value)
        elif key == "ClockAlignedDataInterval":
            self._timers.pop("aligned", None)
            if self.boot == "accepted":
                self._arm_aligned(now)
        elif key == "HeartbeatInterval":
            if self.boot == "accepted" and self.online:
                self._arm_heartbeat(now)
        elif key == "MeterValueSampleInterval":
            for connector_id in self._tx:
                self._timers.pop("sample:%d" % connector_id, None)
                self._arm_sampling(now, connector_id)
        elif key == "AuthorizationKey":
            # Security Whitepaper ed.3 A01: answer, disconnect, connect with the new password
            # (the CSMS takes no other from now on, A01.FR.03): where Basic auth is in use
            if self.config.get("SecurityProfile") in (1, 2):
                self._reconnect = key
        elif key == "SecurityProfile":
            self._reconnect = key       # A05.FR.06/07: reconnect with the raised profile

    def attach(self, rpc):
        """Wire the RPC layer: it calls `handle` for CALLs and obeys our gate."""
        self.rpc = rpc
        rpc.handler = self.handle
        rpc.gate = self._gate

    # ------------------------------------------------------------------ shell interface
    def has_requests(self):
        return bool(self._requests)

    def take_requests(self):
        requests, self._requests = self._requests, []
        return requests

    def take_reconnect(self):
        """The configuration key (AuthorizationKey, SecurityProfile) whose change the
        transport must pick up: once the frames taken so far have left, close the connection
        and open a new one with what the config now says. None: nothing to do."""
        key, self._reconnect = self._reconnect, None
        return key

    def next_deadline(self):
        deadline = self.rpc.next_deadline() if self.rpc is not None else None
        for due in self._timers.values():
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    def wall_ms(self, now=None):
        return (self.now if now is None else now) + self._wall_offset

    def timestamp(self, now=None):
        return iso_utc(self.wall_ms(now))

    def receive(self, now, text):
        """A frame from the CSMS."""
        self.now = now
        self.frames_activity(now)
        self.rpc.receive(now, text)

    def take_frames(self):
        """Frames for the CSMS; counts what was sent and received for `sent X` /
        `received X` (scenario subjects) and hands RPC events to `log`."""
        for event in self.rpc.take_events():
            kind = event[0]
            if kind in ("sent", "received") and event[1] == rpc_mod.CALL:
                counts = self.sent_counts if kind == "sent" else self.received_counts
                counts[event[2]] = counts.get(event[2], 0) + 1
            if self.log is not None:
                self.log(self.now, event)
        return self.rpc.take_frames()

    log = None      # optional log(now, rpc event): the timeline's OCPP rows

    def connection_made(self, now):
        self.now = now
        self.online = True
        self._reconnect = None          # a new connection uses the current credentials
        self._last_activity = now
        self.rpc.connection_made(now)
        if self.boot != "accepted":
            self._timers.pop("boot", None)
            self._send_boot(now)
        else:
            self._after_accepted(now)

    def connection_lost(self, now):
        self.now = now
        self.online = False
        self._tx_in_flight = None
        self.rpc.connection_lost(now)
        # what is not a transaction message is not worth replaying after an outage
        self.rpc.drop_queued(now, lambda action: action == "BootNotification")
        self._timers.pop("heartbeat", None)

    def poll(self, now):
        self.now = now
        self.rpc.poll(now)
        for name in [n for n in self._timers if self._timers[n] <= now]:
            if name in self._timers and self._timers[name] <= now:
                del self._timers[name]
                getattr(self, "_timer_" + name.split(":")[0])(now, name)
        self._pump_journal(now)

    def frames_activity(self, now):
        """The shell saw traffic: HeartbeatInterval counts inactivity."""
        self._last_activity = now
        if self.boot == "accepted" and self.online:
            self._arm_heartbeat(now)

    # ------------------------------------------------------------------ authorization
    free = False            # free charging: the station starts sessions with free_tag
    free_tag = "FREE"

    def check(self, now, tag):
        """The station's authorizer: cache / offline rules, else ask the CSMS."""
        self.now = now
        cached = self._auth_cache.get(tag)
        cache_on = self.config.get("AuthorizationCacheEnabled")
        if self.online and self.boot == "accepted":
            if cache_on and cached == "Accepted" and self.config.get("LocalPreAuthorize"):
                return ACCEPTED
            self._send_authorize(now, tag)
            return PENDING
        if cache_on and cached == "Accepted" and self.config.get("LocalAuthorizeOffline"):
            return ACCEPTED
        if self.config.get("AllowOfflineTxForUnknownId") and cached is None:
            return ACCEPTED
        return REJECTED

    def _send_authorize(self, now, tag):
        def answered(now, payload, error):
            if error is not None:
                # no answer: decide as if offline
                status = ACCEPTED if (self.config.get("AllowOfflineTxForUnknownId") or (
                    self.config.get("LocalAuthorizeOffline")
                    and self._auth_cache.get(tag) == "Accepted")) else REJECTED
            else:
                status = payload["idTagInfo"]["status"]
                self._remember(tag, status)
            connector = self._remote_tags.pop(tag, None)
            self.station.token_result(now, tag, status, connector)
        self.rpc.call(now, "Authorize", {"idTag": tag}, answered)

    def check_stop(self, now, tag, evse):
        """May `tag` stop the session on `evse`? Only a tag of the same group (its Authorize
        answer carries the parentIdTag the transaction started with, OCPP 1.6 §4.10)."""
        tx = self._tx.get(evse.connector_id)
        if tx is None or tx.get("parent") is None or not self.online:
            return REJECTED

        def answered(now, payload, error):
            if error is None:
                info = payload["idTagInfo"]
                self._remember(tag, info["status"])
                current = self._tx.get(evse.connector_id)
                if info["status"] == "Accepted" and current is tx and \
                        info.get("parentIdTag") == tx["parent"]:
                    self.station.stop_by_token(now, tag, evse.connector_id)
        self.rpc.call(now, "Authorize", {"idTag": tag}, answered)
        return PENDING

    def _remember(self, tag, status):
        if self.config.get("AuthorizationCacheEnabled") and self._auth_cache.get(tag) != status:
            self._auth_cache[tag] = status
            self._save_auth_cache()

    # The cache survives a reboot (a charger that restarts while the CSMS is unreachable
    # still knows its regular users); bounded so flash and RAM stay small.
    AUTH_CACHE_MAX = 64

    def _load_auth_cache(self):
        return self._load("auth_cache")

    def _load(self, name):
        """A JSON object saved with _store; {} when absent or damaged (not JSON, not an
        object): what is damaged is not worth a failed boot."""
        raw = self.storage.read(name) if self.storage is not None else None
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            value = {}
        return value if isinstance(value, dict) else {}

    def _save_auth_cache(self):
        while len(self._auth_cache) > self.AUTH_CACHE_MAX:
            del self._auth_cache[next(iter(self._auth_cache))]
        if self.storage is not None:
            self._store("auth_cache", self._auth_cache)

    # ------------------------------------------------------------------ station events
    def on_event(self, evse, event):
        """Called for every controller/station event (runtime observer)."""
        now, kind = event[0], event[1]
        self.now = now
        if evse is None:
            self._sync_status(now)  # a token accepted before plug-in: Preparing
            return
        if kind == "session_started":
            self._start_transaction(now, evse, event[2])
        elif kind == "session_energy_start" and evse.connector_id in self._deferred_start:
            tag, timestamp = self._deferred_start.pop(evse.connector_id)
            self._start_transaction(now, evse, tag, event[2], timestamp)
        elif kind == "session_ended":
            self._stop_transaction(now, evse, event[2])
            self._request_reset_once_stopped()
        self._sync_status(now)      # cheap: only differences are sent

    def _status(self, evse):
        code = evse.faults.first()
        error = fault_table.OCPP16_ERROR[code] if code else "NoError"
        if code is None and evse.meter_lost_since is not None:
            error = "PowerMeterFailure"     # charging on with estimated energy
        if evse.state == "idle" and evse.pending_tag is not None:
            return "Preparing", error
        return STATUS[evse.state], error

    def _sync_status(self, now):
        """Tell the CSMS each connector's current status (not its history: after an outage
        only what is true now is sent, spec/standards.md §5.2)."""
        if not self.online or self.boot != "accepted":
            return
        evses = self.station.evses
        # a disable scheduled behind a running transaction happens once it has ended (§5.2)
        station_status = "Unavailable" if all(
            e.disabled and not e.session_active and not e.ending()
            for e in evses.values()) else "Available"
        wanted = {0: (station_status, "NoError")}
        for connector_id, evse in evses.items():
            if evse.cp.state == "unknown" and evse.pilot_mode != "f":
                continue    # not seen the pilot yet (boot, enable): an EV may be plugged
            wanted[connector_id] = self._status(evse)
        minimum = self.config.get("MinimumStatusDuration") * 1000
        for connector_id in sorted(wanted):
            status = wanted[connector_id]
            if self._reported.get(connector_id) == status:
                self._status_since.pop(connector_id, None)
                continue
            # MinimumStatusDuration: a status that does not last this long is not reported
            seen = self._status_since.get(connector_id)
            if seen is None or seen[0] != status:
                seen = self._status_since[connector_id] = (status, now)
            if minimum and now - seen[1] < minimum:
                due = seen[1] + minimum
                if self._timers.get("status", due + 1) > due:
                    self._timers["status"] = due
                continue
            self._status_since.pop(connector_id, None)
            self._reported[connector_id] = status
            self._send_status(now, connector_id, *status)

    def _send_status(self, now, connector_id, status, error, ungated=False):
        payload = {"connectorId": connector_id, "status": status, "errorCode": error,
                   "timestamp": self.timestamp(now)}
        evse = self.station.evses.get(connector_id)
        code = evse.faults.first() if evse is not None else None
        if code:
            payload["vendorErrorCode"] = fault_table.VENDOR_ERROR[code] or code
            payload["info"] = code
        elif evse is not None and evse.meter_lost_since is not None:
            payload["info"] = "meter lost: energy estimated"

        def answered(now, result, failure):
            # one that never reached the CSMS is not what the CSMS has: the sync after the
            # reconnect sends what is true then
            if failure is not None and failure.code == rpc_mod.CONNECTION_LOST and \
                    self._reported.get(connector_id) == (status, error):
                del self._reported[connector_id]
        self.rpc.call(now, "StatusNotification", payload, answered, ungated=ungated)

    # ------------------------------------------------------------------ transactions
    def _new_tx_key(self):
        self._tx_counter += 1
        return "%d-%d" % (self.boot_count, self._tx_counter)

    def _start_transaction(self, now, evse, tag, meter_start=None, timestamp=None):
        if meter_start is None:
            meter_start = evse.energy_wh
        if meter_start is None and evse.has_meter:
            # no reading yet (just booted, or a slow meter): meterStart must be a reading,
            # not a guess; the controller reports the first one (session_energy_start)
            self._deferred_start[evse.connector_id] = (tag, self.timestamp(now))
            return
        timestamp = timestamp or self.timestamp(now)
        meter_start = meter_start or 0
        self._settle_power_loss(now)    # the cut transaction's Stop goes before this Start
        key = self._new_tx_key()
        # write order against kill -9: the open transaction first, then its Start (a crash
        # between the two leaves a PowerLoss Stop with no Start, which is dropped harmlessly)
        tx = self._tx[evse.connector_id] = {"key": key, "tag": tag, "transaction_id": None,
                                            "last_wh": meter_start, "last_time": timestamp,
                                            "data": []}
        self._keep_for_stop(now, evse, tx, "Transaction.Begin", "StopTxnSampledData")
        self._save_open()
        seq = self.journal.append({
            "action": "StartTransaction", "tx": key, "attempts": 0, "payload": {
                "connectorId": evse.connector_id, "idTag": tag, "meterStart": meter_start,
                "timestamp": timestamp}})
        if seq is None:
            # journal full (policy in agent/journal.py): refuse rather than charge unrecorded
            self._tell("journal", "full (%d records waiting for the CSMS): the session on "
                       "connector %d is refused, nothing could record it"
                       % (len(self.journal), evse.connector_id))
            del self._tx[evse.connector_id]
            self._save_open()
            evse.stop(now, "other")
            return
        self._arm_sampling(now, evse.connector_id)
        self._pump_journal(now)

    def _stop_transaction(self, now, evse, reason):
        deferred = self._deferred_start.pop(evse.connector_id, None)
        if deferred is not None:
            # ended before the meter ever answered: start it with what is known now
            self._start_transaction(now, evse, deferred[0], evse.energy_wh or 0, deferred[1])
        tx = self._tx.pop(evse.connector_id, None)
        self._timers.pop("sample:%d" % evse.connector_id, None)
        if tx is None:
            return
        meter_stop = evse.energy_stop_wh if evse.energy_stop_wh is not None else tx["last_wh"]
        payload = {"meterStop": meter_stop, "timestamp": self.timestamp(now),
                   "reason": STOP_REASON.get(reason, "Other"),
                   "idTag": evse.stop_tag or tx["tag"]}
        self._keep_for_stop(now, evse, tx, "Transaction.End", "StopTxnSampledData")
        if tx["data"]:
            payload["transactionData"] = tx["data"]
        self.journal.append({"action": "StopTransaction", "tx": tx["key"], "attempts": 0,
                             "payload": payload, "transaction_id": tx["transaction_id"]})
        self._save_open()           # forgotten only once its Stop is journaled (kill -9)
        self._pump_journal(now)

    # Open transactions are kept in storage ("open_tx") apart from the journal: once its
    # Start is delivered and compacted away, the journal alone no longer shows that a
    # transaction is open, and a power loss would leave it open at the CSMS forever.
    def _store(self, name, value):
        """Persist `value` as JSON; a storage that fails (flash full) is reported and the
        agent goes on with what it holds in RAM (the next save writes it whole)."""
        try:
            self.storage.write(name, json.dumps(value).encode())
        except OSError as error:
            self._tell("storage", "%s not saved: %s" % (name, error))

    def _tell(self, what, text):
        """A note for whoever runs the agent (the timeline, evse run's log)."""
        if self.log is not None:
            self.log(self.now, (what, text))

    def _save_open(self):
        if self.storage is None:
            return
        state = dict(self._power_lost)     # closed once their meter has answered
        for connector_id, tx in self._tx.items():
            state[tx["key"]] = {"connector": connector_id, "tag": tx["tag"],
                                "transaction_id": tx["transaction_id"],
                                "wh": tx["last_wh"], "time": tx.get("last_time"),
                                "data": tx["data"]}
        self._store("open_tx", state)

    def _recover(self):
        """After a reboot: a transaction still open in storage was cut by a power loss;
        close it with reason PowerLoss at the time it was last seen. Its meterStop is the
        meter's first reading after the boot taken with the contactor open (after a crash
        rather than a power cut the contactor may still be closed at boot): the last reading
        stored (one a MeterValueSampleInterval) would leave out what flowed after it. A
        meter that does not answer within meter_timeout_ms leaves the stored one. Until
        then it stays in open_tx, so a second power loss loses nothing."""
        if self.storage is None:
            return
        state = {key: last for key, last in self._load("open_tx").items()
                 if isinstance(last, dict) and OPEN_TX_FIELDS <= set(last)}
        pending_stops = set(r.get("tx") for _, r in self.journal.pending()
                            if r["action"] == "StopTransaction")
        for key in sorted(state):
            last = state[key]
            evse = self.station.evses.get(last.get("connector"))
            if evse is not None:
                evse.ended_before_reboot = True
            if key in pending_stops:
                continue
            if evse is not None and evse.has_meter:
                self._power_lost[key] = last
            else:
                self._journal_power_loss(key, last, None)
        self._save_open()
        if self._power_lost:
            self._timers["power_loss"] = 0      # the first poll sets the deadline

    def _journal_power_loss(self, key, last, reading):
        payload = {"meterStop": last["wh"] if reading is None else max(reading, last["wh"]),
                   "timestamp": last["time"], "reason": "PowerLoss", "idTag": last["tag"]}
        if last.get("data"):
            payload["transactionData"] = last["data"]
        self.journal.append({"action": "StopTransaction", "tx": key, "attempts": 0,
                             "transaction_id": last["transaction_id"], "payload": payload})

    def _settle_power_loss(self, now, give_up=False):
        """Close each transaction cut by a power loss whose meter has answered since the
        boot (or, giving up, with the last reading stored)."""
        settled = False
        for key in sorted(self._power_lost):
            last = self._power_lost[key]
            evse = self.station.evses[last["connector"]]
            if evse.contactor_closed or evse.feedback_closed:
                self._open_since.pop(key, None)
            elif key not in self._open_since:
                self._open_since[key] = now
            open_since = self._open_since.get(key)
            read = evse.energy_read_ms
            fresh = open_since is not None and read is not None and read >= open_since
            if not fresh and not give_up:
                continue
            del self._power_lost[key]
            self._open_since.pop(key, None)
            self._journal_power_loss(key, last, evse.energy_wh if fresh else None)
            settled = True
        if settled:
            self._save_open()
            self._pump_journal(now)

    def _timer_power_loss(self, now, name):
        if self._power_lost_deadline is None:
            self._power_lost_deadline = now + max(
                e.params.meter_timeout_ms for e in self.station.evses.values())
        self._settle_power_loss(now, give_up=now >= self._power_lost_deadline)
        if self._power_lost:
            self._timers["power_loss"] = min(self._power_lost_deadline,
                                             now + POWER_LOSS_CHECK_MS)

    def _pump_journal(self, now):
        """Feed the oldest pending transaction message to the RPC layer, one at a time."""
        if self._tx_in_flight is not None or not self.online or self.boot != "accepted":
            return
        if "journal_retry" in self._timers:
            return
        unconfirmed = set()             # transactions whose Start is still in the journal
        for seq, record in self.journal.pending():
            payload = dict(record["payload"])
            if record["action"] == "StartTransaction":
                unconfirmed.add(record["tx"])
            else:
                transaction_id = record.get("transaction_id")
                if transaction_id is None:
                    if record["tx"] in unconfirmed:
                        return      # wait for the Start's answer (it is ahead in the queue)
                    # its Start was given up after TransactionMessageAttempts: the CSMS has
                    # no transaction to attach this to
                    self.journal.done(seq, "start given up")
                    continue
                payload["transactionId"] = transaction_id
            self._tx_in_flight = seq
            self.rpc.call(now, record["action"], payload,
                          lambda now, result, error, seq=seq, record=record:
                          self._journal_answered(now, seq, record, result, error))
            return

    def _journal_answered(self, now, seq, record, result, error):
        self._tx_in_flight = None
        if error is not None:
            if error.code == rpc_mod.CONNECTION_LOST:
                return                      # not an attempt: replay on reconnect
            attempts = record.get("attempts", 0) + 1
            if attempts >= self.config.get("TransactionMessageAttempts"):
                self.journal.done(seq)      # OCPP 1.6 §4.10: give up after the attempts
            else:
                record["attempts"] = attempts
                self.journal.update(seq, {"attempts": attempts})
                self._timers["journal_retry"] = now + attempts * 1000 * self.config.get(
                    "TransactionMessageRetryInterval")
            return
        if record["action"] == "StartTransaction":
            transaction_id = result["transactionId"]
            for other_seq, other in self.journal.pending():
                if other.get("tx") == record["tx"] and other_seq != seq:
                    other["transaction_id"] = transaction_id
                    self.journal.update(other_seq, {"transaction_id": transaction_id})
            for connector_id, tx in self._tx.items():
                if tx["key"] == record["tx"]:
                    tx["transaction_id"] = transaction_id
                    tx["parent"] = result["idTagInfo"].get("parentIdTag")
                    self._save_open()
            status = result["idTagInfo"]["status"]
            self._remember(record["payload"]["idTag"], status)
            if status != "Accepted":
                self._start_rejected(now, record, status)
        self.journal.done(seq)
        self._pump_journal(now)

    def _start_rejected(self, now, record, status):
        connector_id = record["payload"]["connectorId"]
        tx = self._tx.get(connector_id)
        evse = self.station.evses.get(connector_id)
        if tx is None or evse is None or tx["key"] != record["tx"]:
            return
        if self.config.get("StopTransactionOnInvalidId"):
            evse.stop(now, "deauthorized")
        else:
            evse.set_limit(now, 0)          # keep the transaction, offer nothing (SuspendedEVSE)

    # ------------------------------------------------------------------ meter values
    def _meter_value(self, now, evse, context, measurands):
        sample = evse.meter
        sampled = []
        for entry in measurands:
            measurand, phase = entry, None
            for suffix in ("L1-N", "L2-N", "L3-N", "L1", "L2", "L3"):
                if entry.endswith("." + suffix):
                    measurand, phase = entry[:-len(suffix) - 1], suffix
            if measurand not in MEASURANDS:
                continue
            unit, phased = MEASURANDS[measurand]
            if phased and (phase is not None or measurand != "Power.Active.Import"):
                indexes = [PHASES.index(phase[:2])] if phase else range(evse.phases)
            else:
                indexes = [None]
            for index in indexes:
                value = _reading(measurand, evse, sample, index)
                if value is None:
                    continue
                item = {"value": value, "context": context, "measurand": measurand,
                        "location": "Outlet"}
                if unit is not None:
                    item["unit"] = unit
                if index is not None:
                    item["phase"] = PHASES[index] + ("-N" if measurand == "Voltage" else "")
                sampled.append(item)
        if not sampled:
            return None
        return {"timestamp": self.timestamp(now), "sampledValue": sampled}

    def _send_meter_values(self, now, evse, context, measurands, trigger=False, dirty=False):
        """Transaction samples go through the journal; a triggered one is answered at once
        (it may leave even while the boot is pending). The open transaction's record is saved
        before its sample is journaled (kill -9: open_tx never holds less energy than a
        journaled MeterValues), also if the caller changed it (`dirty`); True if saved."""
        value = self._meter_value(now, evse, context, measurands)
        if value is None:
            return False
        payload = {"connectorId": evse.connector_id, "meterValue": [value]}
        tx = self._tx.get(evse.connector_id)
        if tx is not None and not trigger:
            saved = self._note_energy(tx, value) or dirty
            if saved:
                self._save_open()
            dropped = self.journal.dropped
            self.journal.append({"action": "MeterValues", "tx": tx["key"], "attempts": 0,
                                 "payload": payload,
                                 "transaction_id": tx["transaction_id"]})
            if self.journal.dropped > dropped and self.journal.dropped in DROPPED_TOLD:
                self._tell("journal", "full: %d MeterValues dropped so far, oldest first "
                           "(Start and Stop are always kept)" % self.journal.dropped)
            self._pump_journal(now)
            return saved
        else:
            if tx is not None and tx["transaction_id"] is not None:
                payload["transactionId"] = tx["transaction_id"]
            self.rpc.call(now, "MeterValues", payload, ungated=trigger)
        return False

    @staticmethod
    def _note_energy(tx, value):
        """The register reading in a transaction's meter value is its last known energy
        (meterStop after a power loss)."""
        for sampled in value["sampledValue"]:
            if sampled["measurand"] == "Energy.Active.Import.Register":
                tx["last_wh"] = int(sampled["value"])
                tx["last_time"] = value["timestamp"]
                return True
        return False

    def _keep_for_stop(self, now, evse, tx, context, key):
        """Keep a meter value of the measurands `key` names (StopTxnSampledData or
        StopTxnAlignedData) for the Stop's transactionData; True if one was kept."""
        value = self._meter_value(now, evse, context, self.config.get(key))
        if value is None:
            return False
        data = tx["data"]
        if len(data) < STOP_TX_DATA_MAX:
            data.append(value)
        else:
            data[-1] = value
        self._note_energy(tx, value)
        return True

    def _arm_sampling(self, now, connector_id):
        interval = self.config.get("MeterValueSampleInterval")
        if interval > 0:
            self._timers["sample:%d" % connector_id] = now + interval * 1000

    def _timer_sample(self, now, name):
        connector_id = int(name.split(":")[1])
        evse = self.station.evses.get(connector_id)
        if evse is None or connector_id not in self._tx:
            return
        self._take_sample(now, evse, "Sample.Periodic", "MeterValuesSampledData",
                          "StopTxnSampledData")
        self._arm_sampling(now, connector_id)

    def _take_sample(self, now, evse, context, key, stop_key):
        """One scheduled sample: MeterValues of the measurands `key` names and, in a
        transaction, the Stop's transactionData of `stop_key`'s; open_tx saved once, before
        the sample is journaled."""
        tx = self._tx.get(evse.connector_id)
        kept = tx is not None and self._keep_for_stop(now, evse, tx, context, stop_key)
        if not self._send_meter_values(now, evse, context, self.config.get(key),
                                       dirty=kept) and kept:
            self._save_open()

    def _arm_aligned(self, now):
        interval = self.config.get("ClockAlignedDataInterval") * 1000
        if interval > 0:
            wall = self.wall_ms(now)
            self._timers["aligned"] = now + (interval - wall % interval)

    def _timer_aligned(self, now, name):
        for evse in self.station.evses.values():
            self._take_sample(now, evse, "Sample.Clock", "MeterValuesAlignedData",
                              "StopTxnAlignedData")
        self._arm_aligned(now + 1)

    # ------------------------------------------------------------------ boot, heartbeat
    def _gate(self, action):
        """While BootNotification is not accepted, only it may leave (OCPP 1.6 §4.2)."""
        return self.boot == "accepted" or action == "BootNotification"

    def _send_boot(self, now):
        identity = self.identity
        payload = {"chargePointVendor": identity.get("vendor", "evse-agent"),
                   "chargePointModel": identity.get("model", "evse-agent")}
        for key, field in (("serial", "chargePointSerialNumber"),
                           ("firmware", "firmwareVersion")):
            if identity.get(key):
                payload[field] = identity[key]
        self.rpc.call(now, "BootNotification", payload, self._boot_answered)

    def _boot_answered(self, now, payload, error):
        if error is not None:
            if error.code != rpc_mod.CONNECTION_LOST:
                self._timers["boot"] = now + DEFAULT_RETRY_MS
            return
        self._set_clock(now, payload.get("currentTime"))
        interval = payload.get("interval", 0)
        status = payload["status"]
        if status == "Accepted":
            self.boot = "accepted"
            if interval > 0:
                self.config.set_from_csms("HeartbeatInterval", interval)
            self._after_accepted(now)
        else:
            self.boot = status.lower()
            self._timers["boot"] = now + (interval * 1000 if interval > 0 else DEFAULT_RETRY_MS)

    def _timer_boot(self, now, name):
        if self.online and self.boot != "accepted":
            self._send_boot(now)

    def _after_accepted(self, now):
        self.rpc.resume(now)
        self._arm_heartbeat(now)
        self._arm_aligned(now)
        self._sync_status(now)
        self._pump_journal(now)

    def _arm_heartbeat(self, now):
        interval = self.config.get("HeartbeatInterval")
        if interval > 0:
            self._timers["heartbeat"] = self._last_activity + interval * 1000

    def _timer_heartbeat(self, now, name):
        if self.online and self.boot == "accepted":
            self._send_heartbeat(now)

    def _send_heartbeat(self, now, ungated=False):
        def answered(now, payload, error):
            if error is None:
                self._set_clock(now, payload.get("currentTime"))
        self.rpc.call(now, "Heartbeat", {}, answered, ungated=ungated)

    def _set_clock(self, now, current_time):
        if current_time:
            try:
                self._wall_offset = parse_iso(current_time) - now
            except ValueError:
                pass

    def _timer_status(self, now, name):
        self._sync_status(now)

    def _timer_journal_retry(self, now, name):
        self._pump_journal(now)

    # ------------------------------------------------------------------ CSMS -> CP
    def handle(self, action, payload):
        """RPC handler: one method per action (HANDLERS)."""
        if self.boot == "rejected":
            return rpc_mod.NO_ANSWER    # OCPP 1.6 §4.2: not even to CSMS requests
        method = HANDLERS.get(action)
        if method is None:
            # a 1.6 action of a profile we do not offer is "recognized but not supported"
            raise rpc_mod.CallError(rpc_mod.NOT_SUPPORTED if action in KNOWN_16_ACTIONS
                                    else rpc_mod.NOT_IMPLEMENTED, action)
        return getattr(self, method)(self.now, payload)

    def _connector(self, connector_id):
        return self.station.evses.get(connector_id)

    def on_Reset(self, now, payload):
        kind = payload["type"]
        reason = "hard_reset" if kind == "Hard" else "soft_reset"
        for evse in self.station.evses.values():
            if evse.session_active:
                evse.stop(now, reason)
        self._reset_kind = kind
        self._request_reset_once_stopped()
        return {"status": "Accepted"}

    def _request_reset_once_stopped(self):
        """The shell reboots once every stopped session's Stop is journaled: after its stop
        reading, which waits for the contactor to open (the controller bounds that wait)."""
        if self._reset_kind is None or any(e.ending() for e in self.station.evses.values()):
            return
        self._requests.append(("reset", self._reset_kind))
        self._reset_kind = None

    def on_RemoteStartTransaction(self, now, payload):
        connector_id = payload.get("connectorId")
        if connector_id == 0 or self.boot != "accepted":
            return {"status": "Rejected"}       # OCPP 1.6 §4.2.1: not while Pending
        tag = payload["idTag"]
        if connector_id is not None:
            evse = self._connector(connector_id)
            if evse is None or evse.state not in ("idle", "authorizing"):
                return {"status": "Rejected"}
        else:
            free = [e for e in self.station.evses.values() if e.state == "authorizing"] or \
                [e for e in self.station.evses.values() if e.state == "idle"]
            if not free:
                return {"status": "Rejected"}
            connector_id = free[0].connector_id
        cached = self.config.get("AuthorizationCacheEnabled") and \
            self.config.get("LocalPreAuthorize") and self._auth_cache.get(tag) == "Accepted"
        if self.config.get("AuthorizeRemoteTxRequests") and not cached:
            # OCPP 1.6 §5.11: authorize as for a local start (a cached tag needs no Authorize)
            self._remote_tags[tag] = connector_id
            self._send_authorize(now, tag)
        else:
            self.station.token_result(now, tag, ACCEPTED, connector_id)
        return {"status": "Accepted"}

    def on_RemoteStopTransaction(self, now, payload):
        if self.boot != "accepted":
            return {"status": "Rejected"}
        for connector_id, tx in self._tx.items():
            if tx["transaction_id"] == payload["transactionId"]:
                self.station.evses[connector_id].stop(now, "remote")
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def on_UnlockConnector(self, now, payload):
        evse = self._connector(payload["connectorId"])
        if evse is None or not evse.socket:
            return {"status": "NotSupported"}
        deadline = now + evse.params.lock_feedback_ms + UNLOCK_MARGIN_MS
        if evse.session_active:
            evse.stop(now, "unlock_command")
            # the EV may draw current that long before the contactor opens under load
            deadline += evse.params.power_off_under_load_ms
        # the lock opens as soon as the contactor is open (EVerest: a force-unlock flag)
        if not evse.unlock(now):
            return {"status": "UnlockFailed"}
        # OCPP 1.6 §5.18: the answer says whether the connector was unlocked, so it waits
        # for the lock (a welded contactor keeps it shut: UnlockFailed at the deadline)
        outcome = evse.unlock_outcome()
        if outcome is not None:
            return {"status": "Unlocked" if outcome else "UnlockFailed"}
        unique_id = self.rpc.calling
        self._unlocks[unique_id] = (evse.connector_id, deadline)
        self._timers["unlock:" + unique_id] = now + UNLOCK_CHECK_MS
        return rpc_mod.DEFERRED

    def _timer_unlock(self, now, name):
        unique_id = name.split(":", 1)[1]
        connector_id, deadline = self._unlocks[unique_id]
        outcome = self.station.evses[connector_id].unlock_outcome()
        if outcome is None and now < deadline:
            self._timers[name] = min(deadline, now + UNLOCK_CHECK_MS)
            return
        del self._unlocks[unique_id]
        self.rpc.answer(unique_id, {"status": "Unlocked" if outcome else "UnlockFailed"})

    def on_ChangeAvailability(self, now, payload):
        connector_id = payload["connectorId"]
        if connector_id != 0 and connector_id not in self.station.evses:
            return {"status": "Rejected"}
        available = payload["type"] == "Operative"
        targets = list(self.station.evses.values()) if connector_id == 0 else \
            [self.station.evses[connector_id]]
        busy = any(e.session_active for e in targets) and not available
        self.station.set_available(now, connector_id, available)
        self._persist_availability()
        return {"status": "Scheduled" if busy else "Accepted"}

    def _persist_availability(self):
        if self.storage is None:
            return
        state = {}
        for connector_id, evse in self.station.evses.items():
            state[str(connector_id)] = not evse.disabled
        self._store("availability", state)

    def _restore_availability(self):
        """ChangeAvailability survives a reboot (OCPP 1.6: Unavailable is persistent)."""
        for connector_id, available in self._load("availability").items():
            evse = self.station.evses.get(int(connector_id)) if connector_id.isdigit() \
                else None
            if evse is not None and available is False:
                evse.set_available(self.now, False)

    def on_ChangeConfiguration(self, now, payload):
        return {"status": self.config.change(payload["key"], payload["value"])}

    def on_GetConfiguration(self, now, payload):
        keys = payload.get("key")
        if keys is not None and len(keys) > self.config.get("GetConfigurationMaxKeys"):
            raise rpc_mod.CallError(rpc_mod.PROPERTY_CONSTRAINT_VIOLATION,
                                    "more keys than GetConfigurationMaxKeys")
        known, unknown = self.config.get_configuration(keys)
        answer = {"configurationKey": known}
        if unknown:
            answer["unknownKey"] = unknown
        return answer

    def on_ClearCache(self, now, payload):
        self._auth_cache = {}
        self._save_auth_cache()
        return {"status": "Accepted"}

    def on_DataTransfer(self, now, payload):
        return {"status": "UnknownVendorId"}

    def on_TriggerMessage(self, now, payload):
        requested = payload["requestedMessage"]
        connector_id = payload.get("connectorId")
        if connector_id is not None and connector_id != 0 and \
                connector_id not in self.station.evses:
            return {"status": "Rejected"}
        if requested not in TRIGGERS:
            return {"status": "NotImplemented"}
        self._timers["trigger:%s:%s" % (requested, connector_id)] = now   # after the answer
        return {"status": "Accepted"}

    def _timer_trigger(self, now, name):
        _, requested, connector = name.split(":")
        connector_id = None if connector == "None" else int(connector)
        if requested == "BootNotification":
            self._send_boot(now)
        elif requested == "Heartbeat":
            self._send_heartbeat(now, ungated=True)
        elif requested == "StatusNotification":
            targets = [connector_id] if connector_id is not None else \
                [0] + sorted(self.station.evses)
            for target in targets:
                evse = self._connector(target)
                status = self._status(evse) if evse is not None else self._reported.get(
                    0, ("Available", "NoError"))
                self._send_status(now, target, status[0], status[1], ungated=True)
        elif requested == "MeterValues":
            evses = [self._connector(connector_id)] if connector_id else \
                list(self.station.evses.values())
            for evse in evses:
                self._send_meter_values(now, evse, "Trigger",
                                        self.config.get("MeterValuesSampledData"),
                                        trigger=True)
        else:   # DiagnosticsStatusNotification / FirmwareStatusNotification: nothing running
            self.rpc.call(now, requested, {"status": "Idle"}, ungated=True)


HANDLERS = {
    "Reset": "on_Reset",
    "RemoteStartTransaction": "on_RemoteStartTransaction",
    "RemoteStopTransaction": "on_RemoteStopTransaction",
    "UnlockConnector": "on_UnlockConnector",
    "ChangeAvailability": "on_ChangeAvailability",
    "ChangeConfiguration": "on_ChangeConfiguration",
    "GetConfiguration": "on_GetConfiguration",
    "ClearCache": "on_ClearCache",
    "DataTransfer": "on_DataTransfer",
    "TriggerMessage": "on_TriggerMessage",
}
TRIGGERS = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification",
            "DiagnosticsStatusNotification", "FirmwareStatusNotification")
# CSMS -> CP actions of the other 1.6 profiles: answered NotSupported, not NotImplemented
KNOWN_16_ACTIONS = (
    "CancelReservation", "ReserveNow", "ClearChargingProfile", "GetCompositeSchedule",
    "SetChargingProfile", "GetDiagnostics", "UpdateFirmware", "GetLocalListVersion",
    "SendLocalList", "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
    "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
)

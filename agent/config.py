"""OCPP 1.6 configuration keys: one table, typed values, ChangeConfiguration/GetConfiguration,
persistence (portable: the same file runs on the MCU).

- `Config(storage=None, defaults=None, number_of_connectors=1, phases=3)`. `defaults` (the board
  file's) overrides table defaults, read-only keys included (a small MCU may lower
  GetConfigurationMaxKeys); a bad or unknown default raises ValueError naming the key.
- `get(name)` -> bool | int | list of str | str (None: AuthorizationKey not set). `get` is the
  agent's own view: it does return AuthorizationKey, which the Basic-auth header needs.
- `change(key, text)` -> "Accepted" | "Rejected" | "RebootRequired" | "NotSupported", exactly
  ChangeConfiguration.conf (OCPP 1.6 §5.3).
- `get_configuration(keys=None)` -> (configurationKey list, unknownKey list) of
  GetConfiguration.conf; more than `max_keys` keys raises ValueError (the caller answers it
  with a CALLERROR before calling).
- `set_from_csms(name, value)` -> bool: a value the CSMS sets indirectly (BootNotification.conf
  interval -> HeartbeatInterval). Type and range are checked; the only-raise rule of
  SecurityProfile is not.
- `provision(name, value)` -> bool: a value the installer gave outside OCPP, which the shell
  learns at start (its --auth-key; the SecurityProfile its URL and key amount to). Like a
  board default it is not stored and a value the CSMS stored wins, except a stored
  SecurityProfile below the provisioned one, which is dropped (a profile only goes up).
- `on_change`: callables `(key, value)` run after every Accepted change and every
  set_from_csms, even when the value did not change (re-arming a timer is harmless);
  not after Rejected/NotSupported, nor after RebootRequired (the value applies at boot).
- `security_check`: None or a callable `(profile) -> bool` saying whether the prerequisites of
  a higher SecurityProfile are in place (CA/client certificates: the transport's business).
- A raised SecurityProfile is on trial until the shell connects with it (Security Whitepaper
  ed.3 A05.FR.07/08): `profile_to_try(failures)` -> the profile for the next connection
  attempt after that many failed ones in a row (after PROFILE_TRIAL_ATTEMPTS failures, every
  other attempt uses the previous profile); `connected_with(profile)` -> True if that
  connection undid the raise (it used the previous profile, now stored again, with no
  on_change: the connection already uses it), False otherwise (the raise is kept for good,
  A05.FR.09). The trial lives in RAM: after a reboot the raised profile is simply in use.
- `warnings`: what was ignored (a corrupt stored document, a failed write); the last 8.

Key names are CiString50 in OCPP, so lookups ignore case; answers use the table's spelling.
Values arrive as text: bools "true"/"false" in any case; ints plain decimal ("-1" is parsed,
then fails the range; "+5", "1.0", " 5", "1_000" are Rejected); CSL items comma-separated,
spaces around items ignored, no empty item, no duplicate, at most the matching
...MaxLength items ("" is the empty list). CSL members ignore case and are stored in their
canonical spelling ("voltage.l1-n" -> "Voltage.L1-N").

Persistence: every key that is not read-only and was changed is kept in one JSON object
{name: canonical text} under the storage name "ocpp_config", written (atomically, by the
Storage contract) before the change is answered, and not rewritten when the stored value is
the same (each boot's HeartbeatInterval); a change that cannot be written is Rejected and leaves
the running value as it was. At start an unreadable/non-JSON/non-object document is
ignored as a whole; in a good document an entry that is unknown, read-only or no longer valid
is dropped alone. Both leave a warning and never raise. A stored value beats the board's
default: the CSMS's choice survives a firmware or board-file update.
"""
import json

BOOL = "bool"
INT = "int"
CSL = "csl"              # comma-separated list
STRING = "string"

R = "R"                  # read-only
RW = "RW"
W = "W"                  # write-only: listed without a value, never read back

ACCEPTED = "Accepted"
REJECTED = "Rejected"
REBOOT_REQUIRED = "RebootRequired"
NOT_SUPPORTED = "NotSupported"

STORAGE_NAME = "ocpp_config"
_MAX = 2147483647        # OCPP integers are 32-bit signed
_KEPT_WARNINGS = 8
# Failed connection attempts with a freshly raised SecurityProfile before the previous one is
# tried too (Security Whitepaper ed.3 A05.FR.08 "SHOULD fallback", no count given). 1
# (libocpp) falls back if the CSMS is still restarting its endpoint with the new profile
# (OCTT TC_083_CS does that), and the CSMS then refuses the old profile for good; 3 attempts
# span about 7 s of back-off.
PROFILE_TRIAL_ATTEMPTS = 3

# OCPP 1.6 Measurand values (spec/standards.md §5.3)
MEASURANDS = (
    "Energy.Active.Export.Register", "Energy.Active.Import.Register",
    "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register",
    "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
    "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval",
    "Power.Active.Export", "Power.Active.Import", "Power.Offered",
    "Power.Reactive.Export", "Power.Reactive.Import", "Power.Factor",
    "Current.Import", "Current.Export", "Current.Offered",
    "Voltage", "Frequency", "Temperature", "SoC", "RPM",
)
# Phase values; in configuration a measurand takes one as a suffix, e.g. "Voltage.L1-N" (§9.1)
PHASES = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")
# SupportedFeatureProfiles members (§3.3 profile names)
PROFILES = ("Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation",
            "SmartCharging", "RemoteTrigger")
# ConnectorPhaseRotation values per connector
ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"


def _member(text, members):
    """The canonical spelling of `text` in `members`, ignoring case (OCPP CiString), or None."""
    if text in members:
        return text
    low = text.lower()
    for member in members:
        if member.lower() == low:
            return member
    return None


def _int(text):
    """Plain decimal with an optional minus sign, or None (no '+', spaces, '_', unicode digits:
    CPython's int() would take them, the MCU's would not)."""
    negative = text[:1] == "-"
    digits = text[1:] if negative else text
    if not digits or len(digits) > 10:
        return None
    for ch in digits:
        if ch not in _DIGITS:
            return None
    value = int(digits)
    return -value if negative else value


# -- CSL item and string validators: (config, text) -> canonical text or None

def _measurand(config, item):
    found = _member(item, MEASURANDS)
    if found is not None:
        return found
    dot = item.rfind(".")
    if dot < 0:
        return None
    found = _member(item[:dot], MEASURANDS)
    phase = _member(item[dot + 1:], PHASES)
    if found is None or phase is None:
        return None
    # a phase the board does not have cannot be measured: L2/L3 on a single-phase charger
    for ch in phase:
        if ch in "123" and int(ch) > config.phases:
            return None
    return found + "." + phase


def _profile(config, item):
    return _member(item, PROFILES)


def _rotation(config, item):
    dot = item.find(".")
    if dot < 1:
        return None
    connector = _int(item[:dot])
    rotation = _member(item[dot + 1:], ROTATIONS)
    if connector is None or rotation is None or connector < 0 or \
            connector > config.get("NumberOfConnectors"):
        return None
    return "%d.%s" % (connector, rotation)


def _hex_key(config, text):
    # Security Whitepaper ed.2 §2 / AuthorizationKey: at least 16 bytes, hex-represented, at
    # most 20 bytes = 40 hex digits. So: 32..40 hex digits (the length is in the table row),
    # whole bytes (even count), either case. A plain-text password, or a 16-digit (8-byte)
    # key, is Rejected.
    if len(text) % 2:
        return None
    for ch in text:
        if ch not in _HEX:
            return None
    return text


# name, type, default, access, reboot, lo, hi, check
#   int:    lo..hi is the accepted range
#   csl:    hi names the read-only key holding the maximum number of items; check validates
#           and canonicalises one item
#   string: lo..hi is the accepted length; check validates the whole text
# A default of None is filled in by Config (it depends on the board) or means "not set".
# Defaults are not in the spec (§9 gives none); the comment says where each comes from
# (spec/standards.md §5.4: libocpp and MicroOcpp columns).
TABLE = (
    # optional. Off: an unknown tag must not charge while offline unless the operator
    # asks (both references)
    ("AllowOfflineTxForUnknownId", BOOL, False, RW, False, None, None, None),
    # optional. Off until the station keeps an authorization cache (MicroOcpp)
    ("AuthorizationCacheEnabled", BOOL, False, RW, False, None, None, None),
    # "R or RW": RW, OCA TC_F_01..03 toggle it. Off: a remote start is trusted (both)
    ("AuthorizeRemoteTxRequests", BOOL, False, RW, False, None, None, None),
    # optional, times to blink the light when signalling
    ("BlinkRepeat", INT, 3, RW, False, 0, _MAX, None),
    # 0 = off. 900 = 96 quarter-hours a day, the billing granularity CSMSs expect
    # (libocpp)
    ("ClockAlignedDataInterval", INT, 900, RW, False, 0, 86400, None),
    # s from Preparing to giving up. 30 (MicroOcpp): 10 (libocpp) is too short to walk
    # from the reader to the cable. 0 would cancel every session at once
    ("ConnectionTimeOut", INT, 30, RW, False, 1, _MAX, None),
    # default from the board: "N.RST" for 0..n on 3 phases, "N.NotApplicable" on one
    ("ConnectorPhaseRotation", CSL, None, RW, False, 0, "ConnectorPhaseRotationMaxLength",
     _rotation),
    # optional; one entry per connector plus connector 0 (set by Config)
    ("ConnectorPhaseRotationMaxLength", INT, None, R, False, 0, _MAX, None),
    # 60: the 54 standard keys (1.6, Security Whitepaper, Plug & Charge; the ocpp package's
    # ConfigurationKey) fit in one request, so a CSMS that asks for every key it knows by
    # name never gets a CALLERROR
    ("GetConfigurationMaxKeys", INT, 60, R, False, 1, _MAX, None),
    # both references; replaced by BootNotification.conf interval (set_from_csms).
    # 0 = no heartbeats (a Boot interval of 0 is legal)
    ("HeartbeatInterval", INT, 86400, RW, False, 0, _MAX, None),
    # optional, percent
    ("LightIntensity", INT, 100, RW, False, 0, 100, None),
    # On (MicroOcpp): a driver whose tag is in the cache or local list can charge
    # during an outage, which is what the key exists for
    ("LocalAuthorizeOffline", BOOL, True, RW, False, None, None, None),
    # both references
    ("LocalPreAuthorize", BOOL, False, RW, False, None, None, None),
    # optional, Wh still delivered after the CSMS invalidates the tag: none
    ("MaxEnergyOnInvalidId", INT, 0, RW, False, 0, _MAX, None),
    # the billing register only (both)
    ("MeterValuesAlignedData", CSL, ("Energy.Active.Import.Register",), RW, False, 0,
     "MeterValuesAlignedDataMaxLength", _measurand),
    # 10 items: the typical set of spec/standards.md §5.3 (energy, power, 3 currents,
    # 3 voltages, SoC) is 9
    ("MeterValuesAlignedDataMaxLength", INT, 10, R, False, 0, _MAX, None),
    # energy and power (MicroOcpp): CSMS dashboards show live power
    ("MeterValuesSampledData", CSL, ("Energy.Active.Import.Register", "Power.Active.Import"),
     RW, False, 0, "MeterValuesSampledDataMaxLength", _measurand),
    # as MeterValuesAlignedDataMaxLength
    ("MeterValuesSampledDataMaxLength", INT, 10, R, False, 0, _MAX, None),
    # 0 = no sampled data; 60 (MicroOcpp): one reading a minute during a transaction
    ("MeterValueSampleInterval", INT, 60, RW, False, 0, _MAX, None),
    # optional; 0 = report every status
    ("MinimumStatusDuration", INT, 0, RW, False, 0, _MAX, None),
    # from the board (Config's number_of_connectors)
    ("NumberOfConnectors", INT, None, R, False, 0, _MAX, None),
    # libocpp
    ("ResetRetries", INT, 1, RW, False, 0, _MAX, None),
    # both references; OCA TC 005_x
    ("StopTransactionOnEVSideDisconnect", BOOL, True, RW, False, None, None, None),
    # both references
    ("StopTransactionOnInvalidId", BOOL, True, RW, False, None, None, None),
    # empty (MicroOcpp): meterStart/meterStop already carry the register, and every
    # transactionData item is held in the journal for the whole session
    ("StopTxnAlignedData", CSL, (), RW, False, 0, "StopTxnAlignedDataMaxLength", _measurand),
    ("StopTxnAlignedDataMaxLength", INT, 10, R, False, 0, _MAX, None),
    # as StopTxnAlignedData
    ("StopTxnSampledData", CSL, (), RW, False, 0, "StopTxnSampledDataMaxLength", _measurand),
    ("StopTxnSampledDataMaxLength", INT, 10, R, False, 0, _MAX, None),
    # what the agent implements today; the OCPP layer's board default grows it
    ("SupportedFeatureProfiles", CSL, ("Core", "RemoteTrigger"), R, False, 0,
     "SupportedFeatureProfilesMaxLength", _profile),
    # optional: all six 1.6 profiles
    ("SupportedFeatureProfilesMaxLength", INT, 6, R, False, 0, _MAX, None),
    # 3 tries (MicroOcpp): 1 (libocpp) gives up on the first CSMS hiccup, against
    # DESIGN §6. 0 would mean never sending StartTransaction/StopTransaction
    ("TransactionMessageAttempts", INT, 3, RW, False, 1, _MAX, None),
    # s (MicroOcpp)
    ("TransactionMessageRetryInterval", INT, 60, RW, False, 0, _MAX, None),
    # both references
    ("UnlockConnectorOnEVSideDisconnect", BOOL, True, RW, False, None, None, None),
    # optional, s, 0 = off, negative Rejected. 60: keeps NAT and mobile-network
    # mappings alive while HeartbeatInterval is a day, and finds a dead link within minutes
    ("WebSocketPingInterval", INT, 60, RW, False, 0, _MAX, None),
    # Security Whitepaper ed.2: write-only Basic-auth password, not set by default (the
    # shell may provision one). A change makes the charge point reconnect with it (A01)
    ("AuthorizationKey", STRING, None, W, False, 32, 40, _hex_key),
    # Security Whitepaper ed.2: 0..3, may only be raised (change() enforces it, A05); a
    # raise makes the charge point reconnect with it, on trial (profile_to_try)
    ("SecurityProfile", INT, 0, RW, False, 0, 3, None),
)


def _text_of(value):
    """A typed value (board file, BootNotification, set_from_csms) as ChangeConfiguration text."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    if isinstance(value, str):
        return value
    return None


class Config:
    table = TABLE      # a subclass may extend it (tests; board-specific keys later)

    def __init__(self, storage=None, defaults=None, number_of_connectors=1, phases=3):
        self.storage = storage
        self.phases = phases
        self.on_change = []
        self.security_check = None
        self.warnings = []
        self._values = {}      # changed by the CSMS, persisted
        self._trial = None     # SecurityProfile before a raise not yet connected with
        n = number_of_connectors
        self._base = {"NumberOfConnectors": n, "ConnectorPhaseRotationMaxLength": n + 1}
        defaults = defaults or {}
        # read-only defaults first: the lists' limits and NumberOfConnectors check the rest
        for read_only in (True, False):
            if not read_only:
                rotation = "RST" if phases == 3 else "NotApplicable"
                self._base["ConnectorPhaseRotation"] = tuple(
                    "%d.%s" % (i, rotation) for i in range(self.get("NumberOfConnectors") + 1))
            for name in defaults:
                row = self._row(name)
                if row is None:
                    raise ValueError("unknown OCPP configuration key %s" % name)
                if (row[3] == R) != read_only:
                    continue
                text = _text_of(defaults[name])
                value = None if text is None else self._parse(row, text)
                if value is None:
                    raise ValueError("bad value for %s: %r" % (row[0], defaults[name]))
                self._base[row[0]] = value
        self._load()

    # -- reading

    def _row(self, name):
        if not isinstance(name, str):
            return None
        for row in self.table:
            if row[0] == name:
                return row
        low = name.lower()
        for row in self.table:
            if row[0].lower() == low:
                return row
        return None

    def _value(self, row):
        name = row[0]
        value = self._values.get(name)
        if value is None:
            value = self._base.get(name)
        return row[2] if value is None else value

    def get(self, name):
        row = self._row(name)
        if row is None:
            raise KeyError(name)
        value = self._value(row)
        return list(value) if row[1] == CSL else value

    @property
    def max_keys(self):
        return self.get("GetConfigurationMaxKeys")

    def _item(self, row):
        item = {"key": row[0], "readonly": row[3] == R}
        value = self._value(row)
        # write-only: the key is listed (a CSMS can see it is supported before raising the
        # SecurityProfile) with no value, which the schema allows ("known but not set")
        if row[3] != W and value is not None:
            item["value"] = ",".join(value) if row[1] == CSL else _text_of(value)
        return item

    def get_configuration(self, keys=None):
        known = []
        unknown = []
        if not keys:       # missing or empty: every key (§5.8)
            for row in self.table:
                known.append(self._item(row))
            return known, unknown
        if len(keys) > self.max_keys:
            raise ValueError("more than GetConfigurationMaxKeys keys")
        for key in keys:
            row = self._row(key)
            if row is None:
                unknown.append(key)
            else:
                known.append(self._item(row))
        return known, unknown

    # -- changing

    def _parse(self, row, text):
        """Typed value of `text` for this row, or None if the row does not accept it."""
        kind, lo, hi, check = row[1], row[5], row[6], row[7]
        if kind == BOOL:
            text = text.lower()
            return True if text == "true" else False if text == "false" else None
        if kind == INT:
            value = _int(text)
            return value if value is not None and lo <= value <= hi else None
        if kind == CSL:
            items = []
            if text.strip():
                for item in text.split(","):
                    item = check(self, item.strip())
                    if item is None or item in items:
                        return None
                    items.append(item)
            return tuple(items) if lo <= len(items) <= self.get(hi) else None
        if not lo <= len(text) <= hi:
            return None
        return check(self, text) if check else text

    def change(self, key, value):
        row = self._row(key)
        if row is None:
            return NOT_SUPPORTED
        if row[3] == R or not isinstance(value, str):
            return REJECTED
        parsed = self._parse(row, value)
        if parsed is None:
            return REJECTED
        if row[0] == "SecurityProfile" and not self._may_raise(parsed):
            return REJECTED
        previous = self._value(row)
        if not self._store(row[0], parsed):
            return REJECTED
        if row[0] == "SecurityProfile" and self._trial is None:
            self._trial = previous
        if row[4]:
            return REBOOT_REQUIRED
        self._notify(row[0], parsed)
        return ACCEPTED

    def _may_raise(self, profile):
        # Security Whitepaper ed.3 A05.FR.01-05. Only a higher value is Accepted: an equal
        # one is Rejected too (A05.FR.01 "lower or equal"; libocpp alike), since Accepted
        # would mean "disconnect and reconnect" (A05.FR.06) for nothing. Prerequisites are
        # checked before accepting rather than failing on the reconnect: 1 and 2 need an
        # AuthorizationKey (A05.FR.02); 2 and 3 a CentralSystemRootCertificate (A05.FR.03)
        # and 3 a ChargePointCertificate (A05.FR.04), which only the transport can vouch for
        # (security_check; without one only 1 is possible).
        if profile <= self.get("SecurityProfile"):
            return False
        if profile <= 2 and self.get("AuthorizationKey") is None:
            return False
        if self.security_check is None:
            return profile < 2
        try:
            return bool(self.security_check(profile))
        except Exception as exc:   # a broken check must not turn the answer into an error
            self._warn("config: security_check(%d) failed: %r" % (profile, exc))
            return False

    def profile_to_try(self, failures):
        current = self.get("SecurityProfile")
        if self._trial is None or failures < PROFILE_TRIAL_ATTEMPTS:
            return current
        # A05.FR.08: fall back rather than stay unreachable; keep trying the raised profile
        # every other time, in case the CSMS only serves that one by now
        return self._trial if (failures - PROFILE_TRIAL_ATTEMPTS) % 2 == 0 else current

    def connected_with(self, profile):
        previous, self._trial = self._trial, None
        if previous is None or profile != previous:
            return False        # A05.FR.09: the raise holds from now on
        if not self._store("SecurityProfile", previous):
            self._trial = previous
            return False
        self._warn("config: SecurityProfile fell back to %d (the raised one did not connect)"
                   % previous)
        return True

    def _writable(self, name, value):
        """(row, parsed value) of a key that may be written, or (row, None)."""
        row = self._row(name)
        text = _text_of(value)
        if row is None or row[3] == R or text is None:
            return row, None
        return row, self._parse(row, text)

    def provision(self, name, value):
        row, parsed = self._writable(name, value)
        if parsed is None:
            # never the value itself: it may be a key (Security Whitepaper A01.FR.12)
            self._warn("config: provisioned %s ignored (not a valid value)" % name)
            return False
        if row[0] == "SecurityProfile":
            # a profile only goes up: not below the board's default, and a lower one the CSMS
            # stored is history (lowering is never an OCPP matter, Security Whitepaper
            # A00.FR.005; raising by local means is allowed)
            parsed = max(parsed, self._base.get(row[0], 0))
            if self._values.get(row[0], parsed) < parsed:
                del self._values[row[0]]
        self._base[row[0]] = parsed
        return True

    def set_from_csms(self, name, value):
        row, parsed = self._writable(name, value)
        if parsed is None:
            self._warn("config: %s=%r from the CSMS ignored" % (name, value))
            return False
        if not self._store(row[0], parsed):
            return False
        self._notify(row[0], parsed)
        return True

    def _notify(self, name, value):
        if isinstance(value, tuple):
            value = list(value)
        for callback in self.on_change:
            try:
                callback(name, value)
            except Exception as exc:   # a listener's bug must not turn Accepted into an error
                self._warn("config: on_change for %s failed: %r" % (name, exc))

    # -- persistence

    def _document(self):
        doc = {}
        for name in self._values:
            value = self._values[name]
            doc[name] = ",".join(value) if isinstance(value, tuple) else _text_of(value)
        return doc

    def _store(self, name, value):
        old = self._values.get(name)
        if old == value:
            return True     # no flash write: BootNotification repeats its interval each boot
        self._values[name] = value
        if self.storage is None:
            return True
        try:
            self.storage.write(STORAGE_NAME, json.dumps(self._document()).encode())
            return True
        except Exception as exc:
            if old is None:
                del self._values[name]
            else:
                self._values[name] = old
            self._warn("config: %s not stored: %r" % (name, exc))
            return False

    def _load(self):
        if self.storage is None:
            return
        try:
            data = self.storage.read(STORAGE_NAME)
            if data is None:
                return
            doc = json.loads(data)
        except Exception as exc:
            self._warn("config: stored document ignored: %r" % exc)
            return
        if not isinstance(doc, dict):
            self._warn("config: stored document ignored: not an object")
            return
        for name in doc:
            row = self._row(name)
            value = None
            if row is not None and row[3] != R and isinstance(doc[name], str):
                value = self._parse(row, doc[name])
            if value is None:
                self._warn("config: stored %s ignored" % name)
            else:
                self._values[row[0]] = value

    def _warn(self, message):
        self.warnings.append(message)
        if len(self.warnings) > _KEPT_WARNINGS:
            del self.warnings[0]

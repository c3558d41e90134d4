"""agent.config: OCPP 1.6 configuration keys, ChangeConfiguration/GetConfiguration, persistence
(portable)."""
import json

from agent.config import (
    ACCEPTED, NOT_SUPPORTED, REBOOT_REQUIRED, REJECTED, STORAGE_NAME, TABLE, Config,
)

KEY32 = "00112233445566778899aabbccddeeff"            # 16 bytes, the shortest key
KEY40 = "00112233445566778899AABBCCDDEEFF00112233"    # 20 bytes, the longest


class MemStorage:
    """The Storage contract's read/write, in a dict."""

    def __init__(self, files=None):
        self.files = files if files is not None else {}
        self.writes = 0

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.writes += 1
        self.files[name] = bytes(data)


class BrokenStorage(MemStorage):
    def write(self, name, data):
        raise OSError(28)       # ENOSPC


def stored(storage):
    return json.loads(storage.files[STORAGE_NAME])


def raises(exception, fn, *args):
    try:
        fn(*args)
    except exception:
        return True
    return False


# every key of the table: its default and the Python type get() returns
EXPECTED = {
    "AllowOfflineTxForUnknownId": False,
    "AuthorizationCacheEnabled": False,
    "AuthorizeRemoteTxRequests": False,
    "BlinkRepeat": 3,
    "ClockAlignedDataInterval": 900,
    "ConnectionTimeOut": 30,
    "ConnectorPhaseRotation": ["0.RST", "1.RST"],
    "ConnectorPhaseRotationMaxLength": 2,
    "GetConfigurationMaxKeys": 60,
    "HeartbeatInterval": 86400,
    "LightIntensity": 100,
    "LocalAuthorizeOffline": True,
    "LocalPreAuthorize": False,
    "MaxEnergyOnInvalidId": 0,
    "MeterValuesAlignedData": ["Energy.Active.Import.Register"],
    "MeterValuesAlignedDataMaxLength": 10,
    "MeterValuesSampledData": ["Energy.Active.Import.Register", "Power.Active.Import"],
    "MeterValuesSampledDataMaxLength": 10,
    "MeterValueSampleInterval": 60,
    "MinimumStatusDuration": 0,
    "NumberOfConnectors": 1,
    "ResetRetries": 1,
    "StopTransactionOnEVSideDisconnect": True,
    "StopTransactionOnInvalidId": True,
    "StopTxnAlignedData": [],
    "StopTxnAlignedDataMaxLength": 10,
    "StopTxnSampledData": [],
    "StopTxnSampledDataMaxLength": 10,
    "SupportedFeatureProfiles": ["Core", "RemoteTrigger"],
    "SupportedFeatureProfilesMaxLength": 6,
    "TransactionMessageAttempts": 3,
    "TransactionMessageRetryInterval": 60,
    "UnlockConnectorOnEVSideDisconnect": True,
    "WebSocketPingInterval": 60,
    "AuthorizationKey": None,
    "SecurityProfile": 0,
}
TYPES = {"bool": bool, "int": int, "csl": list, "string": str}
READ_ONLY = ("ConnectorPhaseRotationMaxLength", "GetConfigurationMaxKeys",
             "MeterValuesAlignedDataMaxLength", "MeterValuesSampledDataMaxLength",
             "NumberOfConnectors", "StopTxnAlignedDataMaxLength", "StopTxnSampledDataMaxLength",
             "SupportedFeatureProfiles", "SupportedFeatureProfilesMaxLength")


def test_every_key_default_and_type():
    c = Config()
    names = [row[0] for row in TABLE]
    assert sorted(names) == sorted(EXPECTED)
    for row in TABLE:
        name, kind, access = row[0], row[1], row[3]
        value = c.get(name)
        assert value == EXPECTED[name], (name, value)
        if value is not None:
            assert type(value) is TYPES[kind], name
        assert (access == "R") == (name in READ_ONLY), name
    assert c.get("heartbeatinterval") == 86400          # key names are CiString
    assert raises(KeyError, c.get, "NoSuchKey")
    assert c.warnings == []


def test_connector_count_and_phases_shape_defaults():
    c = Config(number_of_connectors=2, phases=1)
    assert c.get("NumberOfConnectors") == 2
    assert c.get("ConnectorPhaseRotationMaxLength") == 3
    assert c.get("ConnectorPhaseRotation") == ["0.NotApplicable", "1.NotApplicable",
                                               "2.NotApplicable"]


def test_change_outcomes_for_each_error_kind():
    c = Config()
    assert c.change("NoSuchKey", "1") == NOT_SUPPORTED
    assert c.change("", "1") == NOT_SUPPORTED
    # read-only, even with the value it already has
    assert c.change("NumberOfConnectors", "1") == REJECTED
    assert c.change("GetConfigurationMaxKeys", "10") == REJECTED
    assert c.change("SupportedFeatureProfiles", "Core") == REJECTED
    # type
    for bad in ("yes", "1", "", "true ", "truee"):
        assert c.change("LocalPreAuthorize", bad) == REJECTED, bad
    for bad in ("abc", "1.5", "", " 60", "+60", "1_000", "0x10", "60s", "-"):
        assert c.change("HeartbeatInterval", bad) == REJECTED, bad
    # range
    assert c.change("MeterValueSampleInterval", "-1") == REJECTED     # EVerest test 23
    assert c.change("WebSocketPingInterval", "-5") == REJECTED
    assert c.change("LightIntensity", "101") == REJECTED
    assert c.change("ClockAlignedDataInterval", "86401") == REJECTED
    assert c.change("ConnectionTimeOut", "0") == REJECTED
    assert c.change("TransactionMessageAttempts", "0") == REJECTED
    assert c.change("HeartbeatInterval", "2147483648") == REJECTED
    assert c.change("HeartbeatInterval", "99999999999999999999") == REJECTED
    # list member and length
    assert c.change("MeterValuesSampledData", "Energy") == REJECTED
    assert c.change("MeterValuesSampledData", ",".join(["Voltage.L1", "Voltage.L2"] * 6)) \
        == REJECTED
    # nothing rejected changed anything
    assert c.get("HeartbeatInterval") == 86400
    assert c.get("LocalPreAuthorize") is False
    assert c.get("MeterValuesSampledData") == EXPECTED["MeterValuesSampledData"]
    # and the good ones
    assert c.change("LocalPreAuthorize", "TRUE") == ACCEPTED
    assert c.get("LocalPreAuthorize") is True
    assert c.change("localpreauthorize", "False") == ACCEPTED
    assert c.get("LocalPreAuthorize") is False
    assert c.change("HeartbeatInterval", "0300") == ACCEPTED
    assert c.get("HeartbeatInterval") == 300
    assert c.change("HeartbeatInterval", "2147483647") == ACCEPTED
    assert c.change("LightIntensity", "0") == ACCEPTED
    assert c.change("ConnectionTimeOut", "1") == ACCEPTED


def test_reboot_required_keys_are_stored_but_not_announced():
    class BoardConfig(Config):
        table = TABLE + (("LedPin", "int", 2, "RW", True, 0, 40, None),)

    storage = MemStorage()
    c = BoardConfig(storage)
    seen = []
    c.on_change.append(lambda key, value: seen.append(key))
    assert c.change("LedPin", "13") == REBOOT_REQUIRED
    assert c.change("LedPin", "41") == REJECTED
    assert stored(storage) == {"LedPin": "13"}
    assert BoardConfig(storage).get("LedPin") == 13
    assert seen == []


def test_values_persist_across_a_new_config_on_the_same_storage():
    storage = MemStorage()
    c = Config(storage)
    assert STORAGE_NAME not in storage.files             # nothing written until a change
    assert c.change("HeartbeatInterval", "120") == ACCEPTED
    assert c.change("StopTransactionOnInvalidId", "false") == ACCEPTED
    assert c.change("MeterValuesSampledData", "voltage.l1-n, Current.Import.L1") == ACCEPTED
    assert c.change("ConnectorPhaseRotation", "0.RST,1.rts") == ACCEPTED
    assert c.change("AuthorizationKey", KEY32) == ACCEPTED
    assert storage.writes == 5
    assert stored(storage) == {
        "HeartbeatInterval": "120", "StopTransactionOnInvalidId": "false",
        "MeterValuesSampledData": "Voltage.L1-N,Current.Import.L1",
        "ConnectorPhaseRotation": "0.RST,1.RTS", "AuthorizationKey": KEY32,
    }
    again = Config(storage)
    assert again.get("HeartbeatInterval") == 120
    assert again.get("StopTransactionOnInvalidId") is False
    assert again.get("MeterValuesSampledData") == ["Voltage.L1-N", "Current.Import.L1"]
    assert again.get("ConnectorPhaseRotation") == ["0.RST", "1.RTS"]
    assert again.get("AuthorizationKey") == KEY32
    assert again.get("ClockAlignedDataInterval") == 900
    assert again.warnings == []
    # the CSMS's value beats a later board default
    assert Config(storage, defaults={"HeartbeatInterval": 600}).get("HeartbeatInterval") == 120


def test_read_only_keys_are_never_persisted():
    storage = MemStorage()
    c = Config(storage)
    c.change("NumberOfConnectors", "4")
    c.change("HeartbeatInterval", "100")
    assert "NumberOfConnectors" not in stored(storage)
    storage.files[STORAGE_NAME] = b'{"NumberOfConnectors": "4", "HeartbeatInterval": "100"}'
    c = Config(storage)
    assert c.get("NumberOfConnectors") == 1
    assert c.get("HeartbeatInterval") == 100
    assert len(c.warnings) == 1 and "NumberOfConnectors" in c.warnings[0]


def test_corrupt_or_partial_document_falls_back_to_defaults():
    for data in (b'{"HeartbeatInterval": "120", "LocalPre', b"\xff\xfe\x00garbage", b"",
                 b"[1, 2]", b'"text"', b"null"):
        c = Config(MemStorage({STORAGE_NAME: data}))
        assert c.get("HeartbeatInterval") == 86400, data
        assert len(c.warnings) == 1, (data, c.warnings)
    # a good document with bad entries keeps the good ones
    doc = {"HeartbeatInterval": "120", "LightIntensity": "500", "NoSuchKey": "1",
           "MeterValueSampleInterval": 30, "StopTransactionOnInvalidId": "false"}
    c = Config(MemStorage({STORAGE_NAME: json.dumps(doc).encode()}))
    assert c.get("HeartbeatInterval") == 120
    assert c.get("StopTransactionOnInvalidId") is False
    assert c.get("LightIntensity") == 100
    assert c.get("MeterValueSampleInterval") == 60
    assert len(c.warnings) == 3


def test_a_storage_that_raises_on_read_is_a_warning():
    class Unreadable(MemStorage):
        def read(self, name):
            raise OSError(5)

    c = Config(Unreadable())
    assert c.get("HeartbeatInterval") == 86400 and len(c.warnings) == 1


def test_a_change_that_cannot_be_stored_is_rejected_and_not_applied():
    c = Config(BrokenStorage())
    seen = []
    c.on_change.append(lambda key, value: seen.append(key))
    assert c.change("HeartbeatInterval", "120") == REJECTED
    assert c.get("HeartbeatInterval") == 86400
    assert seen == [] and len(c.warnings) == 1
    assert c.set_from_csms("HeartbeatInterval", 300) is False
    assert c.get("HeartbeatInterval") == 86400


def test_board_defaults_override_the_table():
    c = Config(defaults={"HeartbeatInterval": 300, "GetConfigurationMaxKeys": 20,
                         "StopTransactionOnEVSideDisconnect": False,
                         "MeterValuesSampledData": ["Energy.Active.Import.Register", "SoC"],
                         "SupportedFeatureProfiles": "Core,RemoteTrigger,SmartCharging",
                         "SecurityProfile": 2, "AuthorizationKey": KEY40})
    assert c.get("HeartbeatInterval") == 300
    assert c.max_keys == 20
    assert c.get("StopTransactionOnEVSideDisconnect") is False
    assert c.get("MeterValuesSampledData") == ["Energy.Active.Import.Register", "SoC"]
    assert c.get("SupportedFeatureProfiles") == ["Core", "RemoteTrigger", "SmartCharging"]
    assert c.get("SecurityProfile") == 2
    # a read-only limit a default sets also bounds the other defaults
    assert raises(ValueError, Config, None, {"MeterValuesSampledDataMaxLength": 1,
                                             "MeterValuesSampledData": "Voltage,SoC"})
    assert raises(ValueError, Config, None, {"NoSuchKey": 1})
    assert raises(ValueError, Config, None, {"LightIntensity": 200})
    assert raises(ValueError, Config, None, {"HeartbeatInterval": "soon"})
    assert raises(ValueError, Config, None, {"HeartbeatInterval": 1.5})
    assert raises(ValueError, Config, None, {"SupportedFeatureProfiles": "Core,Billing"})


def test_authorization_key_is_write_only():
    storage = MemStorage()
    c = Config(storage)
    # accepted: 32..40 hex digits, whole bytes, either case
    assert c.change("AuthorizationKey", KEY32) == ACCEPTED
    assert c.change("AuthorizationKey", KEY40) == ACCEPTED
    assert c.change("AuthorizationKey", KEY32 + "0A") == ACCEPTED
    for bad in ("", "0011223344556677",                    # 8 bytes: too short
                KEY32[:30], KEY40 + "00", KEY32 + "0",       # 15, 21 bytes, odd count
                "g" * 32, "my-plain-text-password-123456789",
                KEY32[:31] + " "):
        assert c.change("AuthorizationKey", bad) == REJECTED, bad
    assert c.get("AuthorizationKey") == KEY32 + "0A"     # the agent's own view, for Basic auth
    # listed (supported, writable) but its value never leaves the charger
    known, _ = c.get_configuration()
    item = [i for i in known if i["key"] == "AuthorizationKey"][0]
    assert item == {"key": "AuthorizationKey", "readonly": False}
    known, unknown = c.get_configuration(["AuthorizationKey"])
    assert known == [{"key": "AuthorizationKey", "readonly": False}] and unknown == []
    assert KEY32 not in json.dumps(c.get_configuration()).lower()


def test_security_profile_may_only_be_raised():
    # Security Whitepaper ed.3 A05.FR.01-05
    c = Config(MemStorage())
    assert c.change("SecurityProfile", "4") == REJECTED
    assert c.change("SecurityProfile", "0") == REJECTED            # "lower or equal"
    assert c.change("SecurityProfile", "1") == REJECTED            # Basic auth needs a key
    c.change("AuthorizationKey", KEY32)
    assert c.change("SecurityProfile", "2") == REJECTED            # nobody vouches for TLS
    assert c.change("SecurityProfile", "1") == ACCEPTED
    assert c.change("SecurityProfile", "1") == REJECTED            # no reconnect for nothing
    assert c.change("SecurityProfile", "0") == REJECTED
    asked = []
    c.security_check = lambda profile: asked.append(profile) or profile == 2
    assert c.change("SecurityProfile", "3") == REJECTED
    assert c.change("SecurityProfile", "2") == ACCEPTED
    assert asked == [3, 2]
    assert c.change("SecurityProfile", "1") == REJECTED
    assert c.get("SecurityProfile") == 2
    # set by the agent on the CSMS's behalf: no only-raise rule
    assert c.set_from_csms("SecurityProfile", 1) is True
    assert c.get("SecurityProfile") == 1


def test_a_broken_security_check_rejects_rather_than_fails():
    c = Config()
    c.change("AuthorizationKey", KEY32)

    def broken(profile):
        raise OSError("CA store unreadable")
    c.security_check = broken
    assert c.change("SecurityProfile", "2") == REJECTED
    assert c.get("SecurityProfile") == 0 and len(c.warnings) == 1


def test_a_raised_profile_is_on_trial_until_it_connects():
    """A05.FR.07-09: reconnect with the raised profile; if that does not work, fall back to
    the previous one (after PROFILE_TRIAL_ATTEMPTS, then every other attempt); once it has
    connected, it stays."""
    from agent.config import PROFILE_TRIAL_ATTEMPTS as N
    storage = MemStorage()
    c = Config(storage)
    c.security_check = lambda profile: profile <= 2
    assert c.profile_to_try(0) == 0 and c.profile_to_try(N + 4) == 0   # no trial
    c.change("AuthorizationKey", KEY32)
    assert c.change("SecurityProfile", "1") == ACCEPTED
    assert c.change("SecurityProfile", "2") == ACCEPTED      # the trial keeps the first one
    assert [c.profile_to_try(f) for f in range(N + 4)] == [2] * N + [0, 2, 0, 2]
    seen = []
    c.on_change.append(lambda key, value: seen.append(key))
    assert c.connected_with(0) is True                       # fell back
    assert c.get("SecurityProfile") == 0 and stored(storage)["SecurityProfile"] == "0"
    assert seen == [] and "fell back" in c.warnings[-1]     # nothing to reconnect for
    assert c.profile_to_try(N + 2) == 0
    # a raise that connects is kept for good
    assert c.change("SecurityProfile", "2") == ACCEPTED
    assert c.connected_with(2) is False
    assert [c.profile_to_try(f) for f in range(N + 4)] == [2] * (N + 4)
    assert c.connected_with(2) is False and c.get("SecurityProfile") == 2
    # the trial lives in RAM: after a reboot the raised profile is simply in use
    assert c.change("SecurityProfile", "3") == REJECTED
    again = Config(storage)
    assert again.get("SecurityProfile") == 2 and again.profile_to_try(N) == 2


def test_provisioned_values_are_not_stored_and_lose_to_the_csms():
    storage = MemStorage()
    c = Config(storage)
    assert c.provision("AuthorizationKey", KEY32) is True
    assert c.provision("SecurityProfile", 1) is True
    assert c.get("AuthorizationKey") == KEY32 and c.get("SecurityProfile") == 1
    assert STORAGE_NAME not in storage.files                 # not stored
    known, _ = c.get_configuration(["AuthorizationKey", "SecurityProfile"])
    assert known == [{"key": "AuthorizationKey", "readonly": False},
                     {"key": "SecurityProfile", "readonly": False, "value": "1"}]
    assert c.change("SecurityProfile", "1") == REJECTED       # already in use
    assert c.change("AuthorizationKey", KEY40) == ACCEPTED
    # next boot, same start-up options: what the CSMS set wins
    again = Config(storage)
    again.provision("AuthorizationKey", KEY32)
    again.provision("SecurityProfile", 1)
    assert again.get("AuthorizationKey") == KEY40
    # a profile raised by the CSMS stays raised; one raised locally beats a lower stored one
    again.security_check = lambda profile: True
    assert again.change("SecurityProfile", "2") == ACCEPTED
    third = Config(storage)
    third.provision("SecurityProfile", 1)
    assert third.get("SecurityProfile") == 2
    third.provision("SecurityProfile", 3)
    assert third.get("SecurityProfile") == 3
    # nor below the board's default
    board = Config(defaults={"SecurityProfile": 2})
    assert board.provision("SecurityProfile", 1) is True
    assert board.get("SecurityProfile") == 2
    # a value the table does not take is ignored, and the warning never shows a key
    assert c.provision("AuthorizationKey", "my-plain-password") is False
    assert c.provision("SecurityProfile", 7) is False
    assert c.provision("NumberOfConnectors", 4) is False
    assert c.get("AuthorizationKey") == KEY40 and c.get("SecurityProfile") == 1
    assert "my-plain-password" not in " ".join(c.warnings)


def test_measurand_lists_phases_and_max_length():
    c = Config()
    for good, canonical in (
            ("", []),
            ("Energy.Active.Import.Register", ["Energy.Active.Import.Register"]),
            ("Current.Import.L1,Current.Import.L2,Current.Import.L3",
             ["Current.Import.L1", "Current.Import.L2", "Current.Import.L3"]),
            ("Voltage.L1-N, Voltage.L3-L1 ,Current.Import.N",
             ["Voltage.L1-N", "Voltage.L3-L1", "Current.Import.N"]),
            ("Energy.Active.Import.Register.L2", ["Energy.Active.Import.Register.L2"]),
            ("soc,power.active.import", ["SoC", "Power.Active.Import"]),
            ("Voltage,Voltage.L1", ["Voltage", "Voltage.L1"])):
        assert c.change("MeterValuesAlignedData", good) == ACCEPTED, good
        assert c.get("MeterValuesAlignedData") == canonical
    for bad in ("Voltage.L4", "Voltage.L1-L3", "Voltage.", ".L1", "Voltage,,SoC", "Voltage,",
                ",", "Voltage.L1.L2", "Energy", "Energy.Active.Import", "Current.Import.l1x",
                "Voltage,voltage", "Energy.Active.Import.Register;Voltage"):
        assert c.change("MeterValuesAlignedData", bad) == REJECTED, bad
    ten = ",".join(["Voltage.L1", "Voltage.L2", "Voltage.L3", "Current.Import.L1",
                    "Current.Import.L2", "Current.Import.L3", "Power.Active.Import",
                    "Energy.Active.Import.Register", "SoC", "Frequency"])
    for key in ("MeterValuesSampledData", "MeterValuesAlignedData", "StopTxnSampledData",
                "StopTxnAlignedData"):
        assert c.change(key, ten) == ACCEPTED, key
        assert c.change(key, ten + ",Temperature") == REJECTED, key
    # a single-phase board cannot measure L2/L3
    one = Config(phases=1)
    assert one.change("MeterValuesSampledData", "Current.Import.L1,Voltage.L1-N") == ACCEPTED
    for bad in ("Current.Import.L2", "Voltage.L3-N", "Voltage.L1-L2", "Voltage.L3-L1"):
        assert one.change("MeterValuesSampledData", bad) == REJECTED, bad
    # the limit is the board's MaxLength
    small = Config(defaults={"StopTxnSampledDataMaxLength": 1})
    assert small.change("StopTxnSampledData", "Voltage") == ACCEPTED
    assert small.change("StopTxnSampledData", "Voltage,SoC") == REJECTED


def test_connector_phase_rotation():
    c = Config(number_of_connectors=2)
    assert c.change("ConnectorPhaseRotation", "0.RST,1.TSR,2.unknown") == ACCEPTED
    assert c.get("ConnectorPhaseRotation") == ["0.RST", "1.TSR", "2.Unknown"]
    assert c.change("ConnectorPhaseRotation", "1.NotApplicable") == ACCEPTED
    for bad in ("3.RST", "-1.RST", "1.ABC", "RST", "1.", ".RST", "1.RST,1.RST",
                "0.RST,1.RST,2.RST,0.TSR"):
        assert c.change("ConnectorPhaseRotation", bad) == REJECTED, bad


def test_get_configuration_all_keys():
    c = Config()
    known, unknown = c.get_configuration()
    assert unknown == []
    assert sorted(item["key"] for item in known) == sorted(EXPECTED)
    items = {}
    for item in known:
        items[item["key"]] = item
    assert items["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False,
                                          "value": "86400"}
    assert items["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True,
                                           "value": "1"}
    assert items["StopTransactionOnEVSideDisconnect"]["value"] == "true"
    assert items["MeterValuesSampledData"]["value"] == \
        "Energy.Active.Import.Register,Power.Active.Import"
    assert items["StopTxnSampledData"]["value"] == ""
    for item in known:
        assert item["readonly"] is (item["key"] in READ_ONLY)
        assert ("value" in item) is (item["key"] != "AuthorizationKey")
    assert c.get_configuration([]) == (known, [])         # an empty list means all keys too


def test_get_configuration_with_keys_unknown_keys_and_max_keys():
    c = Config()
    c.change("HeartbeatInterval", "300")
    known, unknown = c.get_configuration(["heartbeatINTERVAL", "Nope", "SupportedFeatureProfiles",
                                          "AlsoNope"])
    assert known == [{"key": "HeartbeatInterval", "readonly": False, "value": "300"},
                     {"key": "SupportedFeatureProfiles", "readonly": True,
                      "value": "Core,RemoteTrigger"}]
    assert unknown == ["Nope", "AlsoNope"]
    assert c.max_keys == 60
    keys = ["HeartbeatInterval"] * 60
    assert len(c.get_configuration(keys)[0]) == 60
    assert raises(ValueError, c.get_configuration, keys + ["HeartbeatInterval"])
    small = Config(defaults={"GetConfigurationMaxKeys": 2})
    assert small.max_keys == 2
    assert raises(ValueError, small.get_configuration, ["A", "B", "C"])


def test_on_change_once_per_accepted_change_and_never_on_rejects():
    c = Config(MemStorage())
    seen = []
    c.on_change.append(lambda key, value: seen.append((key, value)))
    assert c.change("HeartbeatInterval", "300") == ACCEPTED
    assert c.change("HeartbeatInterval", "-3") == REJECTED
    assert c.change("NumberOfConnectors", "2") == REJECTED
    assert c.change("Nope", "2") == NOT_SUPPORTED
    assert c.change("SecurityProfile", "1") == REJECTED
    assert c.change("MeterValuesSampledData", "SoC,Voltage") == ACCEPTED
    assert c.change("LocalPreAuthorize", "true") == ACCEPTED
    assert c.change("HeartbeatInterval", "300") == ACCEPTED    # unchanged still announced
    assert seen == [("HeartbeatInterval", 300), ("MeterValuesSampledData", ["SoC", "Voltage"]),
                    ("LocalPreAuthorize", True), ("HeartbeatInterval", 300)]


def test_a_failing_listener_does_not_undo_an_accepted_change():
    c = Config()
    seen = []

    def broken(key, value):
        raise RuntimeError("listener bug")

    c.on_change.append(broken)
    c.on_change.append(lambda key, value: seen.append(key))
    assert c.change("HeartbeatInterval", "300") == ACCEPTED
    assert c.get("HeartbeatInterval") == 300
    assert seen == ["HeartbeatInterval"] and len(c.warnings) == 1


def test_set_from_csms_persists_and_announces():
    storage = MemStorage()
    c = Config(storage)
    seen = []
    c.on_change.append(lambda key, value: seen.append((key, value)))
    assert c.set_from_csms("HeartbeatInterval", 300) is True      # BootNotification.conf
    assert c.set_from_csms("HeartbeatInterval", 0) is True        # legal in the conf
    assert c.set_from_csms("HeartbeatInterval", "450") is True
    assert c.set_from_csms("HeartbeatInterval", -1) is False
    assert c.set_from_csms("HeartbeatInterval", 1.5) is False
    assert c.set_from_csms("NumberOfConnectors", 3) is False
    assert c.set_from_csms("NoSuchKey", 3) is False
    assert seen == [("HeartbeatInterval", 300), ("HeartbeatInterval", 0),
                    ("HeartbeatInterval", 450)]
    assert len(c.warnings) == 4
    assert Config(storage).get("HeartbeatInterval") == 450
    writes = storage.writes
    assert c.set_from_csms("HeartbeatInterval", 450) is True      # the next boot, same interval
    assert storage.writes == writes                                # spares the flash
    assert seen[-1] == ("HeartbeatInterval", 450)


def test_get_returns_a_copy_of_lists():
    c = Config()
    c.get("MeterValuesSampledData").append("SoC")
    assert c.get("MeterValuesSampledData") == EXPECTED["MeterValuesSampledData"]

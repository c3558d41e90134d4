"""agent.config against the official OCPP 1.6 schemas and the `ocpp` package's key list
(CPython only: the schemas and jsonschema do not exist on the MCU)."""
import pytest
from ocpp.v16.enums import ConfigurationKey

from agent import config as cfg
from agent.config import TABLE, Config
from agent.ocpp_schemas import SchemaValidator

VALIDATOR = SchemaValidator("1.6")
KEY = "00112233445566778899aabbccddeeff"


class MemStorage:
    def __init__(self):
        self.files = {}

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.files[name] = data


def answer(known, unknown):
    """GetConfiguration.conf as the OCPP layer sends it (unknownKey only when not empty)."""
    payload = {"configurationKey": known}
    if unknown:
        payload["unknownKey"] = unknown
    return payload


def configs():
    plain = Config()
    busy = Config(MemStorage(), number_of_connectors=4, phases=1,
                  defaults={"SupportedFeatureProfiles": list(cfg.PROFILES),
                            "GetConfigurationMaxKeys": 100})
    for key, value in (("AuthorizationKey", KEY), ("SecurityProfile", "1"),
                       ("HeartbeatInterval", "2147483647"),
                       ("ConnectorPhaseRotation", "0.RST,1.RTS,2.SRT,3.STR,4.TSR"),
                       ("MeterValuesSampledData", ",".join(
                           ["Energy.Reactive.Export.Register.L1-N",
                            "Energy.Reactive.Import.Interval", "Power.Reactive.Export",
                            "Current.Import.L1", "Voltage.L1-N",
                            "Current.Export.N", "Temperature", "Frequency", "SoC", "RPM"]))):
        assert busy.change(key, value) == "Accepted", key
    return plain, busy


@pytest.mark.parametrize("which", [0, 1])
def test_every_get_configuration_answer_is_schema_valid(which):
    c = configs()[which]
    names = [row[0] for row in TABLE]
    requests = [None, [], names, ["Nope", "x" * 50], [n.lower() for n in names[:5]] + ["Nope"],
                ["AuthorizationKey"], ["NumberOfConnectors", "NumberOfConnectors"]]
    for keys in requests:
        known, unknown = c.get_configuration(keys)
        VALIDATOR.response("GetConfiguration", answer(known, unknown))
    full = answer(*c.get_configuration())
    assert len(full["configurationKey"]) == len(TABLE)


def test_every_change_configuration_status_is_schema_valid():
    class BoardConfig(Config):
        table = TABLE + (("LedPin", "int", 2, "RW", True, 0, 40, None),)

    c = BoardConfig()
    produced = {
        c.change("HeartbeatInterval", "300"),
        c.change("HeartbeatInterval", "-1"),
        c.change("NumberOfConnectors", "2"),
        c.change("NoSuchKey", "1"),
        c.change("LedPin", "5"),
    }
    assert produced == {cfg.ACCEPTED, cfg.REJECTED, cfg.NOT_SUPPORTED, cfg.REBOOT_REQUIRED}
    for status in produced:
        VALIDATOR.response("ChangeConfiguration", {"status": status})


def test_every_key_request_is_a_valid_change_configuration_request():
    # what a CSMS would send to set each key to the value we report: the schema takes it, and
    # (for writable keys) so do we
    c = Config()
    for item in c.get_configuration()[0]:
        if "value" not in item:
            continue
        request = {"key": item["key"], "value": item["value"]}
        VALIDATOR.request("ChangeConfiguration", request)
        if item["key"] == "SecurityProfile":
            # only a raise is Accepted (Security Whitepaper ed.3 A05.FR.01 "lower or equal")
            assert c.change(item["key"], item["value"]) == "Rejected", item
        elif not item["readonly"]:
            assert c.change(item["key"], item["value"]) == "Accepted", item


def test_the_table_covers_the_core_profile_and_uses_the_official_names():
    official = {key.value for key in ConfigurationKey}
    names = {row[0] for row in TABLE}
    assert names <= official, names - official
    # the ocpp package lists the Core keys first, up to the Local Auth List ones
    listed = [key.value for key in ConfigurationKey]
    core = listed[:listed.index("LocalAuthListEnabled")]
    assert set(core) <= names, set(core) - names
    assert {"AuthorizationKey", "SecurityProfile"} <= names
    assert Config().max_keys >= len(official)

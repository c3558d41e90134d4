"""agent.charger: the station and its OCPP 1.6 charge point wired from a board dict, the one
assembly `evse sim`, `evse run` and the microcontroller's main.py share (portable)."""
from agent.charger import attach_ocpp16, station_identity
from agent.station import station_from_board
from hal.storage_fs import MemoryStorage

CONNECTOR = {"id": 1, "type": "socket", "max_current": 32000, "cable_max_current": None,
             "phases": 3, "ventilation": False, "contactor_feedback": True,
             "lock_feedback": True, "state_e": False}


def board(mode="csms", **extra):
    result = {"name": "t", "hal": "unix", "station": {"vendor": "V", "model": "M",
                                                     "serial": "S-1", "firmware": "1"},
              "authorization": {"mode": mode, "id_tags": [], "free_tag": "FREE"},
              "meter": {"model": "none"}, "timing": {}, "connectors": [CONNECTOR]}
    result.update(extra)
    return result


class AgentShell:
    """What attach_ocpp16 uses of agent.runtime.Agent (which this heap cannot also hold)."""

    def __init__(self, station):
        self.station = station
        self.observers = []


def charger(the_board, storage=None):
    agent = AgentShell(station_from_board(the_board))
    return agent, attach_ocpp16(agent, the_board, storage or MemoryStorage(), wall_ms=0)


def test_the_charge_point_authorizes_for_the_station_and_sees_every_event():
    agent, cp = charger(board())
    assert agent.station.authorizer is cp
    assert cp.on_event in agent.observers
    assert cp.free is False and cp.rpc is not None and cp.rpc.handler == cp.handle


def test_a_free_board_stays_free_under_ocpp():
    agent, cp = charger(board("free"))
    assert cp.free is True and cp.free_tag == "FREE"


def test_a_board_without_a_meter_does_not_wait_for_readings():
    agent, cp = charger(board())
    assert agent.station.evses[1].has_meter is False


def test_boot_counter_and_config_live_in_the_given_storage():
    storage = MemoryStorage()
    charger(board(), storage)
    _, cp = charger(board(), storage)
    assert cp.boot_count == 2
    assert cp.config.get("NumberOfConnectors") == 1


def test_the_charge_point_id_is_given_then_the_boards_then_the_serial():
    assert station_identity(board(), "CP-9") == "CP-9"
    assert station_identity(board(ocpp={"id": "OCPP-ID"})) == "OCPP-ID"
    assert station_identity(board()) == "S-1"

"""A charger assembled from a board: the station, its OCPP 1.6 charge point and how they are
wired together. One place for it, used by `evse sim` (simulated board), `evse run` (a Linux
board) and the microcontroller's main.py, so the three never drift apart.

Portable. The transport (websockets on CPython, the small client on MicroPython) and the
schema validator (CPython only) are handed in by the caller.
"""
from agent.config import Config
from agent.journal import Journal
from agent.ocpp16 import ChargePoint16
from agent.rpc import Rpc


def attach_ocpp16(agent, board, storage, wall_ms, boot_count=1, validator=None,
                  lenient=False, id_prefix=""):
    """Put an OCPP 1.6 charge point between `agent`'s station and a CSMS; returns it.
    Config, availability, the journal and open transactions live in `storage`."""
    station = agent.station
    config = Config(storage, number_of_connectors=len(station.evses),
                    phases=board["connectors"][0]["phases"])
    charge_point = ChargePoint16(station, config, Journal(storage), storage=storage,
                                 identity=board.get("station", {}), wall_ms=wall_ms,
                                 boot_count=boot_count)
    charge_point.attach(Rpc(None, validator=validator, lenient=lenient, id_prefix=id_prefix))
    # a free-charging board stays free: transactions start with its free tag
    charge_point.free = station.authorizer.free
    charge_point.free_tag = station.authorizer.free_tag
    station.authorizer = charge_point
    agent.observers.append(charge_point.on_event)
    return charge_point


def station_identity(board, charge_point_id=None):
    """The charge point id: given, else the board's [ocpp] id, else its serial number."""
    return charge_point_id or board.get("ocpp", {}).get("id") or \
        board.get("station", {}).get("serial", "SIM-0001")

"""The agent on a microcontroller, or on the MicroPython unix port: what a bundle's main.py
runs (`evse bundle` writes `main.py`, `board.json` and the compiled modules).

    micropython DIR/main.py [CSMS URL]

The board JSON says everything: the drivers (`hal = "micropython"`: hal/mp_drivers.py and the
port's pilot sampler; `hal = "unix"`: the scripted charger of hal/unix_sim.py), the CSMS, the
state folder on the board's filesystem. The same assembly as `evse sim` and `evse run`
(agent/charger.py), the portable WebSocket transport (agent/transport_mp.py).

On the unix port the scripted EV drives one session; once it has left and every transaction
message is delivered (bounded), main() returns, so CI can run a whole session and check it.
On a microcontroller it runs forever.
"""
import json
import time

from agent.charger import attach_ocpp16, station_identity
from agent.compat import asyncio, monotonic_ms
from agent.describe import describe, describe_ocpp
from agent.runtime import Agent
from agent.station import station_from_board

DELIVERY_WAIT_MS = 30000          # after the scripted session: let the journal drain


def load_board(path="board.json"):
    with open(path) as file:
        return json.load(file)


def _hardware(board):
    """{connector id: ConnectorHardware}, and the scripted EV's lines on the unix port."""
    if board["hal"] == "unix":
        from hal import unix_sim
        return unix_sim.board_hardware(board)
    from hal import mp_drivers
    return mp_drivers.board_hardware(board, clock=monotonic_ms), None


def _log_event(evse, event):
    where = "[%d] " % evse.connector_id if evse is not None else ""
    print("%d %s%s" % (event[0], where, describe(event)))


def _log_ocpp(now, event):
    print("%d %s" % (now, describe_ocpp(event)))


async def run(board, url=None, storage_dir=None, hardware=None):
    """`hardware`: what _hardware(board) gave, if main() assembled it already."""
    from agent.transport_mp import Connection
    from hal.storage_fs import FileStorage
    hardware, lines = hardware or _hardware(board)
    storage = FileStorage(storage_dir or board.get("storage", {}).get("dir") or "state")
    agent = Agent(station_from_board(board), hardware,
                  poll_ms=board.get("mcu", {}).get("poll", 0))
    agent.observers.append(_log_event)
    ocpp = board.get("ocpp", {})
    # time.time() is the board's RTC (wrong until the CSMS's currentTime sets the clock)
    wall_ms = int(time.time() * 1000) - monotonic_ms()
    cp = attach_ocpp16(agent, board, storage, wall_ms=wall_ms)
    cp.log = _log_ocpp
    connection = Connection(cp, agent, url or ocpp.get("csms"), station_identity(board),
                            auth_key=ocpp.get("auth_key"), cafile=ocpp.get("ca"), log=print)
    agent.hooks.append(connection.frames_waiting)
    tasks = [asyncio.create_task(agent.run()), asyncio.create_task(connection.run())]
    if lines is None:
        from hal import mp_drivers
        # pin interrupts reach the agent through one task (soft IRQs must not touch asyncio)
        tasks.append(asyncio.create_task(mp_drivers.EVENTS.run()))
        dog = mp_drivers.watchdog(board)
        if dog is not None:
            agent.hooks.append(dog.feed)    # fed after every service pass: a hang resets
        await asyncio.gather(*tasks)        # a real board: until power-off
        return True
    from hal import unix_sim
    heap = asyncio.create_task(_watch_heap(HEAP_PEAK))
    await unix_sim.drive(board, agent, lines[min(lines)])
    waited = 0
    # the EV has left: once the connectors are idle again (Available sent) and every
    # transaction message is delivered, the scripted session is over
    while waited < DELIVERY_WAIT_MS and (
            len(cp.journal.pending()) or cp.rpc.busy() or cp.rpc.has_frames() or
            any(evse.state != "idle" for evse in agent.station.evses.values())):
        await asyncio.sleep(0.1)
        waited += 100
    delivered = not len(cp.journal.pending())
    agent.stop()
    await connection.close()
    for task in tasks:
        task.cancel()
    heap.cancel()
    if HEAP_PEAK[0]:
        print("heap: peak %d bytes allocated during the session" % HEAP_PEAK[0])
    print("session done: %s" % ("every message delivered" if delivered else
                                "%d messages still queued" % len(cp.journal.pending())))
    return delivered


HEAP_PEAK = [0]


async def _watch_heap(peak, every_ms=20):
    """The most heap allocated at once (sampled; MicroPython only): the figure that says
    how much RAM a session needs beside the code."""
    try:
        import gc
        allocated = gc.mem_alloc
    except (ImportError, AttributeError):
        return
    while True:
        used = allocated()
        if used > peak[0]:
            peak[0] = used
        await asyncio.sleep(every_ms / 1000)


def main(argv=None, board_path="board.json"):
    import sys
    argv = sys.argv if argv is None else argv
    board = load_board(board_path)
    url = argv[1] if len(argv) > 1 else None
    if url is not None:
        from agent.wsclient import InvalidURI, parse_url
        try:
            parse_url(url)
            if url.startswith("wss://") and not board.get("ocpp", {}).get("ca"):
                raise InvalidURI("wss:// needs the CSMS's CA certificate ([ocpp] ca): a "
                                 "microcontroller has no trust store")
        except InvalidURI as error:
            print("CSMS URL: %s" % error)     # not worth retrying for ever
            sys.exit(2)
    try:
        hardware = _hardware(board)
    except (OSError, ValueError) as error:
        # a serial device that is not there, a pin the port does not have: one line, not a
        # traceback, and the exit status a bad board file gets from `evse`
        print("board %s: %s" % (board.get("name"), error))
        sys.exit(2)
    ok = asyncio.run(run(board, url, hardware=hardware))
    if not ok:
        sys.exit(1)

"""agent/runtime.py on start: the controller's outputs are put on the hardware as they stand,
whatever an earlier run left there (a reboot with the lock closed, a PWM still running)."""
import asyncio

from agent.runtime import Agent
from agent.station import station_from_board
from simulator.runner import world_from_board
from tools import boardfile


def test_a_fresh_agent_releases_what_a_previous_run_left_on():
    board = boardfile.load(boardfile.find("sim"))

    async def main():
        world = world_from_board(board)
        world.bind()
        connector = world.connectors[1]
        connector.lock.locked = True                  # left locked by the run before
        connector.pilot.mode, connector.pilot.duty = "pwm", 533
        agent = Agent(station_from_board(board), world.hardware(), now_ms=world.now_ms)
        task = asyncio.ensure_future(agent.run())
        await asyncio.sleep(0.05)
        agent.stop()
        await task
        return connector.lock.locked, connector.pilot.mode, connector.contactor.commands

    locked, pilot_mode, contactor_commands = asyncio.run(main())
    assert locked is False
    assert pilot_mode == "x1"
    assert [closed for _, closed in contactor_commands] == [False]


def test_an_observer_that_fails_is_told_and_the_safety_loop_goes_on():
    """OCPP (an observer) failing, e.g. on a full flash, must not end the loop that drives
    the contactor: the failure is told, and the controller's change still takes effect."""
    board = boardfile.load(boardfile.find("sim"))

    def failing(evse, event):
        raise OSError(28, "No space left on device")

    async def main():
        world = world_from_board(board)
        world.bind()
        agent = Agent(station_from_board(board), world.hardware(), now_ms=world.now_ms)
        told = []
        agent.log = told.append
        agent.observers.append(failing)
        task = asyncio.ensure_future(agent.run())
        await asyncio.sleep(0.05)
        agent.station.evses[1].set_available(agent.now_ms(), False)   # an event: observers
        agent.service(agent.now_ms())
        await asyncio.sleep(0.05)
        alive = not task.done()
        agent.stop()
        await task
        return told, alive, agent.station.evses[1].state

    told, alive, state = asyncio.run(main())
    assert alive and state == "unavailable"
    assert told and "No space left on device" in told[0]

"""The energy meter in whole sessions: `evse sim` with a Modbus meter model serves the
simulated meter on real Modbus (TCP on 127.0.0.1, or RTU on a paced pty pair) and the agent
reads it with the client a real board uses; MeterValues and Start/Stop energy come over the
wire, and every injected meter fault gives its documented reaction:

| fault (simulator/meter_server.py) | reaction |
|---|---|
| no answer, `[meter] on_failure = "stop"` (default) | after meter_timeout_ms (10 s) fault meter_lost: contactor open, Faulted / PowerMeterFailure; clears when the meter answers |
| no answer, `on_failure = "continue"` | charging goes on; Charging / PowerMeterFailure, info "meter lost: energy estimated"; meterStop includes the estimate |
| energy register jumps backwards | reading ignored: no transaction value ever goes down |
| absurd power (10 MW) | the read is refused (implausible): no sample, then meter_lost as for silence |
"""
import asyncio
import copy

from hal.modbus_client import ModbusMeter
from ocpp_harness import (  # noqa: F401 (wall_clock_guard is an autouse fixture)
    BOARD, CHARGE, calls, energy_register, last_status, payloads, simulate, started_tx,
    tx_meter_values, wait_calls, wall_clock_guard,
)


def modbus_board(model="sdm630", link="tcp", on_failure="stop"):
    board = copy.deepcopy(BOARD)
    board["meter"].update(model=model, on_failure=on_failure)
    board["sim"]["meter_link"] = link
    return board


def served(sim, connector_id=1):
    """The simulated Modbus unit behind connector 1."""
    return sorted(sim.meter_server.meters.values(), key=lambda m: m.unit_id)[connector_id - 1]


def register_wh(sim, connector_id=1):
    return sim.world.connectors[connector_id].meter.import_wms // 3600000


def statuses_with_errors(csms):
    return [(p["status"], p["errorCode"], p.get("info")) for p in
            payloads(csms, "StatusNotification") if p["connectorId"] == 1]


STOP_AND_LEAVE = """
    swipe 04A1B2C3
    wait_for contactor == open timeout=6s
    wait 5s
    unplug
    wait 10s
"""


def test_a_whole_session_with_its_energy_over_modbus_tcp():
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await wait_calls(csms, "StopTransaction", timeout=3600)
        await asyncio.sleep(10)
        return tx, register_wh(sim), served(sim).requests

    run = simulate(CHARGE + "    wait 20min\n" + STOP_AND_LEAVE, operator,
                   board=modbus_board())
    run.assert_scenario_held()
    tx, final_wh, requests = run.result
    assert isinstance(run.sim.hardware[1].meter, ModbusMeter)
    start, = payloads(run.csms, "StartTransaction")
    stop, = payloads(run.csms, "StopTransaction")
    periodic = [energy_register(mv) for r in tx_meter_values(run.csms, tx)
                for mv in r.payload["meterValue"]]
    assert start["meterStart"] == 0
    assert len(periodic) >= 19 and periodic == sorted(periodic)
    # the stop reading is taken once the contactor is open, later than every periodic one:
    # nothing flows after it, so it is what the meter ends with
    assert periodic[-1] < stop["meterStop"] == final_wh
    assert 6500 <= stop["meterStop"] <= 7200          # 20 min at 3 x 32 A x 214 V
    assert requests >= 4 * 20 * 60                     # 4 reads a snapshot, one a second


def test_the_same_over_rtu_on_a_paced_pty_at_9600_baud():
    async def operator(sim, csms):
        await started_tx(csms)
        await wait_calls(csms, "StopTransaction", timeout=600)
        return sim.meter_server.client_path, register_wh(sim)

    run = simulate(CHARGE + "    wait 30s\n" + STOP_AND_LEAVE, operator,
                   board=modbus_board("em340", link="rtu"))
    run.assert_scenario_held()
    client_path, final_wh = run.result
    assert client_path.startswith("/dev/pts/")
    stop, = payloads(run.csms, "StopTransaction")
    # EM340 counts energy in 0.1 kWh steps: the reading is the register, not the physics
    assert stop["meterStop"] % 100 == 0 and final_wh - 100 <= stop["meterStop"] <= final_wh


def test_a_silent_meter_stops_charging_and_reports_power_meter_failure():
    async def operator(sim, csms):
        await started_tx(csms)
        served(sim).inject("no_answer")
        await asyncio.sleep(30)
        during = (last_status(csms), sim.world.connectors[1].contactor.closed)
        served(sim).clear()
        await asyncio.sleep(30)
        return during, last_status(csms)

    run = simulate(CHARGE + "    wait 2min\n", operator, board=modbus_board())
    (status, closed), status_after = run.result
    assert status == "Faulted" and closed is False
    assert ("Faulted", "PowerMeterFailure", "meter_lost") in statuses_with_errors(run.csms)
    assert status_after != "Faulted"


def test_continue_policy_charges_on_with_estimated_energy_flagged():
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(60)
        served(sim).inject("no_answer")
        await asyncio.sleep(10 * 60)
        during = (last_status(csms), sim.world.connectors[1].contactor.closed)
        return tx, during

    run = simulate(CHARGE + "    wait 12min\n" + STOP_AND_LEAVE, operator,
                   board=modbus_board(on_failure="continue"))
    tx, (status, closed) = run.result
    assert status == "Charging" and closed is True
    assert ("Charging", "PowerMeterFailure", "meter lost: energy estimated") in \
        statuses_with_errors(run.csms)
    stop, = payloads(run.csms, "StopTransaction")
    periodic = [energy_register(mv) for r in tx_meter_values(run.csms, tx)
                for mv in r.payload["meterValue"]]
    # the last real reading came a minute in; the estimate covers the ~11 minutes after
    # it (from its power) with the meter silent: meterStop is well beyond the last reading
    assert stop["meterStop"] >= max(periodic) + 3000


def test_an_energy_register_going_backwards_never_reaches_the_transaction():
    async def operator(sim, csms):
        tx = await started_tx(csms)
        await asyncio.sleep(90)
        served(sim).inject("energy_backwards", by_wh=500)
        await asyncio.sleep(120)
        served(sim).clear()
        return tx

    run = simulate(CHARGE + "    wait 5min\n" + STOP_AND_LEAVE, operator,
                   board=modbus_board())
    tx = run.result
    values = [energy_register(mv) for r in tx_meter_values(run.csms, tx)
              for mv in r.payload["meterValue"]]
    stop, = payloads(run.csms, "StopTransaction")
    assert values == sorted(values) and values[-1] <= stop["meterStop"]
    assert "Faulted" not in [s for s, _, _ in statuses_with_errors(run.csms)]


def test_absurd_power_readings_are_refused_then_the_meter_counts_as_lost():
    async def operator(sim, csms):
        await started_tx(csms)
        served(sim).inject("absurd_power")
        await asyncio.sleep(30)
        return last_status(csms), sim.world.connectors[1].contactor.closed

    run = simulate(CHARGE + "    wait 1min\n", operator, board=modbus_board())
    assert run.result == ("Faulted", False)
    assert ("Faulted", "PowerMeterFailure", "meter_lost") in statuses_with_errors(run.csms)
    assert calls(run.csms, "StartTransaction")

"""Benchmarks that run ON MicroPython, from a unix bundle (driven by tools/bench_mcu.py).

    micropython mp_bench.py modules            heap per module imported
    micropython mp_bench.py rtt URL N          Heartbeat round trips of the agent's stack
    micropython mp_bench.py latency N          unplug -> contactor-open command, scripted HAL

Each prints one JSON line. Portable code only (it runs where the bundle runs).
"""
import gc
import json
import sys
import time

# What a unix-board session imports, in import order (each one's imports are already paid);
# tools/bench_wasm.py measures the same list on a 32-bit MicroPython
MODULES = ("agent.compat", "agent.fsm", "agent.params", "agent.faults", "agent.pilot",
           "agent.evse", "agent.station", "agent.runtime", "agent.timeutil", "agent.rpc",
           "agent.config", "agent.journal", "agent.ocpp16", "agent.charger", "agent.describe",
           "agent.mcu", "agent.wsclient", "agent.transport", "agent.transport_mp",
           "hal.interfaces", "hal.storage_fs", "hal.electrics", "hal.unix_sim",
           "hal.modbus_meter", "hal.modbus_rtu")


def modules():
    sizes = {}
    gc.collect()
    before = gc.mem_alloc()
    for name in MODULES:
        __import__(name)
        gc.collect()
        now = gc.mem_alloc()
        sizes[name] = now - before
        before = now
    print(json.dumps({"heap_per_module": sizes, "total": sum(sizes.values())}))


async def _rtt(url, n):
    from agent import wsclient
    from agent.rpc import Rpc
    ws = await wsclient.connect(url + "/BENCH-MP", ["ocpp1.6"])
    rpc = Rpc(lambda action, payload: {})
    rpc.connection_made(0)
    done = [False]

    def answered(now, result, error):
        done[0] = True

    async def call(action, payload):
        done[0] = False
        rpc.call(time.ticks_ms(), action, payload, answered)
        for frame in rpc.take_frames():
            await ws.send(frame)
        while not done[0]:
            rpc.receive(time.ticks_ms(), await ws.recv())
        rpc.take_events()
    await call("BootNotification", {"chargePointVendor": "bench", "chargePointModel": "mp"})
    gc.collect()
    heap = gc.mem_alloc()
    started = time.ticks_ms()
    for _ in range(n):
        await call("Heartbeat", {})
    elapsed = time.ticks_diff(time.ticks_ms(), started)
    await ws.close()
    print(json.dumps({"round_trips_per_s": n * 1000 // max(1, elapsed), "calls": n,
                      "heap_allocated": heap}))


async def _latency(n):
    from agent.compat import asyncio
    from agent.runtime import Agent
    from agent.station import station_from_board
    from hal import unix_sim
    with open("board.json") as file:
        board = json.load(file)
    board["authorization"]["mode"] = "free"
    hardware, lines = unix_sim.board_hardware(board)
    line = lines[1]
    opened = []
    contactor = hardware[1].contactor
    closing = contactor.set

    def set_and_time(closed):
        if not closed and line.closed:
            opened.append(time.ticks_us())
        closing(closed)
    contactor.set = set_and_time
    agent = Agent(station_from_board(board), hardware)
    task = asyncio.create_task(agent.run())

    async def until(condition):
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.005)
        raise RuntimeError("condition not reached")
    latencies = []
    for _ in range(n):
        line.ev = "B"
        line.changed()
        await until(lambda: line.mode == "pwm")
        line.ev = "C"
        line.changed()
        await until(lambda: line.closed)
        await asyncio.sleep(0.2)
        del opened[:]
        started = time.ticks_us()
        line.ev = None
        line.changed()
        await until(lambda: opened)
        latencies.append(time.ticks_diff(opened[0], started))
        await asyncio.sleep(0.3)
    agent.stop()
    task.cancel()
    latencies.sort()
    print(json.dumps({"events": n, "p50_us": latencies[n // 2],
                      "p99_us": latencies[min(n - 1, n * 99 // 100)],
                      "max_us": latencies[-1]}))


def main(argv):
    from agent.compat import asyncio
    if argv[1] == "modules":
        modules()
    elif argv[1] == "rtt":
        asyncio.run(_rtt(argv[2], int(argv[3])))
    elif argv[1] == "latency":
        asyncio.run(_latency(int(argv[2])))


if __name__ == "__main__":
    main(sys.argv)

"""simulator.meter_server and simulator.rs485: simulated meters on real Modbus, read back with a
plain pymodbus client and hal.modbus_meter's plan/decode (the encoder and the decoder are
written independently, so each checks the other). Loopback and pseudo-terminals only."""
import asyncio
import contextlib
import socket
import time

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from hal import modbus_meter
from hal.interfaces import MeterSample
from hal.meter_profiles import PROFILES
from simulator import meter_server
from simulator.meter_server import (FAULTS, MeterImage, SimulatedMeter, SteadyLoad,
                                    serve_forever, start_rtu, start_tcp)
from simulator.rs485 import Rs485Line, character_bits

MODELS = sorted(PROFILES)          # whatever hal/meter_profiles.py holds today
TRANSPORTS = ("tcp", "rtu")
FIELDS = ("energy_import_wh", "energy_export_wh", "power_w", "power_w_phases", "current_ma",
          "voltage_dv", "frequency_mhz", "power_factor_permille")

# a 3-phase 16 A charge on a datasheet's test bench
DATASHEET = {
    "energy_import_wh": 1234500, "energy_export_wh": 5600, "power_w": 11040,
    "power_w_phases": (3680, 3657, 3703), "current_ma": (16000, 15900, 16100),
    "voltage_dv": (2300, 2310, 2290), "frequency_mhz": 50000, "power_factor_permille": 990,
}
def expected_reading(profile, values=DATASHEET):
    """What this meter shows of `values`: each quantity it maps, at the resolution of its
    register (a 0.1 kWh register shows 1234.5 kWh, not 1234.56); the rest None."""
    expected = dict.fromkeys(FIELDS)
    phased = {}
    for quantity, _, _, kind, _, scale in profile["rows"]:
        field, phase = meter_server.QUANTITY_FIELDS[quantity]
        value = values[field] if phase is None else values[field][phase]
        power = scale if isinstance(scale, int) else int(scale.partition(":")[2] or "0")
        if kind != modbus_meter.F32 and power > 0:
            value -= value % 10 ** power
        if phase is None:
            expected[field] = value
        else:
            phased.setdefault(field, [None, None, None])[phase] = value
    for field, triple in phased.items():
        expected[field] = tuple(triple)
    return expected


def fixed(values):
    return lambda: MeterSample(**values)


def as_dict(sample):
    return {field: getattr(sample, field) for field in FIELDS}


async def read_block(client, function, address, count, unit):
    read = client.read_input_registers if function == 4 else client.read_holding_registers
    return await read(address, count=count, device_id=unit)


async def snapshot(client, profile, unit):
    """One full reading the way the agent takes it: plan, read every block, decode."""
    blocks = modbus_meter.plan(profile)
    answers = []
    for function, address, count in blocks:
        response = await read_block(client, function, address, count, unit)
        assert not response.isError(), response
        answers.append(response.registers)
    sample = MeterSample()
    implausible = modbus_meter.decode(
        profile, modbus_meter.registers_of(blocks, answers), sample)
    return sample, implausible


@contextlib.asynccontextmanager
async def served(transport, meters, timeout=1.0, retries=0, baud=9600, pace=False):
    if transport == "tcp":
        server = await start_tcp(meters)
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=timeout,
                                      retries=retries)
    else:
        server = await start_rtu(meters, baud=baud, pace=pace)
        client = AsyncModbusSerialClient(server.client_path, framer=FramerType.RTU,
                                         baudrate=baud, timeout=timeout, retries=retries)
    try:
        assert await client.connect()
        yield server, client
    finally:
        client.close()
        await server.stop()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


# -- every profile, exactly, over both transports ------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model", MODELS)
def test_datasheet_values_read_back_exactly(model, transport):
    profile = PROFILES[model]
    meter = SimulatedMeter(model, unit_id=7, source=fixed(DATASHEET))

    async def body():
        async with served(transport, [meter]) as (_, client):
            return await snapshot(client, profile, 7)
    sample, implausible = run(body())
    assert implausible == []
    assert as_dict(sample) == expected_reading(profile)


@pytest.mark.parametrize("model", MODELS)
def test_missing_values_are_served_as_not_available(model):
    profile = PROFILES[model]
    table = MeterImage(profile).words(MeterSample())
    assert set(table) == {(f, a + i) for f, a, n in modbus_meter.plan(profile)
                          for i in range(n)}, "exactly the mapped registers, nothing else"
    sample = MeterSample()
    assert modbus_meter.decode(profile, table, sample) == []
    for value in as_dict(sample).values():
        assert value is None or value == (None, None, None)


def test_several_meters_share_one_bus_and_a_stranger_stays_silent():
    meters = [SimulatedMeter(model, unit_id=11 + n, source=fixed(DATASHEET))
              for n, model in enumerate(MODELS)]

    async def body(transport):
        async with served(transport, meters, timeout=0.2) as (_, client):
            for meter in meters:
                sample, _ = await snapshot(client, meter.profile, meter.unit_id)
                assert as_dict(sample) == expected_reading(meter.profile), meter.model
            with pytest.raises(ModbusIOException):
                await read_block(client, 4, 0, 2, 99)       # nobody has address 99
            sample, _ = await snapshot(client, meters[0].profile, 11)
            assert as_dict(sample) == expected_reading(meters[0].profile)
    for transport in TRANSPORTS:
        run(body(transport))


def test_simulator_world_meter_as_source():
    from simulator.world import SimConnector, World

    async def body():
        world = World()
        connector = world.add(SimConnector(world, 1))
        world.bind()
        meter = SimulatedMeter("sdm630", source=connector.meter.sample)
        async with served("tcp", [meter]) as (_, client):
            return await snapshot(client, meter.profile, 1), connector.meter.sample()
    (sample, implausible), direct = run(body())
    assert implausible == []
    assert sample.voltage_dv == direct.voltage_dv and sample.current_ma == (0, 0, 0)
    assert sample.energy_import_wh == direct.energy_import_wh
    assert sample.power_factor_permille is None        # SimMeter has none: "not available"


# -- protocol errors ------------------------------------------------------------------------

def gap_reads(profile):
    """(function, address, count) reads that each cross from a mapped run into a gap."""
    image = MeterImage(profile)
    mapped = set(image.words(MeterSample()))
    reads = []
    for function, start, count in image.runs:
        if (function, start + count) not in mapped and start + count <= 0xFFFF:
            reads.append((function, start, count + 1))
        if start > 0 and (function, start - 1) not in mapped:
            reads.append((function, start - 1, 2))
    return reads


@pytest.mark.parametrize("model", MODELS)
def test_reads_crossing_a_gap_answer_illegal_data_address(model):
    profile = PROFILES[model]
    reads = gap_reads(profile)
    assert reads

    async def body():
        async with served("tcp", [SimulatedMeter(model, unit_id=1)]) as (_, client):
            codes = []
            for function, address, count in reads:
                response = await read_block(client, function, address, count, 1)
                codes.append(getattr(response, "exception_code", None))
            return codes
    assert run(body()) == [2] * len(reads)


@pytest.mark.parametrize("model", MODELS)
def test_function_codes_the_profile_does_not_read_answer_illegal_function(model):
    profile = PROFILES[model]
    functions = {row[1] for row in profile["rows"]}
    address = profile["rows"][0][2]

    async def body():
        async with served("tcp", [SimulatedMeter(model, unit_id=1)]) as (_, client):
            responses = [await read_block(client, function, address, 1, 1)
                         for function in {3, 4} - functions]
            responses.append(await client.read_coils(address, count=1, device_id=1))
            responses.append(await client.write_register(address, 1, device_id=1))
            return [(r.function_code, r.exception_code) for r in responses]
    for function_code, exception_code in run(body()):
        assert function_code & 0x80 and exception_code == 1


# -- faults ---------------------------------------------------------------------------------

def test_fault_table_is_complete():
    assert set(FAULTS) == {"no_answer", "crc_error", "exception", "garbage",
                           "energy_backwards", "absurd_power"}
    with pytest.raises(ValueError, match="known: absurd_power"):
        SimulatedMeter("sdm630").inject("smoke")


def test_no_answer_times_out_then_recovers():
    async def body(transport):
        meter = SimulatedMeter("sdm630", source=fixed(DATASHEET))
        async with served(transport, [meter], timeout=0.1) as (_, client):
            meter.inject("no_answer")
            began = time.monotonic()
            with pytest.raises(ModbusIOException):
                await read_block(client, 4, 0x48, 2, 1)
            assert time.monotonic() - began >= 0.1
            meter.clear("no_answer")
            assert not (await read_block(client, 4, 0x48, 2, 1)).isError()
    for transport in TRANSPORTS:
        run(body(transport))


def test_crc_error_over_rtu_is_discarded_and_retried():
    async def body():
        meter = SimulatedMeter("sdm630", source=fixed(DATASHEET))
        async with served("rtu", [meter], timeout=0.1, retries=1) as (_, client):
            meter.inject("crc_error")                       # every reply broken
            with pytest.raises(ModbusIOException):
                await read_block(client, 4, 0x48, 2, 1)
            meter.inject("crc_error", count=1)              # one broken reply: the retry wins
            response = await read_block(client, 4, 0x48, 2, 1)
            assert not response.isError() and response.retries == 1
            value = modbus_meter.decode_value(response.registers, "f32", "abcd", 3)
            assert value == DATASHEET["energy_import_wh"]
    run(body())


def test_crc_error_over_tcp_is_the_gateway_exception():
    async def body():
        meter = SimulatedMeter("sdm630")
        async with served("tcp", [meter]) as (_, client):
            meter.inject("crc_error", count=1)
            response = await read_block(client, 4, 0x48, 2, 1)
            assert response.isError() and response.exception_code == 0x0B
            assert not (await read_block(client, 4, 0x48, 2, 1)).isError()
    run(body())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exception_fault_answers_device_failure_or_the_given_code(transport):
    async def body():
        meter = SimulatedMeter("abb-b23")
        async with served(transport, [meter]) as (_, client):
            meter.inject("exception", count=1)
            first = await read_block(client, 3, 0x5000, 4, 1)
            meter.inject("exception", code=6, count=1)      # 06 server device busy
            second = await read_block(client, 3, 0x5000, 4, 1)
            third = await read_block(client, 3, 0x5000, 4, 1)
            return first.exception_code, second.exception_code, third.isError()
    assert run(body()) == (4, 6, False)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_garbage_is_not_taken_for_an_answer(transport):
    async def body():
        meter = SimulatedMeter("sdm630", source=fixed(DATASHEET), seed=3)
        async with served(transport, [meter], timeout=0.1) as (_, client):
            meter.inject("garbage", count=1)
            with pytest.raises(ModbusIOException):
                await read_block(client, 4, 0, 18, 1)
            sample, _ = await snapshot(client, meter.profile, 1)
            assert as_dict(sample) == expected_reading(meter.profile)
    run(body())


@pytest.mark.parametrize("model", MODELS)
def test_energy_backwards_and_absurd_power_are_served(model):
    profile = PROFILES[model]
    meter = SimulatedMeter(model, unit_id=1, source=fixed(DATASHEET))
    power_rows = [row for row in profile["rows"] if row[0] == "power"]

    async def body():
        async with served("tcp", [meter]) as (_, client):
            before, _ = await snapshot(client, profile, 1)
            meter.inject("energy_backwards", by_wh=1000)
            after, _ = await snapshot(client, profile, 1)
            meter.clear()
            meter.inject("absurd_power")
            absurd, implausible = await snapshot(client, profile, 1)
            rows = []
            for row in power_rows:
                _, function, address, kind, order, scale = row
                count = modbus_meter.row_registers(row)
                words = (await read_block(client, function, address, count, 1)).registers
                rows.append(modbus_meter.decode_value(words, kind, order, scale))
            return before, after, absurd, implausible, rows
    before, after, absurd, implausible, served_power = run(body())
    if before.energy_import_wh is not None:
        assert after.energy_import_wh == before.energy_import_wh - 1000
    for value, row in zip(served_power, power_rows):
        if row[3] in ("u16", "s16"):        # saturated at what the register holds
            assert value >= 3276
        else:
            assert value == 10 ** 7
            assert "power" in implausible and absurd.power_w is None


# -- pacing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("baud", (9600, 115200))
def test_paced_rtu_takes_the_wire_time(baud):
    profile = PROFILES["sdm630"]
    meter = SimulatedMeter("sdm630", source=fixed(DATASHEET))

    async def body():
        async with served("rtu", [meter], baud=baud, pace=True) as (server, client):
            timings = []
            for function, address, count in modbus_meter.plan(profile):
                began = time.perf_counter()
                response = await read_block(client, function, address, count, 1)
                timings.append((time.perf_counter() - began, count))
                assert not response.isError()
            sample, _ = await snapshot(client, profile, 1)
            return server.line, timings, sample
    line, timings, sample = run(body())
    assert as_dict(sample) == expected_reading(profile)
    assert line.char_time == pytest.approx(10 / baud)
    for elapsed, count in timings:
        wire = line.wire_time(8 + 5 + 2 * count)     # request + reply (addr fc n data crc)
        assert wire * 0.99 <= elapsed < wire * 2 + 0.1, (count, elapsed, wire)


def test_rs485_line_paces_bytes_in_both_directions():
    import os
    with Rs485Line(baud=9600, parity="E", stopbits=1) as line:
        assert line.char_time == pytest.approx(11 / 9600)
        client = os.open(line.client_path, os.O_RDWR | os.O_NOCTTY)
        device = os.open(line.device_path, os.O_RDWR | os.O_NOCTTY)
        try:
            began = time.perf_counter()
            os.write(client, bytes(range(20)))
            received = b""
            while len(received) < 20:
                received += os.read(device, 64)
            elapsed = time.perf_counter() - began
            os.write(device, b"\x01\x83\x02")
            back = b""
            while len(back) < 3:
                back += os.read(client, 64)
        finally:
            os.close(client)
            os.close(device)
    assert received == bytes(range(20)) and back == b"\x01\x83\x02"
    assert line.wire_time(20) * 0.99 <= elapsed < line.wire_time(20) * 2 + 0.1
    assert character_bits(8, "N", 2) == 11 and character_bits(7, "O", 1) == 10
    with pytest.raises(ValueError):
        character_bits(8, "X", 1)


# -- the register image on its own ----------------------------------------------------------

def test_word_order_of_64_bit_values_is_reversed_whole():
    profile = {"rows": (("energy_import", 3, 100, "u64", "cdab", 0),
                        ("energy_export", 3, 104, "u64", "abcd", 0))}
    words = MeterImage(profile).words(MeterSample(energy_import_wh=0x0001000200030004,
                                                  energy_export_wh=0x0001000200030004))
    assert [words[(3, 100 + i)] for i in range(4)] == [4, 3, 2, 1]
    assert [words[(3, 104 + i)] for i in range(4)] == [1, 2, 3, 4]


def test_out_of_range_fails_unless_saturating():
    profile = {"rows": (("power", 4, 0, "s16", "abcd", 0),)}
    image = MeterImage(profile)
    with pytest.raises(ValueError, match="does not fit"):
        image.words(MeterSample(power_w=40000))
    assert image.words(MeterSample(power_w=40000), saturate=True) == {(4, 0): 0x7FFF}
    assert image.words(MeterSample(power_w=-40000), saturate=True) == {(4, 0): 0x8001}


def test_scale_factor_register_is_served():
    profile = {"rows": (("power", 3, 40083, "s16", "abcd", "40084"),
                        ("energy_import", 3, 40093, "u32", "abcd", "40095:0"))}
    image = MeterImage(profile, scale_factors={40084: 1, 40095: 2})
    table = image.words(MeterSample(power_w=11040, energy_import_wh=1234500))
    assert table[(3, 40083)] == 1104 and table[(3, 40084)] == 1
    assert table[(3, 40095)] == 2
    sample = MeterSample()
    modbus_meter.decode(profile, table, sample)
    assert (sample.power_w, sample.energy_import_wh) == (11040, 1234500)


def test_steady_load_integrates_in_integers():
    now = [0]
    load = SteadyLoad(current_a=16, voltage_v=230, phases=3, clock_ns=lambda: now[0])
    for _ in range(36000):
        now[0] += 10 ** 8                   # read every 100 ms for an hour
        sample = load.sample()
    assert sample.energy_import_wh == 11040 and sample.power_w == 11040
    assert sample.power_w_phases == (3680, 3680, 3680)
    now[0] = 0
    one_phase = SteadyLoad(current_a=6.5, voltage_v=230, phases=1, power_factor_permille=950,
                           clock_ns=lambda: now[0])
    now[0] = 3 * 3600 * 10 ** 9
    sample = one_phase.sample()
    assert sample.current_ma == (6500, 0, 0) and sample.power_w_phases == (1420, 0, 0)
    assert sample.energy_import_wh == 6500 * 2300 * 950 * 3 // 10 ** 7


# -- `evse meter serve` ---------------------------------------------------------------------

async def serve_and_read(model, kind="tcp", **options):
    """Run `serve_forever` as `evse meter serve` does, take one snapshot through the line
    it prints, stop it: (that line, the sample)."""
    lines = []
    options.update({"tcp": "127.0.0.1:0"} if kind == "tcp" else {"pty": True, "pace": False})
    task = asyncio.create_task(serve_forever(model, print_fn=lines.append, **options))
    while not lines:
        await asyncio.sleep(0.005)
    where = lines[0].rsplit(" ", 1)[1]
    if kind == "tcp":
        client = AsyncModbusTcpClient("127.0.0.1", port=int(where.rsplit(":", 1)[1]))
    else:
        client = AsyncModbusSerialClient(where, framer=FramerType.RTU, baudrate=9600)
    await client.connect()
    sample, _ = await snapshot(client, PROFILES[model], 1)
    client.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return lines[0], sample


def test_serve_forever_over_tcp_and_pty():
    line, sample = run(serve_and_read("em340", "tcp"))
    assert line.startswith("meter em340 (unit 1) serving Modbus TCP on 127.0.0.1:")
    assert sample.voltage_dv == (2300, 2300, 2300) and sample.current_ma == (16000,) * 3
    line, sample = run(serve_and_read("em340", "pty"))
    assert "Modbus RTU (9600 8N1) on /dev/pts/" in line
    assert sample.power_w == 11040


def test_a_single_phase_meter_serves_one_phase():
    """The SDM120 measures one phase: by default its load is on one phase (16 A at 230 V is
    3680 W, not the 11040 W of three), and three phases are refused."""
    assert {model: meter_server.measured_phases(PROFILES[model]) for model in MODELS} == {
        model: 1 if model == "sdm120" else 3 for model in MODELS}
    _, single = run(serve_and_read("sdm120"))
    assert (single.power_w, single.current_ma[0], single.voltage_dv[0]) == (3680, 16000, 2300)
    _, three = run(serve_and_read("sdm630"))
    assert three.power_w == 11040
    _, one_of_three = run(serve_and_read("sdm630", phases=1))
    assert one_of_three.current_ma == (16000, 0, 0)
    for phases in (2, 3):
        with pytest.raises(ValueError, match="sdm120 is a single-phase meter: phases must "
                                             "be 1, got %d" % phases):
            run(serve_forever("sdm120", tcp="127.0.0.1:0", phases=phases))


@pytest.mark.parametrize("load, message", [
    ({"voltage_v": -230}, "voltage must be above 0 V, got -230 V"),
    ({"voltage_v": float("nan")}, "voltage must be above 0 V"),
    ({"current_a": -16}, "current must be 0 A or more, got -16 A"),
    # the bound is what a reading can plausibly be (hal/modbus_meter.py), for every model
    ({"current_a": 100000}, "sdm630 in front of 100000 A on 3 phases at 230 V would read "
                            "current_l1 = 100000 A, outside what a meter reading can "
                            "plausibly be \\(-10000..10000 A\\)"),
    ({"current_a": 2000}, "power = 1380000 W, outside .* \\(-1000000..1000000 W\\)"),
    ({"voltage_v": 1200}, "voltage_l1 = 1200 V, outside .* \\(0..1000 V\\)"),
])
def test_serve_forever_refuses_a_load_no_meter_shows(load, message):
    with pytest.raises(ValueError, match=message):
        run(serve_forever("sdm630", tcp="127.0.0.1:0", **load))


def test_serve_forever_says_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as caught:
            run(serve_forever("sdm630", tcp="127.0.0.1:%d" % port))
    assert str(caught.value) == "cannot listen on 127.0.0.1:%d: port %d is in use (another " \
        "server listens there; port 0 picks a free one)" % (port, port)


def test_serve_forever_rejects_bad_arguments():
    with pytest.raises(ValueError, match="known: .*sdm630"):
        run(serve_forever("sdm999", tcp="127.0.0.1:0"))
    with pytest.raises(ValueError, match="exactly one"):
        run(serve_forever("sdm630"))
    with pytest.raises(ValueError, match="HOST:PORT"):
        run(serve_forever("sdm630", tcp="localhost"))
    assert meter_server.parse_host_port("[::1]:1502") == ("::1", 1502)

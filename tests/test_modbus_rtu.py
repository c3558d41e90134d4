"""hal/modbus_rtu.py on a real serial line: the simulated meters (simulator/meter_server.py)
served on a pty pair paced at the line's baud rate, the master reading through a small
UART adapter over pyserial, as machine.UART would be read on a microcontroller.

Every profile must read back exactly what hal/modbus_client.py (pymodbus) reads from the
same meter, and the server's injected faults (CRC, exception, silence, garbage) must become
the right MeterError. The frame and timing logic itself is tested portably, in virtual time,
in tests/portable/test_modbus_rtu.py.
"""
import asyncio
import time

import pytest
import serial

from hal import modbus_rtu
from hal.interfaces import MeterError, MeterSample
from hal.meter_profiles import PROFILES
from hal.modbus_client import Bus, ModbusMeter
from hal.modbus_rtu import (ModbusExceptionResponse, ModbusFrameError, ModbusTimeout,
                            RtuMaster, RtuMeter)
from simulator.meter_server import SimulatedMeter, start_rtu

MODELS = sorted(PROFILES)
FIELDS = ("energy_import_wh", "energy_export_wh", "power_w", "power_w_phases", "current_ma",
          "voltage_dv", "frequency_mhz", "power_factor_permille")
# a 3-phase 16 A charge on a datasheet's test bench
DATASHEET = {
    "energy_import_wh": 1234500, "energy_export_wh": 5600, "power_w": 11040,
    "power_w_phases": (3680, 3657, 3703), "current_ma": (16000, 15900, 16100),
    "voltage_dv": (2300, 2310, 2290), "frequency_mhz": 50000, "power_factor_permille": 990,
}


class SerialUart:
    """machine.UART's interface over pyserial: write(bytes), any(), read(n). The frame
    format stays 8N1 on the tty: a pty refuses parity settings (EINVAL) and carries bytes
    anyway; the line relay paces them at the configured format's character time."""

    def __init__(self, path, baud=9600):
        self.port = serial.Serial(path, baudrate=baud, bytesize=8, timeout=0,
                                  write_timeout=1)

    def write(self, data):
        return self.port.write(data)

    def any(self):
        return self.port.in_waiting

    def read(self, count):
        return self.port.read(count) or None

    def close(self):
        self.port.close()


def fixed(values):
    return lambda: MeterSample(**values)


def as_dict(sample):
    return {field: getattr(sample, field) for field in FIELDS}


def run(coroutine, timeout=60):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def read_error(meter):
    try:
        await meter.read()
    except MeterError as error:
        return error
    raise AssertionError("the read did not fail")


# -- every profile, as pymodbus reads it ---------------------------------------------------------

def test_every_profile_reads_back_exactly_as_through_modbus_client():
    meters = [SimulatedMeter(model, unit_id=index + 1, source=fixed(DATASHEET))
              for index, model in enumerate(MODELS)]

    async def body():
        server = await start_rtu(meters, baud=19200, pace=True)
        try:
            uart = SerialUart(server.client_path, 19200)
            master = RtuMaster(uart, 19200, timeout_ms=500, retries=0, link="pty")
            ours = {}
            for index, model in enumerate(MODELS):
                ours[model] = as_dict(await RtuMeter(PROFILES[model], index + 1, master,
                                                     model=model).read())
            uart.close()
            bus = Bus(serial=server.client_path, baud=19200, timeout_ms=500, retries=0)
            theirs = {}
            for index, model in enumerate(MODELS):
                theirs[model] = as_dict(await ModbusMeter(PROFILES[model], index + 1,
                                                          bus).read())
            bus.close()
            return ours, theirs
        finally:
            await server.stop()

    ours, theirs = run(body())
    for model in MODELS:
        assert ours[model] == theirs[model], model
        assert ours[model]["energy_import_wh"] is not None, model     # something was read


@pytest.mark.parametrize("model, baud, parity, stopbits", [
    ("sdm120", 2400, "N", 1),           # the SDM120's factory setting
    ("em340", 9600, "N", 2),
])
def test_a_meter_at_slow_line_settings(model, baud, parity, stopbits):
    """The silence and the wire time follow the baud rate and frame format (the pty is paced
    to them). Parity cannot be tried here: start_rtu's server cannot open a pty with even or
    odd parity (pyserial's tcsetattr fails with EINVAL there)."""
    unit = PROFILES[model]["defaults"]["id"]
    meter = SimulatedMeter(model, unit_id=unit, source=fixed(DATASHEET))

    async def body():
        server = await start_rtu([meter], baud=baud, parity=parity, stopbits=stopbits,
                                 pace=True)
        uart = SerialUart(server.client_path, baud)
        try:
            master = RtuMaster(uart, baud, parity, stopbits, retries=0, link="pty")
            reader = RtuMeter(PROFILES[model], unit, master, model=model)
            started = time.monotonic()
            sample = await reader.read()
            return sample, time.monotonic() - started, reader.blocks
        finally:
            uart.close()
            await server.stop()

    sample, took_s, blocks = run(body())
    assert sample.energy_import_wh == DATASHEET["energy_import_wh"]
    assert sample.voltage_dv[0] == DATASHEET["voltage_dv"][0]
    wire = sum(modbus_rtu.wire_us(8 + 5 + 2 * count, baud, parity, stopbits)
               for _, _, count in blocks) / 1e6
    assert took_s >= wire                     # never faster than the line


# -- faults from the simulated meter --------------------------------------------------------------

class Rig:
    """One simulated SDM630 at unit 1 on a paced 19200 Bd pty, and our meter reading it."""

    def __init__(self, timeout_ms=150, retries=0, backoff_ms=10):
        self.timeout_ms, self.retries, self.backoff_ms = timeout_ms, retries, backoff_ms
        self.sim = SimulatedMeter("sdm630", unit_id=1, source=fixed(DATASHEET))

    async def __aenter__(self):
        self.server = await start_rtu([self.sim], baud=19200, pace=True)
        self.uart = SerialUart(self.server.client_path, 19200)
        self.master = RtuMaster(self.uart, 19200, timeout_ms=self.timeout_ms,
                                retries=self.retries, backoff_ms=self.backoff_ms,
                                link="uart2")
        self.meter = RtuMeter(PROFILES["sdm630"], 1, self.master, model="sdm630")
        return self

    async def __aexit__(self, *exc):
        self.uart.close()
        await self.server.stop()


def test_a_crc_error_is_retried_and_a_lasting_one_reported():
    async def body():
        async with Rig(retries=1) as rig:
            rig.sim.inject("crc_error", count=1)
            sample = await rig.meter.read()
            rig.sim.inject("crc_error")
            error = await read_error(rig.meter)
            rig.sim.clear()
            again = await rig.meter.read()
            return sample, error, again

    sample, error, again = run(body())
    assert as_dict(sample) == as_dict(again)
    assert isinstance(error, ModbusFrameError)
    assert str(error).startswith("sdm630: uart2 19200 8N1 id 1: CRC error in the answer to "
                                 "function 04 at 0x0000 (18 registers)")
    assert str(error).endswith("(2 attempts)")


def test_exception_answers_name_their_code_and_only_transient_ones_are_retried():
    async def body():
        async with Rig(retries=2) as rig:
            rig.sim.inject("exception")                        # 04 server device failure
            failure = await read_error(rig.meter)
            asked_04 = rig.sim.requests
            rig.sim.inject("exception", code=2)
            address = await read_error(rig.meter)
            asked_02 = rig.sim.requests - asked_04
            rig.sim.clear()
            return failure, asked_04, address, asked_02, await rig.meter.read()

    failure, asked_04, address, asked_02, sample = run(body())
    assert isinstance(failure, ModbusExceptionResponse) and failure.code == 4
    assert str(failure) == ("sdm630: uart2 19200 8N1 id 1: exception 04 server device failure "
                            "at 0x0000 (function 04, 18 registers) (3 attempts)")
    assert asked_04 == 3
    assert isinstance(address, ModbusExceptionResponse) and address.code == 2
    assert "exception 02 illegal data address" in str(address) and asked_02 == 1
    assert sample.energy_import_wh == DATASHEET["energy_import_wh"]


def test_silence_is_a_timeout_and_the_line_works_again_after():
    async def body():
        async with Rig(timeout_ms=150) as rig:
            rig.sim.inject("no_answer")
            started = time.monotonic()
            error = await read_error(rig.meter)
            took_s = time.monotonic() - started
            rig.sim.clear()
            return error, took_s, await rig.meter.read()

    error, took_s, sample = run(body())
    assert isinstance(error, ModbusTimeout)
    assert str(error) == ("sdm630: uart2 19200 8N1 id 1: timeout: no answer to function 04 at "
                          "0x0000 (18 registers) within 150 ms")
    assert 0.15 <= took_s < 1.0
    assert sample.power_w == DATASHEET["power_w"]


def test_garbage_and_an_absent_unit():
    async def body():
        async with Rig() as rig:
            rig.sim.inject("garbage", count=1)
            garbled = await read_error(rig.meter)
            nobody = await read_error(RtuMeter(PROFILES["sdm630"], 9, rig.master, "absent"))
            return garbled, nobody, await rig.meter.read()

    garbled, nobody, sample = run(body())
    assert isinstance(garbled, ModbusFrameError) and "sdm630: uart2" in str(garbled)
    assert isinstance(nobody, ModbusTimeout) and str(nobody).startswith(
        "absent: uart2 19200 8N1 id 9: timeout")
    assert sample.frequency_mhz == DATASHEET["frequency_mhz"]


def test_implausible_values_fail_the_sample():
    async def body():
        async with Rig() as rig:
            rig.sim.inject("absurd_power", count=4)            # every block of one snapshot
            return await read_error(rig.meter)

    error = run(body())
    assert type(error) is MeterError
    assert str(error).startswith("sdm630: uart2 19200 8N1 id 1: implausible power")

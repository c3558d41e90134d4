"""hal/modbus_client.py over real links: Modbus/TCP on 127.0.0.1 and RTU on a pty pair.

The meters here are pymodbus servers whose register images are packed straight from the
profile rows with `struct` (independently of the decoder), with hooks to delay answers,
answer exceptions, corrupt or drop frames on the wire, and count requests in flight; and,
for meters slower than the master's timeout, small hand-written ones (`SlowMeter` on a pty,
`SlowTcpMeter`) that answer in order, or with the right transaction id, as real ones do.
"""
import asyncio
import collections
import functools
import os
import re
import select
import struct
import threading
import time
import tty

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.interfaces import MeterError
from hal.meter_profiles import PROFILES
from hal.modbus_client import (Bus, Buses, ModbusExceptionResponse, ModbusFrameError,
                               ModbusLinkError, ModbusMeter, ModbusTimeout,
                               exception_text, meter_from_config, parse_host_port,
                               quiet_time_s)
from hal.modbus_rtu import crc_ok, with_crc

# the values a meter measures, in the integer units of MeterSample
BASE = {
    "voltage_l1": 2301, "voltage_l2": 2302, "voltage_l3": 2299,
    "current_l1": 16012, "current_l2": 15990, "current_l3": 0,
    "power_l1": 3680, "power_l2": 3565, "power_l3": 0, "power": 7245,
    "power_factor": 987, "frequency": 50010,
    "energy_import": 1234567, "energy_export": 4321,
}
FIELDS = {  # quantity -> (MeterSample field, phase)
    "voltage_l1": ("voltage_dv", 0), "voltage_l2": ("voltage_dv", 1),
    "voltage_l3": ("voltage_dv", 2), "current_l1": ("current_ma", 0),
    "current_l2": ("current_ma", 1), "current_l3": ("current_ma", 2),
    "power_l1": ("power_w_phases", 0), "power_l2": ("power_w_phases", 1),
    "power_l3": ("power_w_phases", 2), "power": ("power_w", None),
    "power_factor": ("power_factor_permille", None), "frequency": ("frequency_mhz", None),
    "energy_import": ("energy_import_wh", None), "energy_export": ("energy_export_wh", None),
}
PACK = {"f32": ">f", "u32": ">I", "s32": ">i", "u64": ">Q", "s64": ">q", "u16": ">H",
        "s16": ">h"}


# ------------------------------------------------------------------ register images

def _power_of(scale):
    """(power of ten, scale-factor register or None) of a row's scale."""
    if isinstance(scale, str):
        address, _, power = scale.partition(":")
        return int(power or "0"), int(address, 0)
    return scale, None


def expected_values(profile, values=BASE):
    """What the decoder must give: the value, cut to the register's resolution."""
    out = {}
    for quantity, _, _, kind, _, scale in profile["rows"]:
        power, _ = _power_of(scale)
        value = values[quantity]
        if kind != "f32" and power > 0:
            value -= value % 10 ** power
        out[quantity] = value
    return out


def words(kind, order, raw):
    data = struct.pack(PACK[kind], raw)
    regs = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
    return regs[::-1] if order == "cdab" else regs


def image(profile, values=BASE, raw_override=None):
    """{function: {address: word}} of a meter showing `values` (integer units)."""
    regs = {3: {}, 4: {}}
    for quantity, function, address, kind, order, scale in profile["rows"]:
        power, sf_address = _power_of(scale)
        if sf_address is not None:
            regs[function][sf_address] = 0
        value = values[quantity]
        if raw_override and quantity in raw_override:
            raw = raw_override[quantity]
        elif kind == "f32":
            raw = value / 10 ** power
        else:
            raw = value // 10 ** power if power >= 0 else value * 10 ** -power
        for offset, word in enumerate(words(kind, order, raw)):
            regs[function][address + offset] = word
    return regs


def simdata(regs):
    """SimData runs of contiguous registers (gaps stay unmapped: exception 02 there)."""
    runs = []
    for address in sorted(regs):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(regs[address])
        else:
            runs.append((address, [regs[address]]))
    return [SimData(a, values=v, datatype=DataType.REGISTERS) for a, v in runs]


class Faults:
    """What one simulated unit does wrong, and what it saw."""

    def __init__(self):
        self.delay_s = 0.0          # answer this late ...
        self.delayed = 0            # ... for this many requests (-1: all)
        self.codes = []             # answer these exception codes to the next requests
        self.slow = {}              # (function, address) -> [delays of its next requests]
        self.calls = []             # (function, address, count)
        self.in_flight = 0
        self.max_in_flight = 0


async def _action(faults, function, _start, address, count, _regs, _set_values):
    faults.calls.append((function, address, count))
    faults.in_flight += 1
    faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
    try:
        if faults.slow.get((function, address)):
            await asyncio.sleep(faults.slow[(function, address)].pop(0))
        elif faults.delayed:
            faults.delayed -= 1 if faults.delayed > 0 else 0
            await asyncio.sleep(faults.delay_s)
        else:
            await asyncio.sleep(0.002)      # a device takes a moment: overlap would show
        code = faults.codes.pop(0) if faults.codes else None
        return None if code is None else ExcCodes(code)
    finally:
        faults.in_flight -= 1


def device(unit, regs, faults):
    bits = [SimData(0, values=False, datatype=DataType.BITS)]
    holding = simdata(regs[3]) or [SimData(0xFFF0, values=0, datatype=DataType.REGISTERS)]
    inputs = simdata(regs[4]) or [SimData(0xFFF0, values=0, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=(bits, bits, holding, inputs),
                     action=functools.partial(_action, faults))


class Relay:
    """Two pty pairs and a relay thread between their masters: the meter server opens
    `device_path`, the client `client_path`. It logs every chunk (time, "C" client->device
    or "D" device->client, bytes) and can corrupt or drop the device's next frames."""

    def __init__(self):
        self.log = []
        self.corrupt = 0
        self.drop = 0
        self._stop = False

    def start(self):
        self.fds = []
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self.fds += [master, slave]
            ends.append((master, os.ttyname(slave)))
        (self._device, self.device_path), (self._client, self.client_path) = ends
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            ready, _, _ = select.select([self._device, self._client], [], [], 0.02)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                source = "C" if fd == self._client else "D"
                self.log.append((time.monotonic(), source, data))
                if source == "D" and self.drop:
                    self.drop -= 1
                    continue
                if source == "D" and self.corrupt:
                    self.corrupt -= 1
                    data = data[:-1] + bytes([data[-1] ^ 0x5A])
                os.write(self._device if source == "C" else self._client, data)

    def stop(self):
        self._stop = True
        self._thread.join()
        for fd in self.fds:
            os.close(fd)


class FakeLine:
    """Simulated meters {unit: (profile, values)} on TCP or on RTU over a pty relay."""

    def __init__(self, kind, meters, raw_override=None):
        self.kind = kind
        self.faults = {unit: Faults() for unit in meters}
        self.devices = [device(unit, image(profile, values, raw_override), self.faults[unit])
                        for unit, (profile, values) in meters.items()]
        self.relay = None
        self.server = None
        self.port = 0
        self.requests = []          # (unit, function, address, count) as the server got them

    def _silence_others(self, sending, data):
        # pymodbus 3.16.1 answers exception 04 for an unknown unit id even with
        # ignore_missing_devices (SimCore KeyError); a real RS-485 line stays silent
        if sending and data and data[0] not in self.faults:
            return b""
        return data

    def _trace_pdu(self, sending, pdu):
        if not sending:
            self.requests.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", None),
                                  getattr(pdu, "count", None)))
        # a Modbus/TCP gateway answers 0B for a unit that is not there
        elif isinstance(pdu, ExceptionResponse) and pdu.dev_id not in self.faults:
            pdu.exception_code = 0x0B
        return pdu

    async def start(self):
        if self.kind == "tcp":
            self.server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port),
                                          trace_pdu=self._trace_pdu)
            await self.server.serve_forever(background=True)
            self.port = self.server.transport.sockets[0].getsockname()[1]
        else:
            if self.relay is None:
                self.relay = Relay().start()
            self.server = ModbusSerialServer(
                self.devices, port=self.relay.device_path, baudrate=9600,
                ignore_missing_devices=True, trace_packet=self._silence_others,
                trace_pdu=self._trace_pdu)
            await self.server.serve_forever(background=True)
        return self

    def link(self):
        return {"tcp": "127.0.0.1:%d" % self.port} if self.kind == "tcp" else \
            {"serial": self.relay.client_path}

    def bus(self, **settings):
        return Bus(**self.link(), **settings)

    async def stop_server(self):
        await self.server.shutdown()
        await asyncio.sleep(0.01)

    async def stop(self):
        await self.stop_server()
        if self.relay is not None:
            self.relay.stop()


def read_answer(regs, request_pdu):
    """The answer PDU to an FC03/FC04 request PDU from a register image ({function:
    {address: word}}): the registers, or exception 02 where one is not mapped."""
    function = request_pdu[0]
    address, count = struct.unpack(">HH", request_pdu[1:5])
    try:
        values = [regs[function][address + i] for i in range(count)]
    except KeyError:
        return bytes((function | 0x80, 2))
    return bytes((function, 2 * count)) + struct.pack(">%dH" % count, *values)


class Lateness:
    """How late a slow meter answers: the n-th request `delays[n]` seconds, `delay_s` once
    the list is used up."""

    def __init__(self, delay_s, delays=()):
        self.delay_s, self.delays = delay_s, list(delays)

    def next(self):
        return self.delays.pop(0) if self.delays else self.delay_s


class SlowMeter(Lateness):
    """A meter that answers late, on a pty pair (the client opens `path`), with real RTU
    frames. One request at a time, as a meter's one CPU does: a request arriving while it
    is busy waits its turn, so a slow meter's answers fall further and further behind a
    master that does not wait. `log`: (time, "C" request or "D" answer, frame)."""

    def __init__(self, regs, delay_s, delays=(), unit=1):
        super().__init__(delay_s, delays)
        self.regs, self.unit = regs, unit
        self.log = []
        self._stop = False

    def start(self):
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        received = b""
        queued = collections.deque()        # (when, answer)
        busy_until = 0.0
        while not self._stop:
            wait = 0.005 if not queued else max(0.0, min(0.005, queued[0][0] - time.monotonic()))
            if select.select([self._master], [], [], wait)[0]:
                received += os.read(self._master, 256)
            while len(received) >= 8:
                request, received = received[:8], received[8:]
                if not crc_ok(request) or request[0] != self.unit:
                    received = b""                      # noise, or not for us
                    break
                now = time.monotonic()
                self.log.append((now, "C", request))
                busy_until = max(now, busy_until) + self.next()
                queued.append((busy_until, with_crc(
                    bytes((self.unit,)) + read_answer(self.regs, request[1:6]))))
            while queued and queued[0][0] <= time.monotonic():
                answer = queued.popleft()[1]
                self.log.append((time.monotonic(), "D", answer))
                os.write(self._master, answer)

    def stop(self):
        self._stop = True
        self._thread.join()
        os.close(self._master)
        os.close(self._slave)


class SlowTcpMeter(Lateness):
    """A Modbus/TCP meter (or gateway) answering each request late, independently of the
    others, with the request's transaction id as the protocol says. (pymodbus 3.16's own
    server cannot stand in: an answer delayed in its datastore hook goes out with the
    transaction id of the request that came in meanwhile.) `log`: (time, "C" request or
    "D" answer, transaction id)."""

    def __init__(self, regs, delay_s, delays=()):
        super().__init__(delay_s, delays)
        self.regs = regs
        self.log = []

    async def start(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                pdu = read_answer(self.regs, await reader.readexactly(length - 1))
                self.log.append((time.monotonic(), "C", tid))
                loop.call_later(self.next(), self._answer, writer, tid, struct.pack(
                    ">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _answer(self, writer, tid, frame):
        self.log.append((time.monotonic(), "D", tid))
        writer.write(frame)

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()


def run(coroutine_function, *args):
    return asyncio.run(asyncio.wait_for(coroutine_function(*args), 30))


def fields(sample):
    """{quantity: value} of a MeterSample, in the test's own field map."""
    out = {}
    for quantity, (field, phase) in FIELDS.items():
        value = getattr(sample, field)
        out[quantity] = value if phase is None or value is None else value[phase]
    return out


LINKS = ("tcp", "rtu")


# ------------------------------------------------------------------------- snapshots

@pytest.mark.parametrize("model", sorted(PROFILES))
def test_snapshot_is_exact_over_tcp(model):
    profile = PROFILES[model]

    async def scenario():
        line = await FakeLine("tcp", {3: (profile, BASE)}).start()
        bus = line.bus()
        try:
            meter = ModbusMeter(profile, 3, bus, model=model, clock=lambda: 1234)
            sample = await meter.read()
        finally:
            bus.close()
            await line.stop()
        return sample

    sample = run(scenario)
    got = fields(sample)
    expected = expected_values(profile)
    assert {q: got[q] for q in expected} == expected
    assert all(got[q] is None for q in FIELDS if q not in expected)
    assert sample.timestamp_ms == 1234


@pytest.mark.parametrize("model", [m for m in ("sdm630", "em340", "abb-b23") if m in PROFILES])
def test_snapshot_is_exact_over_rtu(model):
    profile = PROFILES[model]

    async def scenario():
        line = await FakeLine("rtu", {7: (profile, BASE)}).start()
        bus = line.bus(baud=9600)
        try:
            sample = await ModbusMeter(profile, 7, bus).read()
        finally:
            bus.close()
            await line.stop()
        return sample, line

    sample, line = run(scenario)
    expected = expected_values(profile)
    assert {q: fields(sample)[q] for q in expected} == expected
    # one request per planned block, each answered: nothing repeated, nothing extra
    requests = [data for _, source, data in line.relay.log if source == "C"]
    assert len(b"".join(requests)) == 8 * len(line.faults[7].calls)


def test_snapshot_over_a_paced_9600_line():
    """On a line with real byte timing (simulator/rs485.py), a snapshot takes its wire time."""
    rs485 = pytest.importorskip("simulator.rs485")
    profile = PROFILES["sdm630"]

    async def scenario():
        with rs485.Rs485Line(baud=9600, parity="N", stopbits=1, pace=True) as wire:
            faults = Faults()
            server = ModbusSerialServer([device(1, image(profile), faults)],
                                        port=wire.device_path, baudrate=9600)
            await server.serve_forever(background=True)
            bus = Bus(serial=wire.client_path, baud=9600)
            try:
                meter = ModbusMeter(profile, 1, bus)
                await meter.read()
                started = time.monotonic()
                sample = await meter.read()
                elapsed = time.monotonic() - started
            finally:
                bus.close()
                await server.shutdown()
            frames = sum(8 + 5 + 2 * count for _, _, count in meter.blocks)
            return sample, elapsed, wire.wire_time(frames)

    sample, elapsed, wire_s = run(scenario)
    assert fields(sample)["voltage_l1"] == BASE["voltage_l1"]
    assert wire_s <= elapsed < wire_s * 1.5 + 0.05


# ------------------------------------------------------------------- one line, two meters

@pytest.mark.parametrize("kind", LINKS)
def test_two_meters_on_one_bus_never_overlap(kind):
    one = dict(BASE, voltage_l1=2301, energy_import=111000)
    two = dict(BASE, voltage_l1=2222, energy_import=222000)
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine(kind, {1: (profile, one), 2: (profile, two)}).start()
        buses = Buses()
        config = dict(model="sdm630", baud=9600, **line.link())
        first = meter_from_config(dict(config, id=1), buses)
        second = meter_from_config(dict(config, id=2), buses)
        try:
            samples = await asyncio.gather(*[m.read() for _ in range(5)
                                             for m in (first, second)])
        finally:
            buses.close()
            await line.stop()
        return first, second, samples, line

    first, second, samples, line = run(scenario)
    assert first.bus is second.bus
    assert [s.energy_import_wh for s in samples] == [111000, 222000] * 5
    assert [s.voltage_dv[0] for s in samples] == [2301, 2222] * 5
    assert max(f.max_in_flight for f in line.faults.values()) == 1
    if kind == "rtu":
        # on the wire: request, answer, request, answer... with the RTU silence between
        log = [entry for entry in line.relay.log]
        turns = [source for _, source, _ in log]
        squeezed = [s for i, s in enumerate(turns) if i == 0 or turns[i - 1] != s]
        assert squeezed == ["C", "D"] * (len(squeezed) // 2)
        assert len(squeezed) == 2 * 5 * 2 * len(first.blocks)
        quiet = quiet_time_s(9600)
        for (t0, s0, _), (t1, s1, _) in zip(log, log[1:]):
            if s0 == "D" and s1 == "C":
                assert t1 - t0 >= quiet * 0.9


def test_buses_share_by_link_and_refuse_a_second_line_setting(tmp_path):
    buses = Buses()
    a = meter_from_config({"model": "sdm630", "tcp": "127.0.0.1:1502", "id": 1}, buses)
    b = meter_from_config({"model": "sdm630", "tcp": "127.0.0.1:1502", "id": 2,
                           "timeout_ms": 3000}, buses)
    c = meter_from_config({"model": "sdm630", "tcp": "127.0.0.1:1503"}, buses)
    assert a.bus is b.bus is not c.bus
    assert a.bus.timeout_ms == 3000         # the slowest meter on a line sets the patience
    device = str(tmp_path / "ttyUSB0")
    s1 = meter_from_config({"model": "sdm630", "serial": device, "baud": 9600}, buses)
    s2 = meter_from_config({"model": "sdm630", "serial": device, "baud": 9600, "id": 2},
                           buses)
    assert s1.bus is s2.bus
    with pytest.raises(ValueError, match="already in use at 9600 8N1.*19200 8E1"):
        meter_from_config({"model": "sdm630", "serial": device, "baud": 19200,
                           "parity": "E"}, buses)
    assert len(buses.all()) == 3


# ------------------------------------------------------------------------ failures

@pytest.mark.parametrize("kind", LINKS)
def test_timeout_is_a_meter_error_within_its_bound(kind):
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine(kind, {1: (profile, BASE)}).start()
        line.faults[1].delay_s, line.faults[1].delayed = 1.0, -1
        bus = line.bus(timeout_ms=150, retries=1, backoff_ms=20)
        started = time.monotonic()
        try:
            with pytest.raises(ModbusTimeout) as caught:
                await ModbusMeter(profile, 1, bus, model="sdm630").read()
        finally:
            elapsed = time.monotonic() - started
            bus.close()
            await line.stop()
        return caught.value, elapsed, bus

    error, elapsed, bus = run(scenario)
    assert isinstance(error, MeterError)
    # two attempts of 150 ms; between them the 20 ms back-off, or on RTU the whole timeout
    # of silence a late answer is given to go by
    assert bus.worst_case_s() == pytest.approx(0.32 if kind == "tcp" else 0.45)
    assert 0.3 <= elapsed <= bus.worst_case_s() + 0.15
    assert "timeout: no answer to function 04 at 0x0000 (18 registers) within 150 ms " \
           "(2 attempts)" in str(error)
    assert str(error).startswith("sdm630: ")


@pytest.mark.parametrize("kind", LINKS)
def test_retries_then_success(kind):
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine(kind, {1: (profile, BASE)}).start()
        faults = line.faults[1]
        faults.delay_s, faults.delayed = 0.5, 2         # two attempts time out ...
        bus = line.bus(timeout_ms=100, retries=2, backoff_ms=10)
        meter = ModbusMeter(profile, 1, bus)
        try:
            sample = await meter.read()                 # ... the third one answers
            calls = len(faults.calls)
            faults.codes = [ExcCodes.DEVICE_BUSY]       # busy is worth asking again
            await meter.read()
            busy_calls = len(faults.calls) - calls
        finally:
            bus.close()
            await line.stop()
        return sample, calls, busy_calls, meter

    sample, calls, busy_calls, meter = run(scenario)
    assert fields(sample)["energy_import"] == BASE["energy_import"]
    assert calls == len(meter.blocks) + 2
    assert busy_calls == len(meter.blocks) + 1


@pytest.mark.parametrize("kind", LINKS)
def test_exception_response_names_its_code_and_is_not_retried(kind):
    profile = PROFILES["sdm630"]
    served = dict(profile, rows=tuple(r for r in profile["rows"] if r[0] != "energy_export"))

    async def scenario():
        line = await FakeLine(kind, {1: (served, BASE)}).start()
        bus = line.bus(timeout_ms=300)
        try:
            with pytest.raises(ModbusExceptionResponse) as caught:
                await ModbusMeter(profile, 1, bus, model="sdm630").read()
            line.faults[1].codes = [ExcCodes.ILLEGAL_FUNCTION]
            with pytest.raises(ModbusExceptionResponse) as illegal:
                await ModbusMeter(served, 1, bus, model="sdm630").read()
        finally:
            bus.close()
            await line.stop()
        return caught.value, illegal.value, line.requests

    error, illegal, requests = run(scenario)
    assert error.code == 2
    # sdm630's last block is frequency + import + export: 0x0046, 6 registers
    assert "exception 02 illegal data address at 0x0046 (function 04, 6 registers)" \
        in str(error)
    assert requests.count((1, 4, 0x46, 6)) == 1      # asked once: the answer will not change
    assert illegal.code == 1 and "exception 01 illegal function at 0x0000" in str(illegal)


def test_crc_error_is_a_frame_error_and_retried():
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine("rtu", {1: (profile, BASE)}).start()
        bus = line.bus(timeout_ms=150, retries=0)
        meter = ModbusMeter(profile, 1, bus, model="sdm630")
        try:
            line.relay.corrupt = 1
            with pytest.raises(ModbusFrameError) as caught:
                await meter.read()
            bus.retries = 1
            line.relay.corrupt = 1
            sample = await meter.read()
        finally:
            bus.close()
            await line.stop()
        return caught.value, sample

    error, sample = run(scenario)
    assert "no valid answer" in str(error) and "CRC" in str(error)
    assert "41 bytes received (01 04 24" in str(error)
    assert sample.energy_import_wh == BASE["energy_import"]


def test_a_late_answer_is_not_taken_for_the_next_block():
    """RTU answers carry no request number. Power (0x0034) answers after its timeout, while
    power factor (0x003E, also 2 registers) is being asked for: taken for it, the power
    factor would read 7245 (implausible) and the snapshot would be wrong."""
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine("rtu", {1: (profile, BASE)}).start()
        line.faults[1].slow = {(4, 0x34): [0.25], (4, 0x3E): [0.1]}
        bus = line.bus(timeout_ms=150, retries=1, backoff_ms=10)
        try:
            sample = await ModbusMeter(profile, 1, bus).read()
        finally:
            bus.close()
            await line.stop()
        return sample

    sample = run(scenario)
    assert (sample.power_w, sample.power_factor_permille) == (7245, 987)


@pytest.mark.parametrize("model, lateness", [
    ("wago-879", 1.1), ("wago-879", 1.6), ("em24", 1.3), ("iem3155", 1.3)])
def test_a_meter_slower_than_the_timeout_gives_a_timeout_never_wrong_values(model, lateness):
    """A meter answering `lateness` timeouts late (less than two: the guarantee's bound):
    each late answer must go by before anything else is asked. Taken for the next block
    of the same length (as it was), the WAGO 879 read the power factor (1.000) as the
    import energy and returned it."""
    profile = PROFILES[model]
    timeout_s = 0.2

    async def scenario():
        meter = SlowMeter(image(profile), delay_s=lateness * timeout_s).start()
        bus = Bus(serial=meter.path, timeout_ms=timeout_s * 1000, retries=2, backoff_ms=10)
        reader = ModbusMeter(profile, 1, bus, model=model)
        try:
            with pytest.raises(ModbusTimeout) as caught:
                await reader.read()
        finally:
            bus.close()
            meter.stop()
        return caught.value, reader.blocks[0], meter.log

    error, (function, address, count), log = run(scenario)
    assert "timeout: no answer to function %02d at 0x%04X (%d registers) within 200 ms" % (
        function, address, count) in str(error) and str(error).endswith("(3 attempts)")
    late_ms = int(re.search(r"a late answer came (\d+) ms after the attempt before: a meter "
                            r"this slow needs a longer timeout", str(error)).group(1))
    assert round(lateness * 200) - 1 <= late_ms < lateness * 200 + 50
    # every request went out only after the answer before it, and a quiet timeout after it
    turns = [source for _, source, _ in log]
    assert turns[:4] == ["C", "D", "C", "D"]
    for (answered, source, _), (asked, next_source, _) in zip(log, log[1:]):
        if (source, next_source) == ("D", "C"):
            assert asked - answered >= timeout_s * 0.95


def test_a_meter_late_once_is_read_right_after_its_late_answer_went_by():
    """One late answer (a meter busy for a moment): thrown away, the retry waits until
    the line has been quiet for a timeout, and the snapshot is exact."""
    profile = PROFILES["wago-879"]

    async def scenario():
        meter = SlowMeter(image(profile), delay_s=0.002, delays=[0.3]).start()
        bus = Bus(serial=meter.path, timeout_ms=200, retries=1, backoff_ms=10)
        try:
            sample = await ModbusMeter(profile, 1, bus).read()
        finally:
            bus.close()
            meter.stop()
        return sample, meter.log

    sample, log = run(scenario)
    expected = expected_values(profile)
    assert {q: fields(sample)[q] for q in expected} == expected
    (_, _, first), (late_at, _, _), (retry_at, _, again) = log[:3]
    assert again == first and retry_at - late_at >= 0.19


def test_a_line_that_never_goes_quiet_is_a_frame_error():
    """After a timeout the next request waits for a quiet line; noise that never stops is
    reported as such, not sent into."""
    async def scenario():
        master, slave = os.openpty()
        tty.setraw(slave)
        bus = Bus(serial=os.ttyname(slave), timeout_ms=100, retries=1, backoff_ms=10)
        stop = threading.Event()

        def chatter():
            time.sleep(0.12)                    # after the first request timed out
            while not stop.wait(0.02):
                os.write(master, b"\x55")

        noise = threading.Thread(target=chatter, daemon=True)
        noise.start()
        try:
            with pytest.raises(ModbusFrameError) as caught:
                await bus.read_registers(1, 4, 0, 2)
        finally:
            stop.set()
            noise.join()
            bus.close()
            sent = os.read(master, 256)
            os.close(master)
            os.close(slave)
        return caught.value, sent

    error, sent = run(scenario)
    assert "the line is never quiet for 100 ms (another master talking, or noise)" in \
        str(error)
    assert len(sent) == 8                       # the first request only


def test_a_late_tcp_answer_is_told_apart_by_its_transaction_id():
    """Modbus/TCP answers carry the request's transaction id and pymodbus skips one that
    is not the request's: power (0x0034) answering after its timeout, while power factor
    (0x003E, also 2 registers) is asked for, is not taken for it; an always slow meter is
    a timeout saying why."""
    profile = PROFILES["sdm630"]
    timeout_s = 0.15
    late_once = [0.002, 0.25, 0.002, 0.12]     # blocks 0x0000, 0x0034 x2, 0x003E

    async def scenario():
        bus_settings = dict(timeout_ms=timeout_s * 1000, retries=2, backoff_ms=10)
        once = await SlowTcpMeter(image(profile), 0.002, late_once).start()
        always = await SlowTcpMeter(image(profile), 1.3 * timeout_s).start()
        first = Bus(tcp="127.0.0.1:%d" % once.port, **bus_settings)
        second = Bus(tcp="127.0.0.1:%d" % always.port, **bus_settings)
        try:
            sample = await ModbusMeter(profile, 1, first).read()
            with pytest.raises(ModbusTimeout) as caught:
                await ModbusMeter(profile, 1, second).read()
        finally:
            first.close()
            second.close()
            await once.stop()
            await always.stop()
        return sample, caught.value, once.log

    sample, error, log = run(scenario)
    expected = expected_values(profile)
    assert {q: fields(sample)[q] for q in expected} == expected
    # the first power request's answer (id 2) came while power factor (id 4) was asked for
    assert [tid for _, source, tid in log if source == "D"] == [1, 3, 2, 4, 5]
    assert "only answers to earlier requests came: a meter this slow needs a longer " \
           "timeout) (3 attempts)" in str(error)


def test_no_half_snapshot_when_a_later_block_fails():
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine("tcp", {1: (profile, BASE)}).start()
        faults = line.faults[1]
        bus = line.bus(retries=0)
        meter = ModbusMeter(profile, 1, bus)
        try:
            faults.codes = [None, ExcCodes.DEVICE_FAILURE]   # first block fine, then 04
            with pytest.raises(ModbusExceptionResponse, match="exception 04 server device "
                               "failure at 0x0034"):
                await meter.read()
        finally:
            bus.close()
            await line.stop()
        return faults.calls, meter

    calls, meter = run(scenario)
    assert len(calls) == 2 < len(meter.blocks)


def test_implausible_value_names_the_quantity():
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine("tcp", {1: (profile, BASE)},
                              raw_override={"voltage_l2": 23000.0}).start()
        bus = line.bus()
        try:
            with pytest.raises(MeterError) as caught:
                await ModbusMeter(profile, 1, bus, model="sdm630").read()
        finally:
            bus.close()
            await line.stop()
        return caught.value

    error = run(scenario)
    assert "implausible voltage_l2 = 23000 V (plausible: 0..1000 V)" in str(error)


def test_tcp_link_broken_and_back():
    profile = PROFILES["sdm630"]

    async def scenario():
        line = await FakeLine("tcp", {1: (profile, BASE)}).start()
        bus = line.bus(timeout_ms=200, retries=1, backoff_ms=10)
        meter = ModbusMeter(profile, 1, bus)
        try:
            await meter.read()
            await line.stop_server()
            with pytest.raises(ModbusLinkError) as caught:
                await meter.read()
            await line.start()                      # same port again
            sample = await meter.read()
        finally:
            bus.close()
            await line.stop()
        return caught.value, sample

    error, sample = run(scenario)
    assert "cannot connect: Connection refused" in str(error)
    assert sample.energy_import_wh == BASE["energy_import"]


def test_link_errors_are_clear(tmp_path):
    async def scenario():
        missing = Bus(serial=str(tmp_path / "ttyUSB9"), retries=0)
        with pytest.raises(ModbusLinkError) as no_device:
            await missing.read_registers(1, 4, 0, 2)
        with pytest.raises(ValueError):
            await missing.read_registers(1, 5, 0, 2)
        return no_device.value

    error = run(scenario)
    assert str(error) == "serial %s 9600 8N1: no such device" % (tmp_path / "ttyUSB9")


def test_a_link_that_cannot_open_says_why(tmp_path):
    """Not "in use by another program?" for whatever fails to open, nor "Unknown error -2"
    for a host name that does not resolve."""
    import serial
    regular = tmp_path / "meter.txt"
    regular.write_text("")
    master, slave = os.openpty()
    locked = os.ttyname(slave)
    holder = serial.Serial(locked, exclusive=True)        # another program has it open
    links = {"serial": [str(tmp_path), str(regular), "/dev/null", locked],
             "tcp": ["nosuch.invalid:502"]}

    async def scenario():
        errors = []
        for kind, targets in links.items():
            for target in targets:
                bus = Bus(retries=0, timeout_ms=500, **{kind: target})
                with pytest.raises(ModbusLinkError) as caught:
                    await bus.read_registers(1, 4, 0, 2)
                errors.append(str(caught.value).split(": ", 1)[1])
        return errors

    try:
        errors = run(scenario)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)
    assert errors[:4] == [
        "is a directory, not a serial device",
        "is a regular file, not a serial device",
        "is not a serial device (a character device, but no terminal)",
        "in use by another program (it holds the port's lock)"]
    assert errors[4].startswith("cannot connect: host name nosuch.invalid: ")
    assert "Unknown error" not in errors[4]


# ------------------------------------------------------------------- small pieces

def test_exception_text_and_quiet_time():
    assert exception_text(2, 4, 0x48, 2) == \
        "exception 02 illegal data address at 0x0048 (function 04, 2 registers)"
    assert exception_text(0x0B, 3, 0, 1).startswith(
        "exception 0B gateway target device failed to respond")
    # 3.5 characters of 10 or 11 bits, rounded up to whole microseconds (hal/modbus_rtu.py)
    assert quiet_time_s(9600) == pytest.approx(3646e-6)
    assert quiet_time_s(9600, "E") == pytest.approx(4011e-6)
    assert quiet_time_s(115200) == 0.00175


def test_parse_host_port():
    assert parse_host_port("10.0.0.5:5020") == ("10.0.0.5", 5020)
    assert parse_host_port("meter.local") == ("meter.local", 502)
    assert parse_host_port("[::1]:1502") == ("::1", 1502)
    for bad in ("host:port", "host:0", ":502", "host:70000", "[::1]1502", "[]:502"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


def test_meter_from_config_defaults_and_errors():
    meter = meter_from_config({"model": "sdm630", "serial": "/dev/ttyUSB0", "baud": None,
                               "id": None, "timeout": 500, "on_failure": "stop"})
    defaults = PROFILES["sdm630"]["defaults"]
    assert (meter.unit_id, meter.bus.baud, meter.bus.parity, meter.bus.stopbits) == (
        defaults["id"], defaults["baud"], defaults["parity"], defaults["stopbits"])
    assert meter.bus.timeout_ms == 500 and meter.bus.link.startswith("serial /dev/ttyUSB0")
    custom = meter_from_config({"model": "custom", "tcp": "127.0.0.1:502",
                                "registers": [("power", 3, 10, "s32", "abcd", 0)]})
    assert custom.blocks == [(3, 10, 2)]
    for config, message in (
            ({"model": "sdm999", "tcp": "h:502"}, "model 'sdm999' is not one of"),
            ({"model": "sdm630"}, "either tcp"),
            ({"model": "sdm630", "tcp": "h:1", "serial": "/dev/x"}, "either tcp"),
            ({"model": "sdm630", "serial": "/dev/x", "id": 0}, "id must be 1..247"),
            ({"model": "sdm630", "serial": "/dev/x", "parity": "X"}, "parity"),
            ({"model": "sdm630", "tcp": "h:502", "buad": 9600}, "unknown key buad"),
            ({"model": "custom", "tcp": "h:502"}, "no registers")):
        with pytest.raises(ValueError, match=message):
            meter_from_config(config)


def test_an_even_parity_meter_reads_over_a_paced_pty():
    """8E1 (the Orno OR-WE-517's default): a pty carries no parity bit, so both ends open it
    8N1 while the line paces 11-bit characters."""
    from simulator.meter_server import SimulatedMeter, start_rtu

    async def main():
        server = await start_rtu([SimulatedMeter("or-we-517", unit_id=1)], baud=9600,
                                 parity="E")
        try:
            meter = meter_from_config({"model": "or-we-517", "serial": server.client_path,
                                       "parity": "E", "baud": 9600, "id": 1})
            return await meter.read()
        finally:
            await server.stop()

    sample = asyncio.run(main())
    assert sample.voltage_dv == (2300, 2300, 2300)

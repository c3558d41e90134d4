"""hal/modbus_rtu.py: CRC-16/MODBUS, frames, answer validation, and the master's timing
(silence, timeout, retries, late answers) against a scripted slave in virtual time.

Portable: plain functions and asserts, so pytest runs this file on CPython and
tests/mp_run.py on MicroPython (the master's target). Real serial lines and the simulated
meters are in tests/test_modbus_rtu.py (CPython, pty pair).
"""
import gc
import struct

from agent.compat import asyncio
from hal import modbus_rtu as rtu
from hal.interfaces import MeterError
from hal.meter_profiles import PROFILES


def _raises(exc_type, func, *args):
    try:
        func(*args)
    except exc_type as error:
        return error
    raise AssertionError("%s did not raise %s" % (func, exc_type))


def _hex(text):
    return bytes.fromhex(text.replace(" ", ""))


# -- CRC and frames ------------------------------------------------------------------------------

def test_crc16_modbus_check_values():
    assert rtu.crc16(b"123456789") == 0x4B37               # the CRC catalogue's check value
    assert rtu.crc16(b"") == 0xFFFF
    # Modbus over serial line V1.02 §6.2.2 example and a common FC03 request
    assert rtu.with_crc(_hex("02 07")) == _hex("02 07 41 12")
    assert rtu.with_crc(_hex("01 03 00 00 00 0a")) == _hex("01 03 00 00 00 0a c5 cd")
    assert rtu.crc_ok(_hex("01 03 00 00 00 0a c5 cd"))
    assert not rtu.crc_ok(_hex("01 03 00 00 00 0a cd c5"))  # high byte first: wrong
    assert not rtu.crc_ok(b"\x01\x02")
    table = rtu.CRC_TABLE
    assert len(table) == 256 and table[0] == 0 and table[1] == 0xC0C1 and table[255] == 0x4040


def test_read_request_frames():
    # Modbus Application Protocol V1.1b3 §6.3: read holding registers 108-110 of unit 0x11
    assert rtu.read_request(0x11, 3, 0x006B, 3) == _hex("11 03 00 6b 00 03 76 87")
    assert rtu.read_request(1, 4, 0x0048, 2) == rtu.with_crc(_hex("01 04 00 48 00 02"))
    assert rtu.read_request(247, 4, 0xFFFF, 1)[:6] == _hex("f7 04 ff ff 00 01")
    for args in ((0, 3, 0, 1), (248, 3, 0, 1), (1, 6, 0, 1), (1, 3, 0, 0), (1, 3, 0, 126),
                 (1, 3, 0xFFFF, 2), (1, 3, -1, 1)):
        _raises(ValueError, rtu.read_request, *args)


def _answer(unit, function, words):
    data = bytearray((unit, function, 2 * len(words)))
    for word in words:
        data.append(word >> 8)
        data.append(word & 0xFF)
    return rtu.with_crc(data)


def test_answer_length_from_the_first_bytes():
    answer = _answer(7, 4, [1, 2, 3])
    assert [rtu.answer_length(answer[:n], 7, 4) for n in range(4)] == [0, 0, 0, 11]
    assert rtu.answer_length(_hex("07 84"), 7, 4) == 5        # exception answer
    assert rtu.answer_length(_hex("08"), 7, 4) == -1          # another unit
    assert rtu.answer_length(_hex("07 03"), 7, 4) == -1       # another function
    assert rtu.answer_length(_hex("07 83"), 7, 4) == -1


def test_parse_answer_gives_the_registers():
    assert rtu.parse_answer(_answer(7, 4, [0x4366, 0x0000]), 7, 4, 0, 2) == [0x4366, 0]
    assert rtu.parse_answer(_answer(1, 3, [0xFFFF]), 1, 3, 5, 1) == [0xFFFF]


def test_parse_answer_refuses_what_is_not_the_answer():
    good = _answer(7, 4, [1, 2])
    cases = (
        (good[:-1] + bytes((good[-1] ^ 1,)), "CRC error"),
        (good[:4], "too short"),
        (_answer(8, 4, [1, 2]), "unit 8"),
        (_answer(7, 3, [1, 2]), "another request (function 03"),
        (_answer(7, 4, [1, 2, 3]), "another request (function 04, 6 bytes"),
    )
    for frame, text in cases:
        error = _raises(rtu.ModbusFrameError, rtu.parse_answer, frame, 7, 4, 0x48, 2, "bus id 7")
        assert str(error).startswith("bus id 7: ") and text in str(error), str(error)
        assert error.retry and isinstance(error, MeterError)


def test_exception_answers_carry_code_and_name():
    for code, name, retry in ((1, "illegal function", False),
                              (2, "illegal data address", False),
                              (3, "illegal data value", False),
                              (4, "server device failure", True),
                              (6, "server device busy", True),
                              (0x0B, "gateway target device failed to respond", True),
                              (0x42, "unknown", False)):
        frame = rtu.with_crc(bytes((7, 0x84, code)))
        error = _raises(rtu.ModbusExceptionResponse, rtu.parse_answer, frame, 7, 4, 0x48, 2,
                        "bus id 7")
        assert error.code == code and error.retry == retry
        assert str(error) == "bus id 7: exception %02X %s at 0x0048 (function 04, 2 registers)" \
            % (code, name)


def test_timing_arithmetic():
    assert rtu.character_bits("N", 1) == 10 and rtu.character_bits("E", 1) == 11
    assert rtu.character_bits("N", 2) == 11
    assert rtu.quiet_time_us(9600) == 3646                    # 3.5 x 10 bits / 9600 Bd
    assert rtu.quiet_time_us(9600, "E") == 4011
    assert rtu.quiet_time_us(19200) == 1823
    assert rtu.quiet_time_us(38400) == 1750                   # fixed above 19200 Bd
    assert rtu.wire_us(8, 9600) == 8334
    _raises(ValueError, rtu.RtuMaster, None, 9600, "X")
    _raises(ValueError, rtu.RtuMaster, None, 9600, "N", 3)
    _raises(ValueError, rtu.RtuMaster, None, 0)
    master = rtu.RtuMaster(None, 9600, "e", 1)
    assert master.link == "rtu 9600 8E1" and master.quiet_ms == 5
    # a meter raises its line's timeout to what its largest answer needs: the SDM630's
    # 18-register block is 41 bytes, 171 ms at 2400 Bd, plus 50 ms to think
    slow = rtu.RtuMaster(None, 2400, timeout_ms=100)
    rtu.RtuMeter(PROFILES["sdm630"], 1, slow)
    assert slow.timeout_ms == 221
    rtu.RtuMeter(PROFILES["sdm72d-m"], 2, slow)             # a smaller one lowers nothing
    assert slow.timeout_ms == 221


# -- the master against a scripted slave in virtual time --------------------------------------

class Line:
    """A UART whose far end is a scripted slave; time is virtual milliseconds. Each request
    gets the next reply from `replies` (default: the right answer from `registers`): a
    frame, None (silence), or a callable building one from the request."""

    def __init__(self, registers=None, unit=1, latency_ms=5, baud=9600):
        self.now = 0
        self.registers = registers or {}
        self.unit = unit
        self.latency_ms = latency_ms
        self.byte_ms = 10000 // baud + 1          # about one ms per byte at 9600 Bd
        self.pending = []                         # (arrival time, byte)
        self.replies = []
        self.requests = []                        # (time, frame)
        self.tx_log = []

    # the UART
    def write(self, data):
        data = bytes(data)
        self.requests.append((self.now, data))
        reply = self.replies.pop(0) if self.replies else self.answer
        if callable(reply):
            reply = reply(data)
        if reply:
            self.send(reply, self.now + len(data) * self.byte_ms + self.latency_ms)
        return len(data)

    def any(self):
        return sum(1 for at, _ in self.pending if at <= self.now)

    def read(self, count):
        ready = [byte for at, byte in self.pending if at <= self.now][:count]
        self.pending = self.pending[len(ready):]
        return bytes(ready) if ready else None

    # the far end
    def send(self, frame, start):
        for index in range(len(frame)):
            self.pending.append((start + (index + 1) * self.byte_ms, frame[index]))

    def answer(self, request):
        function = request[1]
        address = (request[2] << 8) | request[3]
        count = (request[4] << 8) | request[5]
        words = [self.registers.get((function, address + i), 0) for i in range(count)]
        return _answer(request[0], function, words)

    # the clock
    def clock(self):
        return self.now

    async def sleep(self, ms):
        self.now += max(1, int(ms))
        await asyncio.sleep(0)

    def master(self, **options):
        options.setdefault("timeout_ms", 100)
        options.setdefault("backoff_ms", 10)
        return rtu.RtuMaster(self, 9600, "N", 1, clock=self.clock, sleep=self.sleep,
                             link="uart1", **options)


def _run(coroutine):
    result = asyncio.run(coroutine)
    gc.collect()        # the scripted line's garbage is the test's, not the master's
    return result


async def _read(master, *request):
    try:
        return await master.read_registers(*request)
    except MeterError as error:
        return error


def test_a_read_waits_for_silence_then_takes_the_answer():
    line = Line({(4, 0x48): 0x4366, (4, 0x49): 0x8000})
    master = line.master()
    assert _run(_read(master, 1, 4, 0x48, 2)) == [0x4366, 0x8000]
    sent_at, request = line.requests[0]
    assert request == rtu.read_request(1, 4, 0x48, 2)
    assert sent_at >= master.quiet_ms                     # 3.5 characters after start-up
    # the next request waits 3.5 characters after the last byte of the answer
    answer_end = line.now                 # the master returned as the last byte came
    assert _run(_read(master, 1, 4, 0x48, 2)) == [0x4366, 0x8000]
    assert line.requests[1][0] >= answer_end + master.quiet_ms


def test_exception_answers_about_the_request_are_not_retried():
    line = Line()
    line.replies = [rtu.with_crc(bytes((1, 0x84, 2)))] * 3
    error = _run(_read(line.master(), 1, 4, 0x48, 2))
    assert isinstance(error, rtu.ModbusExceptionResponse) and error.code == 2
    assert str(error) == ("uart1 9600 8N1 id 1: exception 02 illegal data address at 0x0048 "
                          "(function 04, 2 registers)")
    assert len(line.requests) == 1


def test_transient_failures_are_retried_with_back_off():
    line = Line({(3, 0): 42})
    busy = rtu.with_crc(bytes((1, 0x83, 6)))
    line.replies = [busy, busy]
    assert _run(_read(line.master(retries=2), 1, 3, 0, 1)) == [42]
    times = [at for at, _ in line.requests]
    assert len(times) == 3 and times[2] - times[1] > times[1] - times[0]   # doubling pause
    line = Line()
    line.replies = [busy] * 3
    error = _run(_read(line.master(retries=2), 1, 3, 0, 1))
    assert isinstance(error, rtu.ModbusExceptionResponse) and error.code == 6
    assert str(error).endswith("server device busy at 0x0000 (function 03, 1 register) "
                               "(3 attempts)")


def test_a_crc_error_is_a_frame_error_and_the_retry_reads_it_right():
    line = Line({(4, 0): 7})
    line.replies = [lambda request: line.answer(request)[:-1] + b"\x00"]
    master = line.master(retries=1)
    assert _run(_read(master, 1, 4, 0, 1)) == [7]
    line.replies = [lambda request: line.answer(request)[:-1] + b"\x00"] * 2
    error = _run(_read(master, 1, 4, 0, 1))
    assert isinstance(error, rtu.ModbusFrameError) and "CRC error" in str(error)
    assert "(2 attempts)" in str(error)


def test_no_answer_is_a_timeout_and_a_late_answer_is_never_taken():
    line = Line({(4, 0): 1, (4, 1): 2})
    master = line.master(retries=0, timeout_ms=100)
    late = []

    def silent_then_late(request):
        # the meter answers after the master gave up: 150 ms late
        late.append(line.now)
        line.send(line.answer(request), line.now + 150)
        return None
    line.replies = [silent_then_late]
    error = _run(_read(master, 1, 4, 0, 1))
    assert isinstance(error, rtu.ModbusTimeout)
    assert str(error) == ("uart1 9600 8N1 id 1: timeout: no answer to function 04 at 0x0000 "
                          "(1 register) within 100 ms")
    # the next request (another block of the same length) goes out only after the line has
    # been quiet for a whole timeout: the late answer is thrown away, not taken for it
    line.registers[(4, 1)] = 99
    assert _run(_read(master, 1, 4, 1, 1)) == [99]
    assert line.requests[1][0] >= late[0] + 150 + master.timeout_ms


def test_garbage_and_another_units_talk_are_frame_errors_and_the_line_recovers():
    line = Line({(4, 0): 5})
    line.replies = [bytes((0x55, 0xAA, 0x13, 0x37, 0x00, 0x01, 0x02)),
                    _answer(9, 4, [5])]
    master = line.master(retries=0)
    error = _run(_read(master, 1, 4, 0, 1))
    assert isinstance(error, rtu.ModbusFrameError)
    assert "7 bytes received (55 aa 13 37 00 01 02)" in str(error)
    error = _run(_read(master, 1, 4, 0, 1))
    assert isinstance(error, rtu.ModbusFrameError) and "09 04 02 00 05" in str(error)
    assert _run(_read(master, 1, 4, 0, 1)) == [5]


def test_a_line_that_never_falls_quiet_is_an_error_not_a_hang():
    line = Line({(4, 0): 5})
    line.send(bytes(range(200)), 0)                  # a babbling device: a byte per 2 ms
    error = _run(_read(line.master(retries=0, timeout_ms=100), 1, 4, 0, 1))
    assert isinstance(error, rtu.ModbusFrameError)
    assert "the line is never quiet for 4 ms" in str(error)
    assert line.requests == [] and line.now < 200


def test_a_truncated_answer_fails_at_the_deadline():
    line = Line({(4, 0): 5, (4, 1): 6})
    line.replies = [lambda request: line.answer(request)[:6]]
    error = _run(_read(line.master(retries=0), 1, 4, 0, 2))
    assert isinstance(error, rtu.ModbusFrameError)
    assert "incomplete answer" in str(error) and "6 of 9 bytes" in str(error)


def test_driver_enable_is_on_only_while_the_request_is_on_the_wire():
    line = Line({(3, 0): 1})
    events = []
    master = line.master(tx_enable=lambda on: events.append((line.now, on)))
    assert _run(_read(master, 1, 3, 0, 1)) == [1]
    (on_at, on), (off_at, off) = events
    assert on and not off
    assert off_at - on_at >= master.wire_ms(8)           # 8 bytes at 9600 Bd: 9 ms
    assert line.requests[0][0] == on_at


def test_rtu_meter_reads_a_profile_into_a_sample():
    profile = PROFILES["sdm630"]
    values = {"voltage_l1": 230.1, "current_l1": 16.012, "power": 7245.0,
              "energy_import": 1234.567, "frequency": 50.01}
    registers = {}
    for quantity, function, address, kind, order, scale in profile["rows"]:
        data = struct.pack(">f", values.get(quantity, 0.0))
        registers[(function, address)] = (data[0] << 8) | data[1]
        registers[(function, address + 1)] = (data[2] << 8) | data[3]
    line = Line(registers, unit=3)
    meter = rtu.RtuMeter(profile, 3, line.master(), model="sdm630", clock=lambda: 1234)
    sample = _run(meter.read())
    assert sample.voltage_dv[0] == 2301 and sample.current_ma[0] == 16012
    assert sample.power_w == 7245 and sample.energy_import_wh == 1234567
    assert sample.frequency_mhz == 50010 and sample.timestamp_ms == 1234
    assert len(line.requests) == len(rtu.modbus_meter.plan(profile))
    # a failing block fails the whole sample, with the meter's name in front
    line.replies = [rtu.with_crc(bytes((3, 0x84, 2)))]
    error = _run(_read_meter(meter))
    assert isinstance(error, rtu.ModbusExceptionResponse)
    assert str(error).startswith("sdm630: uart1 9600 8N1 id 3: exception 02 illegal data "
                                 "address at 0x0000 (function 04, 18 registers)")
    # an impossible value is a MeterError naming it
    data = struct.pack(">f", 1.0e7)
    registers[(4, 0x34)] = (data[0] << 8) | data[1]
    registers[(4, 0x35)] = (data[2] << 8) | data[3]
    error = _run(_read_meter(meter))
    assert type(error) is MeterError and str(error) == \
        "sdm630: uart1 9600 8N1 id 3: implausible power"
    _raises(ValueError, rtu.RtuMeter, profile, 0, meter.master)


async def _read_meter(meter):
    try:
        return await meter.read()
    except MeterError as error:
        return error

"""A small Modbus RTU master over any UART, and `RtuMeter`: the microcontroller's meters.

Portable (CPython and MicroPython): the frame functions are pure, the master needs only an
object with `write(bytes)`, `any()` -> bytes waiting and `read(n)` (machine.UART as it is;
in tests a pyserial or pty adapter), and asyncio. RAM: one 512-byte CRC table and a frame
buffer of at most 255 bytes; nothing else per request beyond the decoded register list.

Frames (Modbus over serial line V1.02; Modbus Application Protocol V1.1b3 §6.3-6.4, §7):
- `read_request(unit, function, address, count)` -> the 8 bytes of an FC03/FC04 request;
- `crc16(data)`: CRC-16/MODBUS, polynomial 0xA001 (reflected 0x8005), init 0xFFFF, sent
  low byte first;
- `answer_length(head, unit, function)`: how long the answer starting with `head` will be
  (5 for an exception, 5 + byte count otherwise), 0 while that cannot be told yet, -1 when
  these bytes cannot be the answer (another unit talking, noise);
- `parse_answer(frame, ...)` -> the register values, or raises: `ModbusFrameError` (CRC,
  wrong unit, function, byte count), `ModbusExceptionResponse` (exception code and name).

`RtuMaster(uart, baud, parity, stopbits, timeout_ms=1000, retries=2, tx_enable=None)`:
`await read_registers(unit, function, address, count)`. One request at a time on the line
(an asyncio.Lock: several meters may share one RS-485 bus). Before each request the line
must have been silent for 3.5 character times (a fixed 1.75 ms above 19200 Bd, §2.5.1.1);
bytes that come in meanwhile (a late answer, noise) are thrown away and the silence starts
again (a line that is never quiet for a timeout is a ModbusFrameError). After a request that
got no answer at all the line must be silent for a whole timeout first, so that a late
answer is never taken for the next request's. `tx_enable` (a callable taking True/False)
drives an RS-485 transceiver's DE//RE line: on while the request is on the wire (its wire
time, then `txdone()` where the UART has it). The answer is read as it grows (polling
`any()` every millisecond) until `answer_length` says it is complete; the timeout counts
from the end of the request on the wire. Failed attempts are retried after a doubling
back-off (50 ms .. 800 ms) taken outside the lock, except exception answers about the request
itself (01, 02, 03), which will not change. Not checked: the 1.5-character gap inside a
frame (a UART driver that hands bytes over in chunks, as the ESP32's does, makes it
unmeasurable); the CRC catches what it would. A transceiver that echoes our own request (/RE
held low) is not supported.

`RtuMeter(profile, unit_id, master, model=None, clock=None)` is a hal.interfaces.Meter
(and raises the master's timeout to what its largest answer needs on the wire + 50 ms):
`await read()` reads the profile's planned blocks (hal/modbus_meter.py `plan`) and decodes
them together into a MeterSample, or raises a MeterError naming the meter, the link, the
unit and what went wrong ("sdm630: uart1 9600 8N1 id 1: exception 02 illegal data address
at 0x0048 (function 04, 2 registers)"). Error classes and texts match hal/modbus_client.py
(the CPython transport), so the agent and `evse meter` read the same messages from both.
"""
from array import array

from agent.compat import asyncio, monotonic_ms, sleep_ms
from hal import modbus_meter
from hal.interfaces import Meter, MeterError

DEFAULT_TIMEOUT_MS = 1000     # per attempt; a 9600 Bd answer of 125 registers takes 265 ms
DEFAULT_RETRIES = 2           # attempts = retries + 1
BACKOFF_MS = 50               # first pause before a retry; doubles per retry ...
BACKOFF_MAX_MS = 800          # ... up to this
FAST_QUIET_US = 1750          # inter-frame silence above 19200 Bd (fixed by the spec)
POLL_MS = 1                   # how often a waiting master looks at the UART
ANSWER_LATENCY_MS = 50        # a meter's thinking time, on top of its answer's wire time
MAX_REGISTERS = 125           # per FC03/FC04 read (§6.3)
MAX_FRAME = 256               # RTU ADU limit (§2.5.1)
PARITIES = ("N", "E", "O")

# Modbus Application Protocol V1.1b3 §7
EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
# worth asking again: the device may answer next time; 01/02/03 are about the request itself
TRANSIENT_CODES = (0x04, 0x05, 0x06, 0x0B)


class ModbusTimeout(MeterError):
    """No answer at all within the timeout (nothing at that unit id, wrong baud rate or
    parity, A/B swapped, cable)."""
    retry = True


class ModbusFrameError(MeterError):
    """Bytes came back but no valid answer: CRC or framing error, wrong unit or length."""
    retry = True


class ModbusExceptionResponse(MeterError):
    """The device answered with a Modbus exception; `code` is its exception code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code
        self.retry = code in TRANSIENT_CODES


async def with_retries(attempt, args, retries, backoff_ms, sleep_ms):
    """`await attempt(*args)`, again after a pause of backoff_ms, doubling up to
    BACKOFF_MAX_MS, while it raises a MeterError marked `retry` and retries are left; the
    last error says how many attempts it took. Both masters (this one and pymodbus's in
    hal/modbus_client.py) retry through here."""
    done = 0
    while True:
        try:
            return await attempt(*args)
        except MeterError as error:
            if done >= retries or not getattr(error, "retry", False):
                if done:
                    raise modbus_meter.with_context(error, "%s (%d attempts)" % (error, done + 1))
                raise
        await sleep_ms(min(backoff_ms << done, BACKOFF_MAX_MS))
        done += 1


def exception_text(code, function, address, count):
    """'exception 02 illegal data address at 0x0048 (function 04, 2 registers)'."""
    return "exception %02X %s at 0x%04X (function %02d, %d register%s)" % (
        code, EXCEPTION_NAMES.get(code, "unknown"), address, function, count,
        "" if count == 1 else "s")


def _asked(function, address, count):
    return "function %02d at 0x%04X (%d register%s)" % (
        function, address, count, "" if count == 1 else "s")


def character_bits(parity="N", stopbits=1):
    """Bits per RTU character: start, 8 data, parity (if any), stop bits."""
    return 1 + 8 + (parity != "N") + stopbits


def quiet_time_us(baud, parity="N", stopbits=1):
    """RTU inter-frame silence: 3.5 character times, a fixed 1750 us above 19200 Bd."""
    if baud > 19200:
        return FAST_QUIET_US
    return (35 * character_bits(parity, stopbits) * 100000 + baud - 1) // baud


def wire_us(nbytes, baud, parity="N", stopbits=1):
    """Microseconds `nbytes` characters occupy the line (rounded up)."""
    return (nbytes * character_bits(parity, stopbits) * 1000000 + baud - 1) // baud


# -- CRC-16/MODBUS -------------------------------------------------------------------------------

def _crc_table():
    table = array("H", [0] * 256)
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[index] = crc
    return table


CRC_TABLE = _crc_table()


def crc16(data, end=None):
    """CRC-16/MODBUS of data[:end] (all of it by default)."""
    table = CRC_TABLE
    crc = 0xFFFF
    for index in range(len(data) if end is None else end):
        crc = (crc >> 8) ^ table[(crc ^ data[index]) & 0xFF]
    return crc


def with_crc(frame):
    """`frame` (bytes or bytearray) with its CRC appended, low byte first, as bytes."""
    crc = crc16(frame)
    return bytes(frame) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame):
    return len(frame) >= 4 and crc16(frame, len(frame) - 2) == \
        frame[-2] | (frame[-1] << 8)


# -- frames -------------------------------------------------------------------------------------

def read_request(unit, function, address, count):
    """The request frame reading `count` registers at `address` (FC03 holding, FC04 input)."""
    if not 1 <= unit <= 247:
        raise ValueError("unit id must be 1..247 on a serial line, got %r" % (unit,))
    if function not in (3, 4):
        raise ValueError("function must be 3 or 4, got %r" % (function,))
    if not 1 <= count <= MAX_REGISTERS:
        raise ValueError("count must be 1..%d, got %r" % (MAX_REGISTERS, count))
    if not 0 <= address <= 0x10000 - count:
        raise ValueError("address must be 0..%d for %d registers, got %r" % (
            0x10000 - count, count, address))
    return with_crc(bytes((unit, function, address >> 8, address & 0xFF,
                           count >> 8, count & 0xFF)))


def answer_length(head, unit, function):
    """The whole answer's length once `head` (its first bytes) tells it; 0 while it cannot
    be told yet; -1 if `head` cannot start an answer from `unit` to `function`."""
    if not head:
        return 0
    if head[0] != unit:
        return -1
    if len(head) < 2:
        return 0
    if head[1] == function | 0x80:
        return 5                          # unit, function | 0x80, code, CRC
    if head[1] != function:
        return -1
    if len(head) < 3:
        return 0
    return 5 + head[2]                    # unit, function, byte count, data, CRC


def describe_bytes(data, limit=16):
    text = " ".join("%02x" % byte for byte in data[:limit])
    return text + (" ..." if len(data) > limit else "")


def parse_answer(frame, unit, function, address, count, where="rtu"):
    """The `count` register values of a complete answer to the request, or raises
    ModbusExceptionResponse / ModbusFrameError (messages start with `where`)."""
    if len(frame) < 5:
        raise ModbusFrameError("%s: answer too short (%d bytes: %s) to %s" % (
            where, len(frame), describe_bytes(frame), _asked(function, address, count)))
    if not crc_ok(frame):
        raise ModbusFrameError("%s: CRC error in the answer to %s (%d bytes: %s)" % (
            where, _asked(function, address, count), len(frame), describe_bytes(frame)))
    if frame[0] != unit:
        raise ModbusFrameError("%s: answer from unit %d to a request for unit %d" % (
            where, frame[0], unit))
    if frame[1] == function | 0x80 and len(frame) == 5:
        raise ModbusExceptionResponse("%s: %s" % (
            where, exception_text(frame[2], function, address, count)), frame[2])
    if frame[1] != function or frame[2] != 2 * count or len(frame) != 5 + 2 * count:
        raise ModbusFrameError(
            "%s: answer to another request (function %02d, %d bytes of data) for %s" % (
                where, frame[1] & 0x7F, frame[2], _asked(function, address, count)))
    return [(frame[3 + 2 * i] << 8) | frame[4 + 2 * i] for i in range(count)]


# -- the master -----------------------------------------------------------------------------------

class RtuMaster:
    """One RS-485 line, master side; see the module docstring."""

    def __init__(self, uart, baud=9600, parity="N", stopbits=1,
                 timeout_ms=DEFAULT_TIMEOUT_MS, retries=DEFAULT_RETRIES,
                 backoff_ms=BACKOFF_MS, tx_enable=None, link=None, clock=None, sleep=None):
        parity = str(parity).upper()
        if parity not in PARITIES:
            raise ValueError("parity must be N, E or O, got %r" % (parity,))
        if stopbits not in (1, 2):
            raise ValueError("stop bits must be 1 or 2, got %r" % (stopbits,))
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError("baud must be a positive integer, got %r" % (baud,))
        if not timeout_ms > 0:
            raise ValueError("timeout must be positive, got %r ms" % (timeout_ms,))
        if not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError("retries must be 0..10, got %r" % (retries,))
        self.uart = uart
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.tx_enable = tx_enable
        self.link = "%s %d 8%s%d" % (link or "rtu", baud, parity, stopbits)
        self.quiet_ms = (quiet_time_us(baud, parity, stopbits) + 999) // 1000
        self.clock = clock or monotonic_ms
        self.sleep = sleep or sleep_ms
        self._lock = asyncio.Lock()
        self._idle_since = self.clock()   # when the line was last seen busy
        self._unanswered = False          # the last request got no answer: it may still come

    def wire_ms(self, nbytes):
        return (wire_us(nbytes, self.baud, self.parity, self.stopbits) + 999) // 1000

    async def read_registers(self, unit, function, address, count):
        """The register values, or the last attempt's MeterError."""
        read_request(unit, function, address, count)          # ValueError before any I/O
        return await with_retries(self._attempt, (unit, function, address, count),
                                  self.retries, self.backoff_ms, self.sleep)

    async def _attempt(self, unit, function, address, count):
        where = "%s id %d" % (self.link, unit)
        await self._lock.acquire()
        try:
            await self._wait_for_silence(where)
            await self._send(read_request(unit, function, address, count))
            frame = await self._receive(unit, function, address, count, where)
        finally:
            self._lock.release()
        return parse_answer(frame, unit, function, address, count, where)

    def _drain(self):
        """Throw away whatever is waiting; True if there was something."""
        uart = self.uart
        drained = False
        waiting = uart.any()
        while waiting:
            uart.read(waiting)
            drained = True
            waiting = uart.any()
        return drained

    async def _wait_for_silence(self, where):
        needed = self.timeout_ms if self._unanswered else self.quiet_ms
        give_up = self.clock() + needed + self.timeout_ms
        while True:
            if self._drain():
                self._idle_since = self.clock()
                if self._idle_since > give_up:
                    raise ModbusFrameError(
                        "%s: the line is never quiet for %d ms (another master talking, "
                        "or noise)" % (where, needed))
            wait = self._idle_since + needed - self.clock()
            if wait <= 0:
                break
            await self.sleep(wait)
        self._unanswered = False

    async def _send(self, request):
        uart = self.uart
        if self.tx_enable is not None:
            self.tx_enable(True)
        try:
            uart.write(request)
            if self.tx_enable is not None:
                await self.sleep(self.wire_ms(len(request)))
                if hasattr(uart, "txdone"):
                    for _ in range(100):
                        if uart.txdone():
                            break
                        await self.sleep(POLL_MS)
        finally:
            if self.tx_enable is not None:
                self.tx_enable(False)

    async def _receive(self, unit, function, address, count, where):
        """The answer's bytes, as long as its header says (parse_answer judges them)."""
        uart = self.uart
        clock = self.clock
        # the timeout starts when the request has left the wire
        deadline = clock() + self.wire_ms(8) + self.timeout_ms
        buffer = bytearray()
        needed = 0
        last_byte = 0                     # when the last byte came (once `buffer` has one)
        try:
            while True:
                waiting = uart.any()
                if waiting:
                    data = uart.read(min(waiting, MAX_FRAME - len(buffer)))
                    if data:
                        buffer.extend(data)
                        last_byte = clock()
                        if needed == 0:
                            needed = answer_length(buffer, unit, function)
                        if needed > 0 and len(buffer) >= needed:
                            return bytes(buffer[:needed])
                        if len(buffer) >= MAX_FRAME:
                            needed = -1
                        continue
                now = clock()
                if needed < 0 and now - last_byte >= self.quiet_ms:
                    raise ModbusFrameError(
                        "%s: no valid answer to %s: %d bytes received (%s): CRC or framing "
                        "error, or another device talking" % (
                            where, _asked(function, address, count), len(buffer),
                            describe_bytes(buffer)))
                if now >= deadline:
                    if buffer:
                        raise ModbusFrameError(
                            "%s: incomplete answer to %s within %d ms: %d of %s bytes (%s)" % (
                                where, _asked(function, address, count), self.timeout_ms,
                                len(buffer), needed if needed > 0 else "?",
                                describe_bytes(buffer)))
                    self._unanswered = True
                    raise ModbusTimeout("%s: timeout: no answer to %s within %d ms" % (
                        where, _asked(function, address, count), self.timeout_ms))
                await self.sleep(POLL_MS)
        finally:
            self._idle_since = last_byte if buffer else clock()

    def __repr__(self):
        return "<RtuMaster %s>" % self.link


class RtuMeter(modbus_meter.ProfileMeter, Meter):
    """A meter of a known register map (`profile`, a dict of hal/meter_profiles.py) at
    `unit_id` behind `master`. `await read()` -> MeterSample (timestamp_ms = `clock()` when
    the snapshot started, None without a clock: the agent stamps it), or MeterError."""

    def __init__(self, profile, unit_id, master, model=None, clock=None):
        if not 1 <= unit_id <= 247:
            raise ValueError("unit id must be 1..247 on a serial line, got %r" % (unit_id,))
        modbus_meter.ProfileMeter.__init__(self, profile, unit_id, model, clock)
        self.master = master
        self.link = master.link
        # the slowest answer on the line sets its patience (at 2400 Bd an 80-register
        # answer alone takes 690 ms)
        largest = max([count for _, _, count in self.blocks] or [1])
        needed = master.wire_ms(5 + 2 * largest) + ANSWER_LATENCY_MS
        if master.timeout_ms < needed:
            master.timeout_ms = needed

    async def _read_registers(self, function, start, count):
        return await self.master.read_registers(self.unit_id, function, start, count)


def board_meters(board, open_uart, clock=None):
    """{connector id: RtuMeter} for a board's Modbus [meter] (empty for "sim" and "none"):
    one master on the one bus, connector k (in id order) at unit id + k - 1.
    `open_uart(settings)` -> (uart, link name, tx_enable or None) is the board's own part:
    machine.UART on a microcontroller, a serial device on the unix port."""
    meter = board.get("meter") or {}
    profile = modbus_meter.board_profile(meter)
    if profile is None:
        return {}
    settings = modbus_meter.serial_settings(meter, profile)
    uart, link, tx_enable = open_uart(settings)
    master = RtuMaster(uart, settings["baud"], settings["parity"], settings["stopbits"],
                       timeout_ms=meter.get("timeout") or DEFAULT_TIMEOUT_MS,
                       tx_enable=tx_enable, link=link)
    return {connector_id: RtuMeter(profile, unit, master, model=meter.get("model"), clock=clock)
            for connector_id, unit in modbus_meter.unit_ids(board, profile).items()}

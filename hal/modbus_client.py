"""Modbus energy meters, CPython only (pymodbus, logging): one Bus per physical link, one
ModbusMeter per unit id.

The register maps and their decoding are portable data (hal/modbus_meter.py,
hal/meter_profiles.py); this module only moves registers, with pymodbus 3.16 (pinned: its
API changes in every minor release, spec/libraries.md §3):

- `Bus`: a TCP connection (host:port) or a serial line (device, baud, parity, stop bits)
  with the RTU framer. Several meters may hang on one RS-485 line, and a bus master must
  never start a request before the previous answer is in (or timed out), so every request
  holds the bus's lock, and on RTU waits out the inter-frame silence (3.5 characters, fixed
  1.75 ms above 19200 Bd: Modbus over serial line V1.02 §2.5.1.1) after the last frame,
  or a whole timeout of silence after a request that got no answer (a late answer must go
  by first: `Bus`).
  Each attempt has a timeout; failed attempts are retried with a bounded, doubling back-off
  taken *outside* the lock, so a dead meter does not starve the others on its line. A link
  that broke (TCP reset, USB adapter unplugged) is reopened on the next attempt.
- Failures are `MeterError`s whose message says what happened and where: timeout, a
  garbled answer (CRC or framing), an exception response with its code and name
  ("exception 02 illegal data address at 0x0048"), a link that cannot be opened.
- `ModbusMeter`: a profile + unit id + bus. `read()` reads every planned block and
  decodes them together, so a sample is one snapshot or nothing: any block failing, or any
  value outside what its quantity can physically be, is a MeterError.
- `meter_from_config(dict)` builds one from a board's [meter] table; `Buses` shares one
  Bus (and its lock) between meters on the same link.

pymodbus's own retries and reconnect task are switched off (retries=0, reconnect_delay=0):
its retries have no back-off and hold its lock, and its background reconnect races ours.
"""
import asyncio
import fcntl
import logging
import os
import socket
import stat
import termios
import time

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from agent.compat import sleep_ms
from hal import modbus_meter
from hal.interfaces import Meter, MeterError
# the Modbus facts and errors both masters share (the portable RTU master's module)
from hal.modbus_rtu import (
    BACKOFF_MAX_MS, BACKOFF_MS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, PARITIES,
    ModbusExceptionResponse, ModbusFrameError, ModbusTimeout, exception_text, quiet_time_us,
    wire_us, with_retries,
)
from hal.meter_profiles import PROFILES

# pymodbus logs every timeout and bad frame at ERROR level with a frame dump; our callers get
# a MeterError instead, so those records go only where the application sends its logging.
logging.getLogger("pymodbus").addHandler(logging.NullHandler())

TCP_PORT = 502                  # Modbus/TCP (Modbus Messaging on TCP/IP V1.0b §4.1)
STOPBITS = (1, 2)

# a gateway saying the unit is not there: for probing, the same as silence
ABSENT_CODES = (0x0A, 0x0B)


class ModbusLinkError(MeterError):
    """The link itself: the serial device cannot be opened, the TCP connection is refused."""
    retry = True


def parse_host_port(text, default_port=TCP_PORT, any_port=False):
    """'host:port', 'host' (port 502), '[::1]:502' -> (host, port); ValueError if not.
    `any_port` allows port 0 (a server: pick a free one)."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("%r: expected HOST:PORT" % text)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        port = int(port)
    except ValueError:
        raise ValueError("%r: the port must be a number" % text) from None
    if not host or not (0 if any_port else 1) <= port < 65536:
        raise ValueError("%r: expected HOST:PORT with a port %d..65535" % (
            text, 0 if any_port else 1))
    return host, port


def serial_device_trouble(path):
    """Why `path` cannot be a serial port the way a user should hear it ("is a directory,
    not a serial device", "in use by another program ..."), or None if nothing shows."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return error.strerror.lower()
    if stat.S_ISDIR(mode):
        return "is a directory, not a serial device"
    if not stat.S_ISCHR(mode):
        return "is %s, not a serial device" % (
            "a regular file" if stat.S_ISREG(mode) else "no character device")
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return "permission denied (is the user in the dialout group?)"
    except OSError as error:
        return "cannot open: %s" % error.strerror
    try:
        try:
            termios.tcgetattr(fd)
        except termios.error:
            return "is not a serial device (a character device, but no terminal)"
        try:
            # pyserial (exclusive=True, as pymodbus opens it) takes this lock
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "in use by another program (it holds the port's lock)"
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return None


def quiet_time_s(baud, parity="N", stopbits=1):
    """RTU inter-frame silence in seconds (hal/modbus_rtu.py: 3.5 characters, 1.75 ms above
    19200 Bd)."""
    return quiet_time_us(baud, parity, stopbits) / 1000000


def wire_ms(nbytes, baud, parity="N", stopbits=1):
    """Milliseconds `nbytes` RTU characters occupy the line."""
    return wire_us(nbytes, baud, parity, stopbits) / 1000


def min_timeout_ms(blocks, baud, parity="N", stopbits=1):
    """The shortest timeout that can succeed on a serial line: the wire time of the largest
    exchange (8-byte request, 5 + 2n byte answer), the quiet time, and 50 ms for the device
    to think. At 2400 Bd an 80-register answer alone takes 690 ms."""
    largest = max([count for _, _, count in blocks] or [1])
    return int(wire_ms(8 + 5 + 2 * largest, baud, parity, stopbits) +
               quiet_time_s(baud, parity, stopbits) * 1000 + 50) + 1


class Bus:
    """One physical link to one or more Modbus units: `Bus(tcp="host:port")` or
    `Bus(serial="/dev/ttyUSB0", baud=9600, parity="N", stopbits=1)`.

    `await read_registers(unit, function, address, count)` -> list of register values, or
    a MeterError after `retries` more attempts. Requests never overlap on the link. Opened
    lazily on first use (pymodbus needs the running event loop, so a Bus lives in one event
    loop); `close()` when done.

    A late answer must never be taken for another request's. On TCP the transaction id
    tells them apart (pymodbus's framer skips an answer whose id is not the request's). On
    RTU an answer carries no request number, and one of another block with the same
    function and length is indistinguishable; order and silence are the only protection, so
    the policy is the portable master's (hal/modbus_rtu.py): before each request the line
    must have been silent for the inter-frame time, and after a request that got no valid
    answer for a whole timeout; bytes arriving meanwhile are thrown away (pymodbus drops an
    answer no request waits for, and clears its buffer when the next request goes out) and
    the silence starts again. So an answer less than two timeouts after its request is never
    taken for another request's; a meter slower than that needs a longer timeout, and the
    timeout message says how late its answers came.
    """

    def __init__(self, tcp=None, serial=None, baud=9600, parity="N", stopbits=1,
                 timeout_ms=DEFAULT_TIMEOUT_MS, retries=DEFAULT_RETRIES,
                 backoff_ms=BACKOFF_MS, quiet_ms=None):
        if (tcp is None) == (serial is None):
            raise ValueError("a bus is either tcp=HOST:PORT or serial=DEVICE")
        parity = str(parity).upper()
        if parity not in PARITIES:
            raise ValueError("parity must be N, E or O, got %r" % parity)
        if stopbits not in STOPBITS:
            raise ValueError("stop bits must be 1 or 2, got %r" % stopbits)
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError("baud must be a positive integer, got %r" % baud)
        if not timeout_ms > 0:
            raise ValueError("timeout must be positive, got %r ms" % timeout_ms)
        if not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError("retries must be 0..10, got %r" % retries)
        self.serial = serial
        self.baud, self.parity, self.stopbits = baud, parity, stopbits
        if tcp is not None:
            self.host, self.port = tcp if isinstance(tcp, tuple) else parse_host_port(tcp)
            self.link = "tcp %s:%d" % (self.host, self.port)
            self.quiet_s = 0.0 if quiet_ms is None else quiet_ms / 1000
        else:
            self.host = self.port = None
            self.link = "serial %s %d %d%s%d" % (serial, baud, 8, parity, stopbits)
            self.quiet_s = quiet_time_s(baud, parity, stopbits) if quiet_ms is None \
                else quiet_ms / 1000
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.backoff_ms = backoff_ms
        self._client = None
        self._lock = asyncio.Lock()
        self._idle_since = 0.0      # loop time the line was last busy (RTU silence)
        self._received = b""        # bytes of the current answer as they came in
        self._unanswered = False    # the last request got no valid answer: it may still come
        self._asked_at = 0.0        # loop time the last request went out
        self._late_answer_ms = None     # how late a timed-out request's answer came, if it did

    @property
    def is_serial(self):
        return self.serial is not None

    def worst_case_s(self):
        """How long one request to a silent meter can take: every attempt timing out, and
        between them the back-off or, on RTU, the silence owed after a timeout, whichever
        is longer (the back-off runs while the line is quiet)."""
        silence_ms = self.timeout_ms if self.is_serial else 0
        pauses = sum(max(min(self.backoff_ms << n, BACKOFF_MAX_MS), silence_ms)
                     for n in range(self.retries))
        return ((self.retries + 1) * self.timeout_ms + pauses) / 1000

    async def read_registers(self, unit, function, address, count):
        if function not in (3, 4):
            raise ValueError("function must be 3 or 4, got %r" % function)
        return await with_retries(self._attempt, (unit, function, address, count),
                                  self.retries, self.backoff_ms, sleep_ms)

    async def _attempt(self, unit, function, address, count):
        async with self._lock:
            client = await self._open()
            loop = asyncio.get_running_loop()
            await self._wait_for_silence(self._where(unit))
            self._received = b""
            self._asked_at = loop.time()
            try:
                if function == 4:
                    response = await client.read_input_registers(
                        address, count=count, device_id=unit)
                else:
                    response = await client.read_holding_registers(
                        address, count=count, device_id=unit)
            except ModbusIOException as error:
                self._answer_may_still_come()
                raise self._no_answer(self._where(unit), function, address, count,
                                      error) from None
            except ConnectionException as error:
                self._drop()
                raise ModbusLinkError("%s: link lost: %s" % (self._where(unit), error)) \
                    from None
            except ModbusException as error:
                raise ModbusFrameError("%s: %s" % (self._where(unit), error)) from None
            except OSError as error:
                self._drop()
                raise ModbusLinkError("%s: %s" % (self._where(unit),
                                                  error.strerror or error)) from None
            finally:
                self._idle_since = loop.time()
        self._late_answer_ms = None         # the meter answers in time again
        if response.isError():
            code = getattr(response, "exception_code", 0)
            raise ModbusExceptionResponse("%s: %s" % (
                self._where(unit), exception_text(code, function, address, count)), code)
        registers = response.registers
        if response.function_code != function or len(registers) != count:
            self._answer_may_still_come()
            raise ModbusFrameError(
                "%s: answer to another request (function %02d, %d registers) for function "
                "%02d at 0x%04X (%d registers)" % (self._where(unit), response.function_code,
                                                   len(registers), function, address, count))
        return registers

    def _answer_may_still_come(self):
        # only RTU needs the silence: on TCP a late answer is told apart by its transaction id
        if self.is_serial:
            self._unanswered = True

    async def _wait_for_silence(self, where):
        """Wait until the line has been quiet long enough for the next request (the class
        docstring); ModbusFrameError if it never is within a timeout more than that."""
        needed = self.timeout_ms / 1000 if self._unanswered else self.quiet_s
        if not needed:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + needed + self.timeout_ms / 1000
        while True:
            wait = self._idle_since + needed - loop.time()
            if wait <= 0:
                break
            if self._idle_since > give_up:
                raise ModbusFrameError(
                    "%s: the line is never quiet for %d ms (another master talking, or "
                    "noise)" % (where, needed * 1000))
            await asyncio.sleep(wait)
        self._unanswered = False

    def _where(self, unit):
        return "%s id %d" % (self.link, unit)

    def _no_answer(self, where, function, address, count, error):
        text = str(error)
        if "No response" not in text:       # wrong unit or transaction id in the answer
            return ModbusFrameError("%s: %s" % (where, text.split("] ", 1)[-1]))
        asked = "function %02d at 0x%04X (%d registers)" % (function, address, count)
        if self._client is not None and not self._client.connected:
            self._drop()
            return ModbusLinkError("%s: connection lost while waiting for the answer to %s" % (
                where, asked))
        slow = "a meter this slow needs a longer timeout"
        if not self._received:
            late, self._late_answer_ms = self._late_answer_ms, None
            hint = "" if late is None else \
                " (a late answer came %d ms after the attempt before: %s)" % (late, slow)
        elif self.is_serial:
            return ModbusFrameError(
                "%s: no valid answer to %s within %d ms: %d bytes received (%s%s): CRC or "
                "framing error, or another device talking" % (
                    where, asked, self.timeout_ms, len(self._received),
                    self._received[:16].hex(" "), " ..." if len(self._received) > 16 else ""))
        else:       # pymodbus skipped them by their transaction ids
            hint = " (only answers to earlier requests came: %s)" % slow
        return ModbusTimeout("%s: timeout: no answer to %s within %d ms%s" % (
            where, asked, self.timeout_ms, hint))

    def _trace(self, sending, data):
        if not sending:
            self._received = data
            now = asyncio.get_running_loop().time()
            if self._unanswered and self._late_answer_ms is None:   # for the timeout message
                self._late_answer_ms = int((now - self._asked_at) * 1000)
            self._idle_since = now      # the line is busy: the silence starts again
        return data

    async def _open(self):
        client = self._client
        if client is not None and client.connected:
            return client
        self._drop()
        timeout_s = self.timeout_ms / 1000
        if self.is_serial:
            if not os.path.exists(self.serial) and "://" not in self.serial:
                raise ModbusLinkError("%s: no such device" % self.link)
            client = AsyncModbusSerialClient(
                self.serial, framer=FramerType.RTU, baudrate=self.baud,
                parity=self._device_parity(), stopbits=self.stopbits, bytesize=8,
                timeout=timeout_s, retries=0, reconnect_delay=0, trace_packet=self._trace)
        else:
            client = AsyncModbusTcpClient(
                self.host, port=self.port, timeout=timeout_s, retries=0, reconnect_delay=0,
                trace_packet=self._trace)
        if not await client.connect():
            client.close()
            raise ModbusLinkError("%s: %s" % (self.link, await self._why_not()))
        self._client = client
        return client

    def _device_parity(self):
        # a pseudo-terminal (a simulated bus, a USB-serial bridge daemon) has no parity bit
        # and refuses the setting (tcsetattr: EINVAL); the timing keeps it
        return "N" if os.path.realpath(self.serial).startswith("/dev/pts/") else self.parity

    async def _why_not(self):
        """pymodbus only logs why a connect failed; find out again for the message."""
        if self.is_serial:
            trouble = None if "://" in self.serial else serial_device_trouble(self.serial)
            return trouble or self._serial_open_error()
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_ms / 1000)
        except asyncio.TimeoutError:
            return "cannot connect: no answer within %d ms" % self.timeout_ms
        except socket.gaierror as error:
            return "cannot connect: host name %s: %s" % (self.host, error.strerror)
        except OSError as error:
            # the text of a refused connection is "Connect call failed (...)": say what
            # the errno means instead
            return "cannot connect: %s" % (os.strerror(error.errno) if error.errno else error)
        writer.close()
        return "cannot connect (it accepted a second try: a flaky link?)"

    def _serial_open_error(self):
        """What pyserial says opening the line as pymodbus does (a URL, settings the
        adapter refuses), which pymodbus only logs."""
        import serial       # pymodbus's serial extra: only needed where a line is serial
        try:
            serial.serial_for_url(self.serial, baudrate=self.baud,
                                  parity=self._device_parity(), stopbits=self.stopbits,
                                  exclusive=True).close()
        except (serial.SerialException, ValueError, OSError) as error:
            return "cannot open: %s" % error
        return "cannot open (it opened on a second try: an adapter coming and going?)"

    def _drop(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self):
        self._drop()

    def __repr__(self):
        return "<Bus %s>" % self.link


class Buses:
    """The buses of one process by link, so meters on the same RS-485 line (or behind the
    same TCP gateway) share one Bus and its lock. Asking for a serial device again with other
    line settings is a configuration error: one line has one baud rate."""

    def __init__(self):
        self._by_link = {}

    def get(self, tcp=None, serial=None, baud=9600, parity="N", stopbits=1,
            timeout_ms=DEFAULT_TIMEOUT_MS, retries=DEFAULT_RETRIES):
        if serial is not None:
            key = ("serial", os.path.realpath(serial) if "://" not in serial else serial)
        else:
            key = ("tcp",) + (tcp if isinstance(tcp, tuple) else parse_host_port(tcp))
        bus = self._by_link.get(key)
        if bus is None:
            bus = self._by_link[key] = Bus(tcp=tcp, serial=serial, baud=baud, parity=parity,
                                           stopbits=stopbits, timeout_ms=timeout_ms,
                                           retries=retries)
            return bus
        if bus.is_serial and (bus.baud, bus.parity, bus.stopbits) != (
                baud, str(parity).upper(), stopbits):
            raise ValueError("%s is already in use at %d %d%s%d; one line has one setting "
                             "(asked for %d %d%s%d)" % (
                                 serial, bus.baud, 8, bus.parity, bus.stopbits,
                                 baud, 8, str(parity).upper(), stopbits))
        # the slowest meter on a line sets its patience (pymodbus takes it when opening)
        if timeout_ms > bus.timeout_ms:
            bus.timeout_ms = timeout_ms
            bus.close()
        bus.retries = max(bus.retries, retries)
        return bus

    def all(self):
        return list(self._by_link.values())

    def close(self):
        for bus in self._by_link.values():
            bus.close()


def _wall_clock_ms():
    return int(time.time() * 1000)


class ModbusMeter(modbus_meter.ProfileMeter, Meter):
    """A meter of a known register map (`profile`, a dict of hal/meter_profiles.py) at
    `unit_id` on `bus`. `await read()` -> MeterSample with timestamp_ms = when the snapshot
    started (`clock()`, default wall-clock milliseconds), or MeterError."""

    def __init__(self, profile, unit_id, bus, model=None, clock=None):
        if not 0 <= unit_id <= 255:
            raise ValueError("unit id must be 0..255, got %r" % unit_id)
        modbus_meter.ProfileMeter.__init__(self, profile, unit_id, model,
                                           clock or _wall_clock_ms)
        self.bus = bus
        self.link = bus.link

    async def _read_registers(self, function, start, count):
        return await self.bus.read_registers(self.unit_id, function, start, count)

    def describe(self, table, quantity):
        return describe_value(self.profile, table, quantity)


def describe_value(profile, table, quantity):
    """'voltage_l1 = 1725.4 V (plausible: 0..1000 V)' for an error message."""
    _, _, (low, high) = modbus_meter.QUANTITIES[quantity]
    unit, divisor = QUANTITY_UNITS[quantity]
    for name, function, address, kind, order, scale in profile["rows"]:
        if name != quantity or isinstance(scale, str):
            continue
        words = [table.get((function, address + i))
                 for i in range(modbus_meter.TYPES[kind][0])]
        if None in words:
            break
        value = modbus_meter.decode_value(words, kind, order, scale)
        if value is None:
            break
        unit = " " + unit if unit else ""
        return "%s = %s%s (plausible: %s..%s%s)" % (
            quantity, _number(value / divisor), unit, _number(low / divisor),
            _number(high / divisor), unit)
    return quantity


def _number(value):
    return ("%.6g" % value) if abs(value) < 1e7 else ("%.3e" % value)


# quantity -> (display unit, integer units per display unit)
QUANTITY_UNITS = {
    "energy_import": ("Wh", 1), "energy_export": ("Wh", 1),
    "power": ("W", 1), "power_l1": ("W", 1), "power_l2": ("W", 1), "power_l3": ("W", 1),
    "current_l1": ("A", 1000), "current_l2": ("A", 1000), "current_l3": ("A", 1000),
    "voltage_l1": ("V", 10), "voltage_l2": ("V", 10), "voltage_l3": ("V", 10),
    "frequency": ("Hz", 1000), "power_factor": ("", 1000),
}

CONFIG_KEYS = ("model", "tcp", "serial", "baud", "parity", "stopbits", "id", "timeout_ms",
               "timeout", "retries", "registers", "on_failure")


def meter_from_config(config, buses=None, profiles=None, clock=None):
    """A ModbusMeter from a board's [meter] table:
        {"model": "sdm630", "serial": "/dev/ttyUSB0", "baud": 9600, "parity": "N",
         "stopbits": 1, "id": 1, "timeout_ms": 1000, "retries": 2}
    or {"model": ..., "tcp": "host:port", "id": ...}. A missing key (or None, as
    tools/boardfile.py leaves unset keys) takes the profile's default. "timeout" is taken as
    milliseconds too (the board file's parsed duration); model "custom" reads the rows in
    "registers"; "on_failure" is the agent's business and ignored here. With `buses` (a
    Buses), meters on the same link share one Bus. ValueError names the key that is wrong."""
    profiles = PROFILES if profiles is None else profiles
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError("meter: unknown key %s (known: %s)" % (
            ", ".join(unknown), ", ".join(CONFIG_KEYS)))
    config = {k: v for k, v in config.items() if v is not None}
    model = config.get("model")
    if model != "custom" and model not in profiles:
        raise ValueError("meter: model %r is not one of %s" % (
            model, ", ".join(sorted(profiles) + ["custom"])))
    profile = modbus_meter.board_profile(config, profiles)
    if model == "custom":
        try:
            modbus_meter.check_profile(profile)
        except modbus_meter.ProfileError as error:
            raise ValueError("meter custom: %s" % error) from None
        if not profile["rows"]:
            raise ValueError("meter custom: no registers")
    defaults = profile.get("defaults", {})
    if ("tcp" in config) == ("serial" in config):
        raise ValueError("meter %s: give either tcp = \"HOST:PORT\" or serial = \"DEVICE\""
                         % model)
    serial = "serial" in config
    unit = config.get("id", defaults.get("id", 1))
    if not isinstance(unit, int) or not (1 if serial else 0) <= unit <= (247 if serial else 255):
        raise ValueError("meter %s: id must be 1..247 on a serial line (0..255 on TCP), "
                         "got %r" % (model, unit))
    settings = dict(
        baud=config.get("baud", defaults.get("baud", 9600)),
        parity=config.get("parity", defaults.get("parity", "N")),
        stopbits=config.get("stopbits", defaults.get("stopbits", 1)),
        timeout_ms=config.get("timeout_ms", config.get("timeout", DEFAULT_TIMEOUT_MS)),
        retries=config.get("retries", DEFAULT_RETRIES))
    if serial and isinstance(settings["baud"], int) and settings["baud"] > 0:
        settings["timeout_ms"] = max(settings["timeout_ms"], min_timeout_ms(
            modbus_meter.plan(profile), settings["baud"], str(settings["parity"]).upper(),
            settings["stopbits"]))
    link = dict(serial=config["serial"]) if serial else dict(tcp=config["tcp"])
    try:
        bus = (buses or Buses()).get(**link, **settings)
    except ValueError as error:
        raise ValueError("meter %s: %s" % (model, error)) from None
    return ModbusMeter(profile, unit, bus, model=model, clock=clock)


def board_meters(board, clock=None, link=None):
    """{connector id: ModbusMeter} for a board whose [meter] model is a Modbus one (else
    empty): connector k (in id order) reads unit id + k - 1, all on one shared bus. `link`
    ({"tcp": ...} or {"serial": ...}) replaces the board's own (the simulator serves the
    meters somewhere of its own)."""
    meter = dict(board.get("meter", {}))
    if meter.get("model", "sim") in ("sim", "none"):
        return {}
    if link is not None:
        meter.update({"tcp": None, "serial": None})
        meter.update(link)
    buses = Buses()
    units = modbus_meter.unit_ids(board, PROFILES.get(meter["model"], {}))
    return {connector_id: meter_from_config(dict(meter, id=unit), buses, clock=clock)
            for connector_id, unit in units.items()}

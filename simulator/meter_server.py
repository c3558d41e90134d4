"""Simulated Modbus energy meters on real Modbus: TCP, and RTU over a pty pair (CPython).

Three parts:

* `MeterImage(profile)` lays out the register image of a meter profile (hal/meter_profiles.py)
  with `construct`: every contiguous run of rows is a `Struct` of per-row fields (Float32b,
  Int32ub, Int64sb..., words reversed for CDAB, the row's scale applied inversely, "not
  available" patterns for a value the sample lacks). It shares only the profile vocabulary
  with hal/modbus_meter.py, not its code, so the encoder here and the decoder there check
  each other (DESIGN.md decision 7). `image.words(sample)` -> {(function, address): word}.
* `SimulatedMeter(profile, unit_id, source)`: one Modbus unit. `source()` returns a
  hal.interfaces.MeterSample at every request (simulator/world.py `SimMeter.sample`, or
  `SteadyLoad`, which integrates a configured current and voltage in integers), and
  `inject(kind, count=None, **params)` / `clear(kind=None)` drive the fault table `FAULTS`.
* `start_tcp(meters, host, port)` / `start_rtu(meters, baud, parity, stopbits, pace)` serve
  one or several meters (unit ids) with pymodbus 3.16; `serve_forever(...)` is the entry of
  `evse meter serve`.

Why the server looks like this. pymodbus 3.16's datastore is churning (spec/libraries.md §3):
the context classes log "deprecated", `get/setValues` on data blocks are gone, and everything is
converted into the new `SimDevice`/`SimData` model. So each meter is a `SimDevice` whose blocks
are exactly the profile's mapped registers (holding and input registers apart, as `SimDevice`'s
4-tuple form allows): pymodbus itself then answers exception 02 for a read that touches an
unmapped register, and the device's documented async `action` hook fills the requested
registers from a fresh sample at every read. What a datastore cannot express goes through the
two trace hooks every pymodbus 3.16 server takes:
  - `trace_pdu` on a received request decides whether there is an answer at all (an unknown
    unit id stays silent, as on an RS-485 bus; `no_answer`) or an exception answer (a
    function code the profile does not read -> 01, the `exception` fault) before the
    datastore is asked, and arms the value and frame faults for that one reply;
  - `trace_packet` on a frame being sent damages it (`crc_error`, `garbage`).
A hand-written RTU slave was not needed: the one thing pymodbus cannot do (send a frame with a
bad CRC or random bytes) is a byte transformation of its finished frame. The pty's timing
comes from simulator/rs485.py (a relay paced at the line's baud rate and frame format).

Fault table (`FAULTS`; kind -> stage, what the client observes):
    no_answer         request  nothing is sent: the client times out
    exception         request  exception response, code 04 (device failure) or `code=N`
    energy_backwards  values   the energy import register goes back by `by_wh` (1000 Wh)
    absurd_power      values   power registers read `power_w` (10 MW; phases a third each),
                               saturated to what the register can hold
    crc_error         frame    RTU: the reply with its CRC broken (pymodbus discards it,
                               retries, then raises); TCP has no CRC: the answer a TCP/RTU
                               gateway gives when its serial reply was corrupt, exception 0B
    garbage           frame    random bytes as long as the reply would have been
A fault lasts until cleared, or for `count` replies (`meter.inject("exception", code=6,
count=1)`). Several may be active at once. Faults are taken per request when it arrives and
used by its reply, which assumes one request in flight per unit, as on a bus; two TCP clients
polling the same unit at the same instant may see a fault on the other's reply.

API:
    MeterImage(profile, scale_factors=None)
        .words(sample, function=None, address=None, count=None, saturate=False)
        .runs -> [(function, start, count)]        .functions -> {3, 4}
    SteadyLoad(current_a=16, voltage_v=230, phases=3, power_factor_permille=1000,
               frequency_mhz=50000, energy_wh=0, clock_ns=time.monotonic_ns)  .sample()
    SimulatedMeter(profile, unit_id=None, source=None, seed=0, scale_factors=None)
        .inject(kind, count=None, **params)  .clear(kind=None)  .faults  .requests
    await start_tcp(meters, host="127.0.0.1", port=0) -> MeterServer (.host, .port)
    await start_rtu(meters, baud=9600, parity="N", stopbits=1, pace=True)
        -> MeterServer (.client_path for the client's pyserial, .line: rs485.Rs485Line)
    await server.stop()          (or `async with await start_tcp(...) as server:`)
    await serve_forever(model, tcp=None, pty=False, unit_id=1, baud=9600, parity="N",
                        stopbits=1, pace=True, current_a=16, voltage_v=230, phases=None,
                        print_fn=print)
        `tcp` is "HOST:PORT" (or a (host, port) tuple; port 0 picks a free one); exactly one
        of `tcp` and `pty`. `phases` defaults to the model's (`measured_phases`: 1 for a
        single-phase meter, which refuses more). Prints one line saying where it listens
        (for a pty, the path a client opens), then serves until cancelled. Raises ValueError
        for a bad model, address or load (the message names the known models, or the
        reading the load would give and the bound it breaks), OSError when it cannot
        listen (saying why: the port in use, an address not of this machine).
"""
import asyncio
import errno
import math
import random
import socket
import time

from construct import (Adapter, Float32b, Int16sb, Int16ub, Int32sb, Int32ub, Int64sb,
                       Int64ub, Struct, Transformed)
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.interfaces import MeterSample
from hal.meter_profiles import PROFILES
from hal.modbus_client import QUANTITY_UNITS
from hal.modbus_meter import ABCD, CDAB, F32, QUANTITIES, S16, S32, S64, U16, U32, U64
from simulator.rs485 import Rs485Line

# -- the register image ------------------------------------------------------------------

# type -> (construct field, "not available" raw value, lowest and highest real reading)
REGISTER_TYPES = {
    F32: (Float32b, math.nan, None, None),
    U16: (Int16ub, 0xFFFF, 0, 0xFFFE),
    S16: (Int16sb, -0x8000, -0x7FFF, 0x7FFF),
    U32: (Int32ub, 0xFFFFFFFF, 0, 0xFFFFFFFE),
    S32: (Int32sb, -0x80000000, -0x7FFFFFFF, 0x7FFFFFFF),
    U64: (Int64ub, 0xFFFFFFFFFFFFFFFF, 0, 0xFFFFFFFFFFFFFFFE),
    S64: (Int64sb, -0x8000000000000000, -0x7FFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF),
}

# quantity -> (MeterSample attribute, phase index or None). Written out here rather than
# taken from hal.modbus_meter.QUANTITIES, so a wrong phase or field there shows in the tests.
QUANTITY_FIELDS = {
    "energy_import": ("energy_import_wh", None),
    "energy_export": ("energy_export_wh", None),
    "power": ("power_w", None),
    "power_l1": ("power_w_phases", 0),
    "power_l2": ("power_w_phases", 1),
    "power_l3": ("power_w_phases", 2),
    "current_l1": ("current_ma", 0),
    "current_l2": ("current_ma", 1),
    "current_l3": ("current_ma", 2),
    "voltage_l1": ("voltage_dv", 0),
    "voltage_l2": ("voltage_dv", 1),
    "voltage_l3": ("voltage_dv", 2),
    "frequency": ("frequency_mhz", None),
    "power_factor": ("power_factor_permille", None),
}
SCALE_FACTOR = "scale_factor"     # pseudo-quantity of a SunSpec-style scale-factor register


def _reverse_words(data):
    """ABCD <-> CDAB (and GHEFCDAB for 64 bits): the 16-bit words in reverse order."""
    return b"".join(data[i:i + 2] for i in range(len(data) - 2, -1, -2))


def _round_half_away(numerator, denominator):
    if numerator >= 0:
        return (numerator + denominator // 2) // denominator
    return -((-numerator + denominator // 2) // denominator)


class Reading(Adapter):
    """A reading in its integer unit (Wh, W, mA, dV, mHz, permille) -> the register's raw
    number: divided by 10**power (a float for F32, rounded half away from zero to the
    register's resolution otherwise); None -> the type's "not available" pattern. Building
    with `saturate=True` clamps an integer that does not fit instead of failing."""

    def __init__(self, subcon, kind, power, counter=False):
        super().__init__(subcon)
        self.kind = kind
        self.power = power
        self.counter = counter

    def _encode(self, obj, context, path):
        _, missing, low, high = REGISTER_TYPES[self.kind]
        if obj is None:
            return missing
        if self.kind == F32:
            return obj / 10 ** self.power if self.power > 0 else obj * 10 ** -self.power
        if self.power > 0 and self.counter:
            # an energy counter shows whole steps taken: 168 Wh on a 0.1 kWh register is
            # 0.1 kWh, never 0.2 (rounding up would bill energy not yet delivered)
            raw = obj // 10 ** self.power
        elif self.power > 0:
            raw = _round_half_away(obj, 10 ** self.power)
        else:
            raw = obj * 10 ** -self.power
        if not low <= raw <= high:
            if not context._params.get("saturate"):
                raise ValueError("%s: %r does not fit a %s register (raw %d)" % (
                    path, obj, self.kind, raw))
            raw = min(max(raw, low), high)
        return raw

    def _decode(self, obj, context, path):
        raise NotImplementedError("the simulator only builds images; hal/modbus_meter.py "
                                  "decodes them")


def register_field(kind, order, power, counter=False):
    """The construct field of one row: type, word order, inverse scale (`counter`: an
    energy register, which counts whole steps)."""
    base = REGISTER_TYPES[kind][0]
    size = base.sizeof()
    if order == CDAB and size > 2:
        base = Transformed(base, _reverse_words, size, _reverse_words, size)
    elif order not in (ABCD, CDAB):
        raise ValueError("word order must be %r or %r, got %r" % (ABCD, CDAB, order))
    return Reading(base, kind, power, counter)


def _parse_scale(scale):
    """(fixed power of ten, scale-factor register address or None) of a row's scale."""
    if isinstance(scale, int):
        return scale, None
    address, _, power = scale.partition(":")
    return int(power or "0"), int(address, 0)


class MeterImage:
    """The register image of one profile: see the module docstring."""

    def __init__(self, profile, scale_factors=None):
        self.profile = profile
        scale_factors = dict(scale_factors or {})
        cells = {}          # (function, address) -> (name, quantity, construct field, nregs)
        for quantity, function, address, kind, order, scale in profile["rows"]:
            if quantity not in QUANTITY_FIELDS:
                raise ValueError("%s: unknown quantity" % (quantity,))
            power, sf_address = _parse_scale(scale)
            if sf_address is not None:
                sf = scale_factors.setdefault(sf_address, 0)
                power += sf
                cells[(function, sf_address)] = (
                    "sf_%d" % sf_address, SCALE_FACTOR, Int16sb, 1)
            if (function, address) in cells:
                raise ValueError("%s: register %d of function %d is mapped twice" % (
                    quantity, address, function))
            field = register_field(kind, order, power, quantity.startswith("energy"))
            cells[(function, address)] = (quantity, quantity, field, field.sizeof() // 2)
        self.scale_factors = scale_factors
        # contiguous runs of cells -> one construct Struct each
        runs = []
        for (function, address), (name, quantity, field, nregs) in sorted(cells.items()):
            if runs and runs[-1][0] == function and runs[-1][1] + runs[-1][2] > address:
                raise ValueError("%s overlaps the register before it (%d)" % (name, address))
            if runs and runs[-1][0] == function and runs[-1][1] + runs[-1][2] == address:
                runs[-1][2] += nregs
                runs[-1][3].append((name, quantity, field))
            else:
                runs.append([function, address, nregs, [(name, quantity, field)]])
        self.runs = [(function, start, count) for function, start, count, _ in runs]
        self.functions = {function for function, _, _ in self.runs}
        self._structs = [Struct(*[name / field for name, _, field in fields])
                         for _, _, _, fields in runs]
        self._names = [[(name, quantity) for name, quantity, _ in fields]
                       for _, _, _, fields in runs]

    def words(self, sample, function=None, address=None, count=None, saturate=False):
        """{(function, address): word} of every mapped register, or of the registers of
        `function` in address .. address+count-1 (the runs overlapping it, whole)."""
        table = {}
        for (run_function, start, length), struct, names in zip(
                self.runs, self._structs, self._names):
            if function is not None and (
                    run_function != function or start >= address + count or
                    start + length <= address):
                continue
            values = {name: self._value(sample, name, quantity) for name, quantity in names}
            data = struct.build(values, saturate=saturate)
            for offset in range(length):
                table[(run_function, start + offset)] = \
                    (data[2 * offset] << 8) | data[2 * offset + 1]
        return table

    def _value(self, sample, name, quantity):
        if quantity == SCALE_FACTOR:
            return self.scale_factors[int(name[3:])]
        field, phase = QUANTITY_FIELDS[quantity]
        value = getattr(sample, field, None)
        if phase is not None and value is not None:
            value = value[phase] if phase < len(value) else None
        return value


# -- what the meter measures -------------------------------------------------------------

class SteadyLoad:
    """A meter in front of a constant load, for bench work: `current_a` per phase on
    `phases` phases (the others 0 A) at `voltage_v`. Energy integrates in integers
    (mA x dV x permille x ns, 1e-16 J per unit), so it never drifts, however long it runs."""

    UNITS_PER_WH = 3600 * 10 ** 16

    def __init__(self, current_a=16, voltage_v=230, phases=3, power_factor_permille=1000,
                 frequency_mhz=50000, energy_wh=0, clock_ns=time.monotonic_ns):
        if phases not in (1, 2, 3):
            raise ValueError("phases must be 1, 2 or 3, got %r" % (phases,))
        # a load draws (the import counter only counts up); a meter is powered by the
        # voltage it measures
        if not (math.isfinite(current_a) and current_a >= 0):
            raise ValueError("current must be 0 A or more, got %r A" % (current_a,))
        if not (math.isfinite(voltage_v) and voltage_v > 0):
            raise ValueError("voltage must be above 0 V, got %r V" % (voltage_v,))
        current_ma = int(round(current_a * 1000))
        voltage_dv = int(round(voltage_v * 10))
        self.current_ma = tuple(current_ma if i < phases else 0 for i in range(3))
        self.voltage_dv = (voltage_dv,) * 3
        self.power_factor_permille = power_factor_permille
        self.frequency_mhz = frequency_mhz
        self.clock_ns = clock_ns
        self._since = clock_ns()
        self._units = energy_wh * self.UNITS_PER_WH

    def _power_units(self):
        """Per phase, in mA x dV x permille (1e-7 W)."""
        return [i * u * self.power_factor_permille
                for i, u in zip(self.current_ma, self.voltage_dv)]

    def sample(self):
        now = self.clock_ns()
        powers = self._power_units()
        self._units += sum(powers) * (now - self._since)
        self._since = now
        return MeterSample(
            energy_import_wh=self._units // self.UNITS_PER_WH, energy_export_wh=0,
            power_w=_round_half_away(sum(powers), 10 ** 7),
            power_w_phases=tuple(_round_half_away(p, 10 ** 7) for p in powers),
            current_ma=self.current_ma, voltage_dv=self.voltage_dv,
            frequency_mhz=self.frequency_mhz,
            power_factor_permille=self.power_factor_permille, timestamp_ms=now // 10 ** 6)


# -- faults ------------------------------------------------------------------------------

REQUEST, VALUES, FRAME = "request", "values", "frame"
SILENT = "silent"                      # a request stage's verdict: send nothing


def _no_answer(params):
    return SILENT


def _exception(params):
    return params.get("code", ExcCodes.DEVICE_FAILURE)


def _energy_backwards(sample, params):
    if sample.energy_import_wh is not None:
        sample.energy_import_wh = max(0, sample.energy_import_wh - params.get("by_wh", 1000))
    return sample


def _absurd_power(sample, params):
    power = params.get("power_w", 10 ** 7)
    sample.power_w = power
    sample.power_w_phases = (power // 3,) * 3
    return sample


def _crc_error(frame, framing, rng, params):
    if framing == "rtu":
        return frame[:-1] + bytes([frame[-1] ^ 0xA5])
    # MBAP: tid, pid, length 3, unit, function | 0x80, 0x0B gateway target failed to respond
    return frame[:4] + b"\x00\x03" + frame[6:7] + bytes([frame[7] | 0x80, 0x0B])


def _garbage(frame, framing, rng, params):
    return bytes(rng.randrange(256) for _ in range(params.get("length") or len(frame)))


# kind -> (stage, reaction). Request reactions return None, SILENT or an exception code;
# value reactions change the sample served; frame reactions return the bytes sent instead.
FAULTS = {
    "no_answer": (REQUEST, _no_answer),
    "exception": (REQUEST, _exception),
    "energy_backwards": (VALUES, _energy_backwards),
    "absurd_power": (VALUES, _absurd_power),
    "crc_error": (FRAME, _crc_error),
    "garbage": (FRAME, _garbage),
}


# -- one Modbus unit ---------------------------------------------------------------------

def profile_named(model):
    if isinstance(model, dict):
        return model
    try:
        return PROFILES[model]
    except KeyError:
        raise ValueError("unknown meter model %r (known: %s)" % (
            model, ", ".join(sorted(PROFILES)))) from None


def measured_phases(profile):
    """1 for a single-phase meter (its map has L1 quantities and none of L2 or L3), else 3:
    a map with no phase at all (sdm72d-m: power and energy) is a three-phase meter's."""
    phases = {quantity[-2:] for quantity, *_ in profile["rows"]
              if quantity[-3:-1] == "_l"}
    return 1 if phases == {"l1"} else 3


def implausible_reading(profile, sample):
    """'current_l1 = 100000 A, outside what a meter reading can plausibly be (-10000..10000
    A)' for the first quantity of the profile's map that `sample` puts outside what
    hal/modbus_meter.py takes as a plausible reading (`evse meter read` refuses it), or
    None. That is the bound on a load served for bench work: generous (1000 V, 10 kA,
    1 MW) and the same for every model, as the profiles do not say what each meter's shunt
    or current transformers can measure; a quantity the model does not map is not bound."""
    for quantity in sorted({row[0] for row in profile["rows"]}):
        field, phase = QUANTITY_FIELDS[quantity]
        value = getattr(sample, field)
        if phase is not None:
            value = value[phase]
        low, high = QUANTITIES[quantity][2]
        if not low <= value <= high:
            unit, divisor = QUANTITY_UNITS[quantity]
            return "%s = %s %s, outside what a meter reading can plausibly be (%s..%s %s)" % (
                quantity, _decimal(value / divisor), unit, _decimal(low / divisor),
                _decimal(high / divisor), unit)
    return None


def _decimal(number):
    """1380000.0 -> '1380000', 230.5 -> '230.5' (never an exponent)."""
    return ("%.3f" % number).rstrip("0").rstrip(".")


class SimulatedMeter:
    """One meter on the bus: see the module docstring."""

    def __init__(self, profile, unit_id=None, source=None, seed=0, scale_factors=None):
        self.model = profile if isinstance(profile, str) else profile.get("title", "custom")
        self.profile = profile_named(profile)
        self.unit_id = self.profile.get("defaults", {}).get("id", 1) \
            if unit_id is None else unit_id
        self.image = MeterImage(self.profile, scale_factors)
        self.source = source if source is not None else SteadyLoad().sample
        self.faults = {}                  # kind -> [replies left or None, params]
        self.requests = 0
        self.rng = random.Random(seed)
        self._armed = {VALUES: (), FRAME: ()}

    def inject(self, kind, count=None, **params):
        if kind not in FAULTS:
            raise ValueError("unknown meter fault %r (known: %s)" % (
                kind, ", ".join(sorted(FAULTS))))
        self.faults[kind] = [count, params]

    def clear(self, kind=None):
        if kind is None:
            self.faults.clear()
        else:
            self.faults.pop(kind, None)

    def arm(self, function_code):
        """A request arrived: take the faults that apply to its reply. Returns SILENT, an
        exception code, or None to answer from the image."""
        self.requests += 1
        taken = {REQUEST: [], VALUES: [], FRAME: []}
        for kind, entry in list(self.faults.items()):
            left, params = entry
            stage, reaction = FAULTS[kind]
            taken[stage].append((reaction, params))
            if left is not None:
                entry[0] = left - 1
                if entry[0] <= 0:
                    del self.faults[kind]
        self._armed = {VALUES: taken[VALUES], FRAME: taken[FRAME]}
        for reaction, params in taken[REQUEST]:
            verdict = reaction(params)
            if verdict is not None:
                return verdict
        if function_code not in self.image.functions:
            return ExcCodes.ILLEGAL_FUNCTION
        return None

    def reply_sample(self):
        sample = self.source()
        for reaction, params in self._armed[VALUES]:
            sample = reaction(sample, params)
        return sample

    def damage(self, frame, framing):
        for reaction, params in self._armed[FRAME]:
            frame = reaction(frame, framing, self.rng, params)
        self._armed = {VALUES: (), FRAME: ()}
        return frame

    async def action(self, function_code, start_address, address, count, registers,
                     set_values):
        """pymodbus SimDevice hook: fill the requested registers from a fresh sample."""
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION      # meters here are read-only
        words = self.image.words(self.reply_sample(), function_code, address, count,
                                 saturate=bool(self._armed[VALUES]))
        for offset in range(count):
            registers[address - start_address + offset] = words[(function_code,
                                                                 address + offset)]
        return None

    def device(self):
        """The pymodbus SimDevice: blocks are exactly the mapped registers."""
        blocks = {3: [], 4: []}
        for function, start, count in self.image.runs:
            blocks[function].append(SimData(start, count=count, datatype=DataType.REGISTERS))
        placeholder = [SimData(0, count=1, datatype=DataType.REGISTERS)]  # never reached:
        bits = [SimData(0, values=False, datatype=DataType.BITS)]       # trace_pdu refuses
        return SimDevice(id=self.unit_id, action=self.action, simdata=(
            bits, list(bits), blocks[3] or placeholder, blocks[4] or list(placeholder)))


# -- the servers -------------------------------------------------------------------------

class Refusal(ModbusPDU):
    """Stands in for a request that gets an exception answer without reaching the datastore."""

    def __init__(self, request, code):
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self.code = code

    async def datastore_update(self, context, device_id):
        return ExceptionResponse(self.function_code, self.code)


class MeterBus:
    """The meters of one server, and the pymodbus hooks that route requests to them."""

    def __init__(self, meters, framing):
        if isinstance(meters, SimulatedMeter):
            meters = [meters]
        self.meters = {}
        for meter in meters:
            if meter.unit_id in self.meters:
                raise ValueError("two meters with unit id %d on one bus" % meter.unit_id)
            if not 1 <= meter.unit_id <= 247:
                raise ValueError("unit id must be 1..247, got %d" % meter.unit_id)
            self.meters[meter.unit_id] = meter
        self.framing = framing

    def devices(self):
        return [meter.device() for meter in self.meters.values()]

    def trace_pdu(self, sending, pdu):
        if sending:
            return pdu
        meter = self.meters.get(pdu.dev_id)
        if meter is None:
            return None                 # nobody on the bus has that address
        verdict = meter.arm(pdu.function_code)
        if verdict is None:
            return pdu
        if verdict == SILENT:
            return None
        return Refusal(pdu, verdict)

    def trace_packet(self, sending, frame):
        if not sending or not frame:
            return frame
        meter = self.meters.get(frame[0] if self.framing == "rtu" else frame[6])
        return meter.damage(frame, self.framing) if meter else frame


class MeterServer:
    """A running server; `await stop()` it, or use it as an async context manager."""

    def __init__(self, server, bus, host=None, port=None, line=None):
        self.server = server
        self.bus = bus
        self.host = host
        self.port = port
        self.line = line
        self.client_path = line.client_path if line else None

    @property
    def meters(self):
        return self.bus.meters

    async def stop(self):
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self.line is not None:
            self.line.stop()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.stop()


async def start_tcp(meters, host="127.0.0.1", port=0):
    bus = MeterBus(meters, "tcp")
    server = ModbusTcpServer(bus.devices(), address=(host, port), trace_pdu=bus.trace_pdu,
                             trace_packet=bus.trace_packet)
    try:
        await server.serve_forever(background=True)
    except RuntimeError:
        raise OSError(why_cannot_listen(host, port)) from None
    host, port = server.transport.sockets[0].getsockname()[:2]
    return MeterServer(server, bus, host=host, port=port)


def why_cannot_listen(host, port):
    """pymodbus only says "Could not start listen, please check address."; bind once more
    to tell the user what is wrong."""
    where = "cannot listen on %s:%d" % (host, port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        return "%s: host name %s: %s" % (where, host, error.strerror)
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as the server does
        try:
            probe.bind(address)
        except OSError as error:
            return "%s: %s" % (where, {
                errno.EADDRINUSE: "port %d is in use (another server listens there; port 0 "
                                  "picks a free one)" % port,
                errno.EADDRNOTAVAIL: "%s is not an address of this machine" % host,
                errno.EACCES: "permission denied (ports below 1024 need privileges)",
            }.get(error.errno, error.strerror))
    return where


async def start_rtu(meters, baud=9600, parity="N", stopbits=1, pace=True):
    bus = MeterBus(meters, "rtu")
    line = Rs485Line(baud=baud, parity=parity, stopbits=stopbits, pace=pace).start()
    try:
        # a pty refuses a parity setting (tcsetattr: EINVAL) and carries no parity bit
        # anyway: the line's relay paces the characters with it, the pty end stays 8N1
        server = ModbusSerialServer(
            bus.devices(), framer=FramerType.RTU, port=line.device_path, baudrate=baud,
            parity="N", stopbits=stopbits, trace_pdu=bus.trace_pdu,
            trace_packet=bus.trace_packet)
        await server.serve_forever(background=True)
    except BaseException:
        line.stop()
        raise
    return MeterServer(server, bus, line=line)


def parse_host_port(text):
    """"HOST:PORT" (IPv6 as "[::1]:502") -> (host, port)."""
    if not isinstance(text, str):
        host, port = text
        return host, int(port)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, got %r" % (text,))
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve_forever(model, tcp=None, pty=False, unit_id=1, baud=9600, parity="N",
                        stopbits=1, pace=True, current_a=16, voltage_v=230, phases=None,
                        print_fn=print):
    """`evse meter serve`: one simulated meter in front of a steady load, until cancelled."""
    if (tcp is None) == (not pty):
        raise ValueError("serve on exactly one of tcp=HOST:PORT and pty=True")
    profile = profile_named(model)
    name = model if isinstance(model, str) else profile.get("title", "custom")
    if phases is None:
        phases = measured_phases(profile)
    elif phases > measured_phases(profile):
        raise ValueError("%s is a single-phase meter: phases must be 1, got %r" % (
            name, phases))
    load = SteadyLoad(current_a, voltage_v, phases)
    implausible = implausible_reading(profile, load.sample())
    if implausible:
        raise ValueError("%s in front of %s A on %d phase%s at %s V would read %s" % (
            name, _decimal(current_a), phases, "s" * (phases > 1), _decimal(voltage_v),
            implausible))
    meter = SimulatedMeter(profile, unit_id=unit_id, source=load.sample)
    if tcp is not None:
        host, port = parse_host_port(tcp)
        server = await start_tcp([meter], host, port)
        print_fn("meter %s (unit %d) serving Modbus TCP on %s:%d" % (
            name, unit_id, server.host, server.port))
    else:
        server = await start_rtu([meter], baud=baud, parity=parity, stopbits=stopbits,
                                 pace=pace)
        print_fn("meter %s (unit %d) serving Modbus RTU (%d 8%s%d%s) on %s" % (
            name, unit_id, baud, parity, stopbits, ", paced" if pace else "",
            server.client_path))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()

"""Modbus energy meters as data: register rows, the reads they need, decoding into integers.

Portable (CPython and MicroPython): `struct` only. The same plan and decoder serve the
CPython transport (pymodbus, hal/modbus_client.py), the microcontroller's RTU master over
`machine.UART`, and `evse meter`. The profiles themselves are in hal/meter_profiles.py.

A profile is a dict:
    title, defaults (id, baud, parity "N"/"E"/"O", stop bits), max_registers per read,
    notes (where a fact is unconfirmed and which register was chosen because it is safer),
    rows: (quantity, function, address, type, word order, scale) tuples.
- quantity: one of QUANTITIES, always in its integer unit (Wh, W, mA, dV, mHz, permille).
- function: 3 (holding registers) or 4 (input registers); address: 0-based PDU address.
- type: F32, U32, S32, U64, S64, U16, S16; order: ABCD (high word first) or CDAB (low word
  first; for 64-bit values the whole word sequence is reversed).
- scale: a power of ten taking the register's value to the integer unit: a float in kWh to
  Wh is 3, 0.01 A steps to mA is 1, 0.01 W steps to W is -2. A string names the address of
  a signed 16-bit scale-factor register instead (SunSpec style: value x 10^sf), plus the
  fixed power of ten after a colon, e.g. "40194:3".

Decoding gives integers only: a float register is rounded once to its integer unit; energy
is never summed in floats. "Not available" patterns (all ones unsigned; 0x8000... signed, and
0x7FFF... signed as ABB sends it; NaN, infinity) decode to None. A value outside the range its
quantity can physically have is left None and reported as implausible; so is a value whose
SunSpec scale factor lies outside -10..10 (SunSpec's range).
"""
import struct

from hal.interfaces import MeterError, MeterSample

F32, U32, S32, U64, S64, U16, S16 = "f32", "u32", "s32", "u64", "s64", "u16", "s16"
ABCD, CDAB = "abcd", "cdab"

# type -> (registers, struct format of the big-endian bytes, "not available" raw pattern)
TYPES = {
    F32: (2, ">f", None),
    U32: (2, ">I", 0xFFFFFFFF),
    S32: (2, ">i", -0x80000000),
    U64: (4, ">Q", 0xFFFFFFFFFFFFFFFF),
    S64: (4, ">q", -0x8000000000000000),
    U16: (1, ">H", 0xFFFF),
    S16: (1, ">h", -0x8000),
}
# ABB's A/B series says "not available" with the largest signed value (0x7FFF...), SunSpec
# and Schneider with the smallest (TYPES): a signed register holding either is None. A meter
# sending its type's extreme is saturated or has nothing to say, never measuring
# (spec/standards.md §4; before this, ABB's marker failed the whole read as implausible).
SIGNED_MAX_NOT_AVAILABLE = {S16: 0x7FFF, S32: 0x7FFFFFFF, S64: 0x7FFFFFFFFFFFFFFF}
SCALE_FACTOR_RANGE = (-10, 10)      # SunSpec sunssf

# quantity -> (MeterSample field, phase index or None, plausible range in its integer unit)
QUANTITIES = {
    "energy_import": ("energy_import_wh", None, (0, 10 ** 12)),
    "energy_export": ("energy_export_wh", None, (0, 10 ** 12)),
    "power": ("power_w", None, (-10 ** 6, 10 ** 6)),
    "power_l1": ("power_w_phases", 0, (-10 ** 6, 10 ** 6)),
    "power_l2": ("power_w_phases", 1, (-10 ** 6, 10 ** 6)),
    "power_l3": ("power_w_phases", 2, (-10 ** 6, 10 ** 6)),
    "current_l1": ("current_ma", 0, (-10 ** 7, 10 ** 7)),
    "current_l2": ("current_ma", 1, (-10 ** 7, 10 ** 7)),
    "current_l3": ("current_ma", 2, (-10 ** 7, 10 ** 7)),
    "voltage_l1": ("voltage_dv", 0, (0, 10000)),
    "voltage_l2": ("voltage_dv", 1, (0, 10000)),
    "voltage_l3": ("voltage_dv", 2, (0, 10000)),
    "frequency": ("frequency_mhz", None, (0, 100000)),
    "power_factor": ("power_factor_permille", None, (-1000, 1000)),
}
PHASED_FIELDS = ("power_w_phases", "current_ma", "voltage_dv")


class ProfileError(ValueError):
    """A profile row that cannot be right (unknown type, register overlap, bad scale)."""


def row_registers(row):
    return TYPES[row[3]][0]


def check_profile(profile):
    """Raise ProfileError naming the first impossible row; used for custom profiles."""
    taken = {}
    seen = set()
    widest = 1
    for row in profile["rows"]:
        if not isinstance(row, (tuple, list)) or len(row) != 6:
            raise ProfileError("%r: a row is (quantity, function, address, type, order, scale)"
                               % (row,))
        quantity, function, address, kind, order, scale = row
        if not isinstance(quantity, str) or quantity not in QUANTITIES:
            raise ProfileError("%s: unknown quantity (known: %s)" % (
                quantity, ", ".join(sorted(QUANTITIES))))
        if quantity in seen:
            raise ProfileError("%s: more than one row for this quantity" % quantity)
        seen.add(quantity)
        if not isinstance(function, int) or function not in (3, 4):
            raise ProfileError("%s: function must be 3 or 4, got %r" % (quantity, function))
        if not isinstance(kind, str) or kind not in TYPES:
            raise ProfileError("%s: type must be one of %s, got %r" % (
                quantity, ", ".join(sorted(TYPES)), kind))
        if order not in (ABCD, CDAB):
            raise ProfileError("%s: word order must be abcd or cdab, got %r" % (quantity, order))
        count = row_registers(row)
        widest = max(widest, count)
        if not isinstance(address, int) or isinstance(address, bool) or \
                not 0 <= address <= 0x10000 - count:
            raise ProfileError("%s: address must be 0..%d for a %d-register %s, got %r" % (
                quantity, 0x10000 - count, count, kind, address))
        if isinstance(scale, str):
            _scale_factor_address(quantity, scale)
        elif not isinstance(scale, int) or isinstance(scale, bool) or not -9 <= scale <= 9:
            raise ProfileError("%s: scale must be a power of ten -9..9, got %r" % (
                quantity, scale))
        for offset in range(count):
            key = (function, address + offset)
            if key in taken and taken[key] != quantity:
                raise ProfileError("%s overlaps %s at register %d" % (
                    quantity, taken[key], address + offset))
            taken[key] = quantity
    for quantity, function, _, _, _, scale in profile["rows"]:
        if isinstance(scale, str):
            key = (function, _scale_factor_address(quantity, scale)[0])
            if key in taken:
                raise ProfileError("%s: its scale-factor register %d is %s's value" % (
                    quantity, key[1], taken[key]))
    limit = profile.get("max_registers", 125)
    if not isinstance(limit, int) or isinstance(limit, bool) or not widest <= limit <= 125:
        raise ProfileError("max_registers must be %d..125 (the widest row), got %r" % (
            widest, limit))


def _scale_factor_address(quantity, scale):
    address, _, power = scale.partition(":")
    try:
        address, power = int(address, 0), int(power or "0")
    except ValueError:
        address = power = None
    if address is None or not 0 <= address <= 0xFFFF or not -9 <= power <= 9:
        raise ProfileError("%s: scale %r: expected ADDRESS or ADDRESS:POWER (register "
                           "0..65535, power -9..9)" % (quantity, scale))
    return address, power


def _spans(profile):
    """(function, address, count) of every register the profile reads, scale factors too."""
    spans = []
    for row in profile["rows"]:
        spans.append((row[1], row[2], row_registers(row)))
        if isinstance(row[5], str):
            spans.append((row[1], _scale_factor_address(row[0], row[5])[0], 1))
    return spans


def plan(profile):
    """The reads a snapshot needs: (function, start, count) blocks merging registers that
    are exactly contiguous (a read never spans a gap: meters answer exception 02 there), at
    most max_registers each. Sorted, so the same profile always reads the same way."""
    limit = profile.get("max_registers", 125)
    blocks = []
    for function, address, count in sorted(set(_spans(profile))):
        if blocks:
            last_function, start, length = blocks[-1]
            end = start + length
            if last_function == function and address < end:
                # overlaps the previous block (a scale-factor register shared or inside a
                # value): read only what is not read yet
                if address + count <= end:
                    continue
                count, address = address + count - end, end
            if last_function == function and end == address and length + count <= limit:
                blocks[-1] = (function, start, length + count)
                continue
        blocks.append((function, address, count))
    return blocks


WORDS = {1: ">H", 2: ">HH", 4: ">HHHH"}     # registers -> their big-endian bytes


def _raw(words, kind, order):
    """The integer or float in `words` (16-bit register values, as read)."""
    if order == CDAB:
        words = words[::-1]
    return struct.unpack(TYPES[kind][1], struct.pack(WORDS[len(words)], *words))[0]


def _scaled(raw, power):
    if power >= 0:
        return raw * 10 ** power
    if isinstance(raw, float):
        return raw / 10 ** -power
    # integer steps to a coarser unit: round half away from zero, in integers
    divisor = 10 ** -power
    half = divisor // 2
    return (raw + half) // divisor if raw >= 0 else -((-raw + half) // divisor)


def decode_value(words, kind, order, power):
    """One register value in its integer unit, or None when the meter says "not available"
    (or sends NaN or infinity)."""
    raw = _raw(words, kind, order)
    if kind == F32:
        if raw != raw or raw in (float("inf"), float("-inf")):
            return None
        value = _scaled(raw, power)
        return int(value + 0.5) if value >= 0 else -int(-value + 0.5)
    if raw == TYPES[kind][2] or raw == SIGNED_MAX_NOT_AVAILABLE.get(kind):
        return None
    return _scaled(raw, power)


def registers_of(blocks, answers):
    """{(function, address): word} from the planned blocks and their answers."""
    table = {}
    for (function, start, count), words in zip(blocks, answers):
        if words is None or len(words) != count:
            continue
        for offset in range(count):
            table[(function, start + offset)] = words[offset]
    return table


def decode(profile, table, sample):
    """Fill `sample` (hal.interfaces.MeterSample) from a {(function, address): word} table.
    Returns the list of quantities that were implausible (left None), for the caller to
    report; missing registers just leave their quantity None."""
    implausible = []
    phased = {}
    for quantity, function, address, kind, order, scale in profile["rows"]:
        count = TYPES[kind][0]
        words = [table.get((function, address + i)) for i in range(count)]
        if None in words:
            continue
        value = None
        if isinstance(scale, str):
            sf_address, power = _scale_factor_address(quantity, scale)
            sf = table.get((function, sf_address))
            if sf is None:
                continue
            sf = sf - 0x10000 if sf & 0x8000 else sf
            if SCALE_FACTOR_RANGE[0] <= sf <= SCALE_FACTOR_RANGE[1]:
                value = decode_value(words, kind, order, power + sf)
            elif sf != -0x8000:                 # 0x8000: "not available"
                implausible.append(quantity)
        else:
            value = decode_value(words, kind, order, scale)
        field, phase, (low, high) = QUANTITIES[quantity]
        if value is not None and not low <= value <= high:
            implausible.append(quantity)
            value = None
        if phase is None:
            setattr(sample, field, value)
        else:
            phased.setdefault(field, [None, None, None])[phase] = value
    for field, values in phased.items():
        setattr(sample, field, tuple(values))
    return implausible


SERIAL_DEFAULTS = {"baud": 9600, "parity": "N", "stopbits": 1}
# what `evse bundle` keeps of a profile in board.json (title and notes are for people)
BUNDLED_KEYS = ("rows", "max_registers", "defaults")


def board_profile(meter, profiles=None):
    """The register map a board's [meter] table names, or None for "sim" and "none".

    Model "custom": its [[meter.registers]]. A bundled board (`evse bundle`) carries its
    model's map in board.json as "profile", so a microcontroller never imports the maps of
    every meter (hal/meter_profiles.py: about 30 KB of heap on import). Otherwise the
    model's entry in `profiles` (default: hal/meter_profiles.py)."""
    model = meter.get("model") or "sim"
    if model in ("sim", "none"):
        return None
    if model == "custom":
        return {"title": "custom meter", "rows": tuple(tuple(row) for row in
                                                      meter.get("registers") or ())}
    if meter.get("profile"):
        return meter["profile"]
    if profiles is None:
        from hal.meter_profiles import PROFILES as profiles
    if model not in profiles:
        raise ValueError("meter: model %r is not one of %s" % (
            model, ", ".join(sorted(profiles))))
    return profiles[model]


def bundled_profile(profile):
    return {key: profile[key] for key in BUNDLED_KEYS if key in profile}


def serial_settings(meter, profile):
    """{"baud", "parity", "stopbits"}: the board's, else the profile's defaults."""
    defaults = profile.get("defaults", {})
    return {key: meter.get(key) or defaults.get(key, value)
            for key, value in SERIAL_DEFAULTS.items()}


def unit_ids(board, profile):
    """{connector id: Modbus unit id}: all of a board's meters hang on one bus, connector k
    (in id order) at the [meter] id (else the profile's default) + k - 1."""
    first = board.get("meter", {}).get("id") or profile.get("defaults", {}).get("id", 1)
    ids = sorted(c["id"] for c in board["connectors"])
    return {connector_id: first + index for index, connector_id in enumerate(ids)}


class ProfileMeter:
    """A meter of a known register map read through any Modbus master (the pymodbus bus of
    hal/modbus_client.py, the RTU master of hal/modbus_rtu.py): one snapshot is every block
    of the profile's plan, decoded together, or a MeterError (no half snapshots).

    Subclasses (which are also hal.interfaces.Meter) set `link` (for messages) and give
    `async _read_registers(function, start, count)`; `describe(table, quantity)` may say
    more about an implausible value."""

    def __init__(self, profile, unit_id, model=None, clock=None):
        self.profile = profile
        self.unit_id = unit_id
        self.model = model or profile.get("title", "meter")
        self.clock = clock
        self.blocks = plan(profile)

    def describe(self, table, quantity):
        return quantity

    async def read_table(self):
        """{(function, address): word} of every planned block, all read, or MeterError."""
        answers = []
        for function, start, count in self.blocks:
            try:
                answers.append(await self._read_registers(function, start, count))
            except MeterError as error:
                raise with_context(error, "%s: %s" % (self.model, error))
        return registers_of(self.blocks, answers)

    async def read(self):
        started = self.clock() if self.clock is not None else None
        table = await self.read_table()
        sample = MeterSample(timestamp_ms=started)
        implausible = decode(self.profile, table, sample)
        if implausible:
            raise MeterError("%s: %s id %d: implausible %s" % (
                self.model, self.link, self.unit_id,
                ", ".join(self.describe(table, q) for q in implausible)))
        return sample


def with_context(error, text):
    """The same error (its class, and its exception code if it has one) with another
    message: MicroPython keeps an exception's args read-only, so a new one is made."""
    if hasattr(error, "code"):
        return type(error)(text, error.code)
    return type(error)(text)

"""The HAL contract: what a board driver gives the agent and what it takes from it.

Portable (CPython and MicroPython): plain classes, no abc. A driver subclasses the interface
it implements and overrides the methods; the defaults say what the agent assumes when a board
lacks a part (no feedback contact, no lock motor, ...). Units are integers: mV, mA, dV
(decivolts), W, Wh, 0.1 °C, ohms, permille.

Events. Every device has an `on_change` attribute. The agent sets it to a zero-argument
callable; a driver calls it whenever something it reports may have changed (an ADC ISR, a
co-processor message, the simulator's world). The agent then reads the device. A driver that
cannot tell (a plain ADC) never calls it: the agent polls at the board's sample interval.
Safety does not rest on this software path alone: on a real board the RCD/RDC-DD cuts the
contactor coil in hardware, and a co-processor or watchdog owns the last line (DESIGN.md §4).

Modelled on EVerest's `evse_board_support`, `ac_rcd`, `connector_lock`, `powermeter` and `kvs`
interfaces and MicroOcpp's integrator inputs/outputs.
"""


class Device:
    on_change = None

    def changed(self):
        """Drivers call this from wherever they learn of a change."""
        callback = self.on_change
        if callback is not None:
            callback()


class Pilot(Device):
    """Control pilot generator (+-12 V, 1 kHz, 1 kOhm source) and plateau sampler.

    commands: set_pwm(duty) while offering current; set_static("x1" | "f" | "e") otherwise.
    readings: read() -> (high_mv, low_mv), the latest high and low plateau. With a static
              output the two are equal. The high plateau must be sampled away from the
              edges (>= 10 us after the rising edge; at 5 % the plateau lasts only 50 us).
    events:   on_change when the classified plateau may have changed.
    """
    supports_state_e = False

    def set_pwm(self, duty_permille):
        raise NotImplementedError

    def set_static(self, level):
        """"x1" = +12 V (no PWM), "f" = -12 V (not available), "e" = 0 V if supported."""
        raise NotImplementedError

    def read(self):
        raise NotImplementedError


class Contactor(Device):
    """Main contactor (all poles), optionally with a mirror/auxiliary feedback contact.

    commands: set(closed).
    readings: feedback() -> True (closed) / False (open) / None (board has no feedback).
    events:   on_change when the feedback contact moves.
    """
    has_feedback = False

    def set(self, closed):
        raise NotImplementedError

    def feedback(self):
        return None


class Rcd(Device):
    """Residual current device: type A 30 mA AC plus 6 mA DC detection (RDC-DD), or type B.

    The device trips by itself (in hardware it also cuts the contactor coil); the agent
    learns of it through trip() and reacts in software.
    readings: trip() -> None, "ac" or "dc" (latched until reset()).
    commands: reset() -> bool (False if the residual current is still there);
              self_test() -> bool (True = passed), only with no EV and contactor open.
    events:   on_change on a trip.
    """

    def trip(self):
        return None

    def reset(self):
        return True

    def self_test(self):
        return True


class Lock(Device):
    """Socket cable lock (Type 2 sockets).

    commands: set(locked).
    readings: feedback() -> True / False / None (no feedback switch).
    events:   on_change when the feedback moves.
    """
    has_feedback = False

    def set(self, locked):
        raise NotImplementedError

    def feedback(self):
        return None


class ProximityPilot(Device):
    """PP resistance between PP and PE in the plug (IEC 61851-1 Annex B). Sockets only.

    readings: read_ohms() -> int, or None for an open circuit (no plug or broken cable).
    """

    def read_ohms(self):
        return None


class Thermometer(Device):
    """EVSE (or plug) temperature for derating. readings: read_dc() -> 0.1 °C, or None."""

    def read_dc(self):
        return None


class MeterSample:
    """One meter reading. A value the meter does not have is None; per-phase values are
    tuples of three (None for missing phases)."""
    __slots__ = ("energy_import_wh", "energy_export_wh", "power_w", "power_w_phases",
                 "current_ma", "voltage_dv", "frequency_mhz", "power_factor_permille",
                 "timestamp_ms")

    def __init__(self, energy_import_wh=None, energy_export_wh=None, power_w=None,
                 power_w_phases=None, current_ma=None, voltage_dv=None, frequency_mhz=None,
                 timestamp_ms=None, power_factor_permille=None):
        self.energy_import_wh = energy_import_wh
        self.energy_export_wh = energy_export_wh
        self.power_w = power_w
        self.power_w_phases = power_w_phases
        self.current_ma = current_ma
        self.voltage_dv = voltage_dv
        self.frequency_mhz = frequency_mhz
        self.power_factor_permille = power_factor_permille
        self.timestamp_ms = timestamp_ms


class MeterError(Exception):
    """A read failed: timeout, CRC, exception response, implausible data."""


class Meter(Device):
    """Energy meter (Modbus RTU/TCP, pulse input, co-processor...).

    readings: `async read()` -> MeterSample, or raises MeterError. Awaited from the meter
              task, never from the safety loop, so a slow bus cannot delay a contactor opening.
    """

    async def read(self):
        raise NotImplementedError


class Storage:
    """Small persistent key -> bytes store for config, availability and the journal.

    write() must be atomic (old or new content after a power cut, never a mix);
    append() adds to the end; a torn last record is the reader's job to detect (checksums).
    """

    def read(self, name):
        raise NotImplementedError

    def write(self, name, data):
        raise NotImplementedError

    def append(self, name, data):
        raise NotImplementedError

    def remove(self, name):
        raise NotImplementedError

    def names(self):
        raise NotImplementedError


class Board:
    """What a board gives the agent: one set of devices per connector plus shared ones.
    A missing optional device is None (no lock on a tethered cable, no PP, no thermometer)."""

    def __init__(self, connectors, storage=None):
        self.connectors = connectors     # {connector_id: ConnectorHardware}
        self.storage = storage


class ConnectorHardware:
    __slots__ = ("pilot", "contactor", "rcd", "lock", "pp", "meter", "thermometer")

    def __init__(self, pilot, contactor, rcd=None, lock=None, pp=None, meter=None,
                 thermometer=None):
        self.pilot = pilot
        self.contactor = contactor
        self.rcd = rcd
        self.lock = lock
        self.pp = pp
        self.meter = meter
        self.thermometer = thermometer

"""Board drivers for a Linux single-board computer: sysfs PWM, sysfs GPIO, IIO ADC (CPython).

A Raspberry Pi class controller with a pilot front-end: one hardware PWM channel drives the
+-12 V pilot amplifier, two ADC channels read the pilot through a peak-hold (high plateau)
and a valley-hold (low plateau) detector, GPIO lines drive the contactor, lock and RCD test,
and read their feedback contacts and the RCD's trip output.

Why peak/valley-hold detectors and not one ADC sampled in step with the PWM: Linux user space
cannot time an ADC read to within the 50 us a 5 % duty cycle leaves for the high plateau; a
read from sysfs takes tens of microseconds and lands anywhere in the period. Microcontrollers
trigger the ADC from the PWM timer (hal/ for MicroPython does); on Linux the front-end holds
the plateaus in hardware, or a co-processor samples them (the link driver).

Names follow the kernel's: `pwmchip0/pwm1` is /sys/class/pwm/pwmchip0/pwm1, `gpio17` is
/sys/class/gpio/gpio17 (`!gpio17` = active low), `iio:device0/in_voltage2` is
/sys/bus/iio/devices/iio:device0/in_voltage2_raw with its `_scale`. Every path is under a
root (`/sys` on a board; a folder in tests and on the bench, see simulator/sysfs_board.py).

Attributes are read with pread() at offset 0 on a descriptor kept open, as sysfs expects
(a fresh value per read, no open() per sample); outputs are written only when they change.
The devices have no events here: the agent polls them every `[linux] poll` milliseconds.
"""
import os
import re
import time

from hal import interfaces as hal

PERIOD_NS = 1000000             # IEC 61851-1 pilot: 1 kHz
EXPORT_WAIT_S = 2.0             # udev may need a moment to set permissions on a new export

PWM_NAME = re.compile(r"^pwmchip(\d+)/pwm(\d+)$")
GPIO_NAME = re.compile(r"^(!?)gpio(\d+)$")
IIO_NAME = re.compile(r"^(iio:device\d+)/(in_[a-z]+\d*)$")


class SysfsError(RuntimeError):
    """A sysfs attribute could not be set up or read: names the path and the reason."""


def _write(path, value):
    try:
        with open(path, "w") as file:
            file.write(value)
    except OSError as error:
        raise SysfsError("%s: cannot write %r: %s" % (path, value, error.strerror)) from None


def _wait_for(path):
    deadline = time.monotonic() + EXPORT_WAIT_S
    while not os.access(path, os.W_OK if os.path.isfile(path) else os.F_OK):
        if time.monotonic() > deadline:
            raise SysfsError("%s: did not appear after export" % path)
        time.sleep(0.01)


class Attribute:
    """One sysfs attribute kept open for reading."""
    __slots__ = ("path", "fd")

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise SysfsError("%s: cannot open: %s" % (path, error.strerror)) from None

    def read_text(self):
        return os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()

    def read_int(self):
        """The integer value, or None while the attribute holds no number (a torn read)."""
        try:
            return int(self.read_text())
        except ValueError:
            return None

    def close(self):
        os.close(self.fd)


def _export(root, class_dir, number, child):
    """Export a GPIO line or PWM channel unless it already is; returns its folder."""
    folder = os.path.join(root, class_dir, child)
    if not os.path.isdir(folder):
        _write(os.path.join(root, class_dir, "export"), str(number))
        _wait_for(folder)
    return folder


class GpioLine:
    """One GPIO line through /sys/class/gpio. `name` is "gpioN" or "!gpioN" (active low)."""

    def __init__(self, root, name, output):
        match = GPIO_NAME.match(name)
        if not match:
            raise SysfsError("%s: not a GPIO name (expected gpioN or !gpioN)" % name)
        self.active_low = match.group(1) == "!"
        number = int(match.group(2))
        folder = _export(root, "class/gpio", number, "gpio%d" % number)
        self.value_path = os.path.join(folder, "value")
        if output:
            # "low"/"high" set direction and the initial level in one write: no glitch
            _write(os.path.join(folder, "direction"), "high" if self.active_low else "low")
            self.attribute = None
        else:
            _write(os.path.join(folder, "direction"), "in")
            self.attribute = Attribute(self.value_path)
        self.level = False

    def set(self, active):
        active = bool(active)
        _write(self.value_path, "1" if active != self.active_low else "0")
        self.level = active

    def get(self):
        """True when the line is active; None on a torn read."""
        raw = self.attribute.read_int()
        return None if raw is None else (raw != 0) != self.active_low


class AdcChannel:
    """One IIO voltage channel, read in millivolts at the ADC pin (raw x scale)."""

    def __init__(self, root, name):
        match = IIO_NAME.match(name)
        if not match:
            raise SysfsError("%s: not an IIO channel (expected iio:deviceN/in_voltageM)" % name)
        device, channel = match.groups()
        folder = os.path.join(root, "bus/iio/devices", device)
        self.raw = Attribute(os.path.join(folder, channel + "_raw"))
        self.scale = 1.0
        # the channel's own scale, else the type's shared one (in_voltage_scale)
        for scale_name in (channel + "_scale", re.sub(r"\d+$", "", channel) + "_scale"):
            path = os.path.join(folder, scale_name)
            if os.path.exists(path):
                scale = Attribute(path)
                try:
                    self.scale = float(scale.read_text())
                except ValueError:
                    raise SysfsError("%s: not a number" % path) from None
                finally:
                    scale.close()
                break

    def read_mv(self):
        raw = self.raw.read_int()
        return None if raw is None else raw * self.scale


class Calibration:
    """Two points (at the ADC pin in mV, at the input in mV): a straight line between them."""

    def __init__(self, points):
        (self.adc_a, self.value_a), (self.adc_b, self.value_b) = points

    def value(self, adc_mv):
        return int(round(self.value_a + (adc_mv - self.adc_a) * (self.value_b - self.value_a) /
                         (self.adc_b - self.adc_a)))

    def adc_mv(self, value):
        """The inverse (used by the simulated board to write what the ADC would read)."""
        return self.adc_a + (value - self.value_a) * (self.adc_b - self.adc_a) / \
            (self.value_b - self.value_a)


class SysfsPilot(hal.Pilot):
    """Pilot generator on a sysfs PWM channel, plateaus from two held ADC channels.

    +12 V (state x1) is 100 % duty, -12 V (state F) is 0 % with the channel enabled: a
    disabled PWM output idles at a level that differs between chips. `inverted` is for a
    front-end whose amplifier inverts (duty written as period - duty)."""

    def __init__(self, root, pwm, adc_high, adc_low, calibration, inverted=False):
        match = PWM_NAME.match(pwm)
        if not match:
            raise SysfsError("%s: not a PWM channel (expected pwmchipN/pwmM)" % pwm)
        chip, channel = match.groups()
        self.folder = _export(root, "class/pwm/pwmchip" + chip, int(channel), "pwm" + channel)
        self.inverted = inverted
        self.high = AdcChannel(root, adc_high)
        self.low = AdcChannel(root, adc_low)
        self.calibration = calibration
        self._duty_ns = None
        # the period first: the kernel refuses a duty cycle longer than the current period
        _write(os.path.join(self.folder, "duty_cycle"), "0")
        _write(os.path.join(self.folder, "period"), str(PERIOD_NS))
        self._set_duty_ns(PERIOD_NS)
        _write(os.path.join(self.folder, "enable"), "1")
        self.last = (None, None)

    def _set_duty_ns(self, duty_ns):
        if self.inverted:
            duty_ns = PERIOD_NS - duty_ns
        if duty_ns != self._duty_ns:
            _write(os.path.join(self.folder, "duty_cycle"), str(duty_ns))
            self._duty_ns = duty_ns

    def set_pwm(self, duty_permille):
        self._set_duty_ns(PERIOD_NS * duty_permille // 1000)

    def set_static(self, level):
        if level == "e":
            raise SysfsError("state E (0 V) needs a front-end that can output it")
        self._set_duty_ns(PERIOD_NS if level == "x1" else 0)

    def read(self):
        high, low = self.high.read_mv(), self.low.read_mv()
        if high is None or low is None:
            return self.last          # a torn read: the previous plateaus stand
        self.last = (self.calibration.value(high), self.calibration.value(low))
        return self.last


class GpioContactor(hal.Contactor):
    def __init__(self, root, coil, feedback=None):
        self.coil = GpioLine(root, coil, output=True)
        self.mirror = GpioLine(root, feedback, output=False) if feedback else None
        self.has_feedback = self.mirror is not None
        self.coil.set(False)

    def set(self, closed):
        self.coil.set(closed)

    def feedback(self):
        return None if self.mirror is None else self.mirror.get()


class GpioRcd(hal.Rcd):
    """An RCD/RDC-DD module with a trip output (its contact also cuts the contactor coil in
    hardware), optionally a test input and a reset input.

    The module tells no AC from DC: a trip is reported as "dc" when it has a DC channel (the
    6 mA RDC-DD is the one that trips first on a DC fault), else "ac"."""

    def __init__(self, root, trip, test=None, reset=None, kind="dc", test_ms=60):
        self.trip_line = GpioLine(root, trip, output=False)
        self.test_line = GpioLine(root, test, output=True) if test else None
        self.reset_line = GpioLine(root, reset, output=True) if reset else None
        self.kind = kind
        self.test_ms = test_ms

    def trip(self):
        return self.kind if self.trip_line.get() else None

    def _within_test_time(self, condition):
        deadline = time.monotonic() + self.test_ms / 1000
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def reset(self):
        """Pulse the reset input (if wired); True once the trip output has released."""
        if self.reset_line is not None:
            self.reset_line.set(True)
            time.sleep(0.02)
            self.reset_line.set(False)
        return self._within_test_time(lambda: self.trip_line.get() is False)

    def self_test(self):
        """Inject the test current: the trip output must follow, and release after the test
        (the agent asks only with no EV and the contactor open, so the short blocking wait,
        at most twice test_ms, costs nothing)."""
        if self.test_line is None:
            return True
        self.test_line.set(True)
        tripped = self._within_test_time(lambda: bool(self.trip_line.get()))
        self.test_line.set(False)
        return tripped and self.reset()


class GpioLock(hal.Lock):
    """A lock actuator held by one output (locked while active), with a feedback switch."""

    def __init__(self, root, actuator, feedback=None):
        self.actuator = GpioLine(root, actuator, output=True)
        self.switch = GpioLine(root, feedback, output=False) if feedback else None
        self.has_feedback = self.switch is not None

    def set(self, locked):
        self.actuator.set(locked)

    def feedback(self):
        return None if self.switch is None else self.switch.get()


class AdcProximityPilot(hal.ProximityPilot):
    """PP through a pull-up resistor to a reference voltage: R = R_up * V / (V_ref - V)."""

    OPEN_PERMILLE = 950          # above 95 % of the reference: no resistor in the plug

    def __init__(self, root, adc, pullup_ohms, reference_mv):
        self.adc = AdcChannel(root, adc)
        self.pullup_ohms = pullup_ohms
        self.reference_mv = reference_mv

    def read_ohms(self):
        mv = self.adc.read_mv()
        if mv is None or mv * 1000 >= self.reference_mv * self.OPEN_PERMILLE:
            return None
        return int(round(self.pullup_ohms * mv / (self.reference_mv - mv)))


def connector_hardware(root, pins, meter=None):
    """The HAL devices of one connector from its `[connectors.linux]` table."""
    calibration = Calibration(pins["pilot_calibration"])
    pilot = SysfsPilot(root, pins["pilot_pwm"], pins["pilot_adc_high"], pins["pilot_adc_low"],
                       calibration, inverted=pins.get("pilot_inverted", False))
    contactor = GpioContactor(root, pins["contactor"], pins.get("contactor_feedback"))
    rcd = GpioRcd(root, pins["rcd_trip"], pins.get("rcd_test"), pins.get("rcd_reset")) \
        if pins.get("rcd_trip") else None
    lock = GpioLock(root, pins["lock"], pins.get("lock_feedback")) if pins.get("lock") else None
    pp = AdcProximityPilot(root, pins["pp_adc"], pins["pp_pullup_ohms"],
                           pins["pp_reference_mv"]) if pins.get("pp_adc") else None
    return hal.ConnectorHardware(pilot, contactor, rcd=rcd, lock=lock, pp=pp, meter=meter)


def board_hardware(board):
    """{connector id: ConnectorHardware} for a validated board dict with hal = "linux"."""
    root = board["linux"]["sysfs"]
    return {c["id"]: connector_hardware(root, c["linux"]) for c in board["connectors"]}

"""The simulated charger seen through a Linux sysfs tree (CPython).

`evse run` on a Linux board reads and writes files under /sys: a PWM channel for the pilot,
GPIO lines for the contactor, lock and RCD, IIO ADC channels for the pilot plateaus and PP.
`SysfsBoard` lays out the same tree under any folder and plays the hardware behind it: it
answers exports the way the kernel does (the node appears), takes what the agent writes (duty
cycle, coil, lock) to the simulated world, and writes what the world shows (plateau voltages
through the board's calibration, feedback contacts, the RCD's trip output, the PP divider) as
the ADC and GPIO values. So the real `evse run` process, with its real drivers, runs a
session against the simulated EV: the test of the Linux drivers end to end, and a bench
set-up for anyone porting to a new board file.

Inputs are rewritten in place at a fixed width (one pwrite), so a reader never meets an
empty file, and they are written once as the tree is laid out, so none is ever read before
it shows the world; the drivers treat an unreadable value as "unchanged", as they must on a
board.
"""
import asyncio
import os
import re

from hal import linux

SCALE_MV = 3300 / 4096           # a 12-bit ADC on a 3.3 V reference (in_voltage_scale)
PWM_CHANNELS = 2                 # npwm of each simulated PWM chip


class _Value:
    """An input attribute the board writes in place."""

    def __init__(self, path, initial=0):
        """`initial` None: keep what the file holds (a node an earlier run left)."""
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.text = None
        if initial is not None:
            self.write(initial)

    def write(self, number):
        text = b"%10d\n" % number
        if text != self.text:
            os.pwrite(self.fd, text, 0)
            self.text = text


def _read_int(path):
    try:
        with open(path) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def _read_text(path):
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def _appear(folder, attributes):
    """A node with its attributes appears at once (made aside, then renamed into place), so
    the driver never finds it half made."""
    making = folder + ".new"
    os.makedirs(making)
    for name, value in attributes.items():
        with open(os.path.join(making, name), "w") as file:
            file.write("%s\n" % value)
    os.rename(making, folder)


class _Gpio:
    def __init__(self, board, name, output):
        match = linux.GPIO_NAME.match(name)
        self.active_low = match.group(1) == "!"
        self.number = int(match.group(2))
        self.folder = os.path.join(board.root, "class/gpio", "gpio%d" % self.number)
        self.output = output
        # a node left exported by an earlier run over the same tree is taken over as it is
        self.value = _Value(os.path.join(self.folder, "value"), None) if self.exported() \
            else None

    def exported(self):
        return os.path.isdir(self.folder)

    def create(self):
        _appear(self.folder, {"direction": "in", "value": "%10d" % (1 if self.active_low else 0)})
        self.value = _Value(os.path.join(self.folder, "value"), 1 if self.active_low else 0)

    def active(self):
        """An output's level as the agent set it; None before it set one."""
        direction = _read_text(os.path.join(self.folder, "direction"))
        if direction in ("high", "low"):
            # "high"/"low" set the direction and the level in one write, as the kernel does
            self.value.write(1 if direction == "high" else 0)
            with open(os.path.join(self.folder, "direction"), "w") as file:
                file.write("out\n")
        level = _read_int(os.path.join(self.folder, "value"))
        return None if level is None else (level != 0) != self.active_low

    def show(self, active):
        self.value.write(1 if bool(active) != self.active_low else 0)


class _Connector:
    def __init__(self, board, sim_connector, pins):
        self.sim = sim_connector
        self.pins = pins
        self.calibration = linux.Calibration(pins["pilot_calibration"])
        chip, channel = linux.PWM_NAME.match(pins["pilot_pwm"]).groups()
        self.pwm_chip = os.path.join(board.root, "class/pwm", "pwmchip" + chip)
        self.pwm = os.path.join(self.pwm_chip, "pwm" + channel)
        self.gpio = {}
        for key, output in (("contactor", True), ("contactor_feedback", False),
                            ("rcd_trip", False), ("rcd_test", True), ("rcd_reset", True),
                            ("lock", True), ("lock_feedback", False)):
            if pins.get(key):
                self.gpio[key] = board.gpio(pins[key], output)
        self.adc = {key: board.adc(pins[key]) for key in ("pilot_adc_high", "pilot_adc_low",
                                                          "pp_adc") if pins.get(key)}
        self.pilot_output = None
        self.test_trip = False

    def apply_outputs(self):
        """What the agent wrote, to the simulated hardware."""
        sim, gpio = self.sim, self.gpio
        if os.path.isdir(self.pwm):
            output = self._pilot_output()
            if output is not None and output != self.pilot_output:
                self.pilot_output = output
                mode, duty = output
                if mode == "pwm":
                    sim.pilot.set_pwm(duty)
                else:
                    sim.pilot.set_static(mode)
        coil = gpio["contactor"].active() if gpio["contactor"].exported() else None
        if coil is not None and coil != sim.contactor.commanded:
            sim.contactor.set(coil)
        if "lock" in gpio and gpio["lock"].exported() and sim.lock is not None:
            locked = gpio["lock"].active()
            if locked is not None and locked != sim.lock.locked:
                sim.lock.set(locked)
        rcd = sim.rcd
        if "rcd_test" in gpio and gpio["rcd_test"].exported():
            testing = gpio["rcd_test"].active()
            if testing and rcd.tripped is None and not rcd.selftest_broken:
                rcd.tripped = "dc"          # the test current trips the module
                self.test_trip = True
                sim.contactor.cut_by_rcd = True
                sim.contactor._arrive()
            elif not testing and self.test_trip:
                # a module tripped by its test input resets when the test ends (RCM14-03
                # style); a trip from real leakage stays latched until reset
                self.test_trip = False
                rcd.reset()
                sim.contactor._arrive()
        if "rcd_reset" in gpio and gpio["rcd_reset"].exported() and gpio["rcd_reset"].active():
            rcd.reset()
            sim.contactor._arrive()

    def _pilot_output(self):
        enabled = _read_int(os.path.join(self.pwm, "enable"))
        period = _read_int(os.path.join(self.pwm, "period"))
        duty_ns = _read_int(os.path.join(self.pwm, "duty_cycle"))
        if enabled is None or not period or duty_ns is None:
            return None
        if not enabled:
            return ("f", 0)
        duty = duty_ns * 1000 // period
        if self.pins.get("pilot_inverted"):
            duty = 1000 - duty
        if duty >= 1000:
            return ("x1", 0)
        return ("f", 0) if duty <= 0 else ("pwm", duty)

    def show_inputs(self):
        """What the simulated hardware shows, as the agent's drivers will read it."""
        sim, gpio, adc = self.sim, self.gpio, self.adc
        high, low = sim.plateaus()
        adc["pilot_adc_high"].write(round(self.calibration.adc_mv(high) / SCALE_MV))
        adc["pilot_adc_low"].write(round(self.calibration.adc_mv(low) / SCALE_MV))
        if "pp_adc" in adc and sim.pp is not None:
            ohms, pullup = sim.pp.read_ohms(), self.pins["pp_pullup_ohms"]
            reference = self.pins["pp_reference_mv"]
            mv = reference if ohms is None else reference * ohms / (ohms + pullup)
            adc["pp_adc"].write(round(mv / SCALE_MV))
        shown = (("contactor_feedback", sim.contactor.closed),
                 ("rcd_trip", sim.rcd.tripped is not None),
                 ("lock_feedback", sim.lock is not None and sim.lock.locked))
        for key, active in shown:
            if key in gpio and gpio[key].exported():
                gpio[key].show(active)


class SysfsBoard:
    """The tree under `board["linux"]["sysfs"]` and the world behind it."""

    def __init__(self, board, world):
        self.root = board["linux"]["sysfs"]
        self.world = world
        self._gpios = {}
        self._adcs = {}
        self.connectors = [_Connector(self, world.connectors[c["id"]], c["linux"])
                           for c in board["connectors"]]
        self._lay_out()
        # the inputs show the world from the start: a driver that finds its nodes left by an
        # earlier run needs no export, and would read the 0 a fresh value file starts with
        for connector in self.connectors:
            connector.show_inputs()

    def gpio(self, name, output):
        number = int(linux.GPIO_NAME.match(name).group(2))
        if number not in self._gpios:
            self._gpios[number] = _Gpio(self, name, output)
        return self._gpios[number]

    def adc(self, name):
        if name not in self._adcs:
            device, channel = linux.IIO_NAME.match(name).groups()
            folder = os.path.join(self.root, "bus/iio/devices", device)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, re.sub(r"\d+$", "", channel) + "_scale"), "w") as f:
                f.write("%.10f\n" % SCALE_MV)
            self._adcs[name] = _Value(os.path.join(folder, channel + "_raw"))
        return self._adcs[name]

    def _lay_out(self):
        os.makedirs(os.path.join(self.root, "class/gpio"), exist_ok=True)
        open(os.path.join(self.root, "class/gpio/export"), "w").close()
        for connector in self.connectors:
            os.makedirs(connector.pwm_chip, exist_ok=True)
            open(os.path.join(connector.pwm_chip, "export"), "w").close()
            with open(os.path.join(connector.pwm_chip, "npwm"), "w") as file:
                file.write("%d\n" % PWM_CHANNELS)

    def _serve_exports(self):
        """A number written to an export file makes its node appear, as in the kernel."""
        gpio_export = os.path.join(self.root, "class/gpio/export")
        number = _read_int(gpio_export)
        if number is not None:
            open(gpio_export, "w").close()
            line = self._gpios.get(number)
            if line is not None and not line.exported():
                line.create()
        for connector in self.connectors:
            export = os.path.join(connector.pwm_chip, "export")
            channel = _read_int(export)
            if channel is not None:
                open(export, "w").close()
                folder = os.path.join(connector.pwm_chip, "pwm%d" % channel)
                if 0 <= channel < PWM_CHANNELS and not os.path.isdir(folder):
                    _appear(folder, {"period": 0, "duty_cycle": 0, "enable": 0,
                                     "polarity": "normal"})

    def step(self):
        self._serve_exports()
        for connector in self.connectors:
            connector.apply_outputs()
            connector.show_inputs()

    async def run(self, period_ms=1):
        self.world.bind()
        while True:
            self.step()
            await asyncio.sleep(period_ms / 1000)

"""Board drivers for a microcontroller under MicroPython (ESP32, RP2040): machine.* devices.

Everything here is shared by the two ports; what differs (the pilot's PWM and synchronised
ADC sampling, and how an ADC reading becomes millivolts) is in hal/mp_pilot_esp32.py and
hal/mp_pilot_rp2.py, picked by `sys.platform`, and their arithmetic in hal/mp_pilot.py
(portable, unit-tested). Integer units throughout (mV, ohms, ms): MCU floats are single
precision.

The board file (`evse bundle` turns it into JSON on the device) describes the wiring in two
tables, in the spirit of hal/linux.py's `[linux]` / `[connectors.linux]`:

`[mcu]` (board-wide; all optional)
    watchdog_ms      machine.WDT timeout; fed after every service pass of the agent's safety
                     loop (`agent.hooks.append(watchdog.feed)`). Absent or 0: no watchdog.
                     Once started it cannot be stopped (both ports); RP2040 max 8388 ms.
    adc_reference_mv RP2: the ADC's full scale (3300 on a Pico, ADC_AVDD). ESP32 ignores it
                     (read_uv is calibrated by the chip).
    pilot_settle_us  how long after an edge a pilot sample may start (15)
    pilot_periods    PWM periods sampled per pilot read (2)
    meter_uart       UART id of the RS-485 meter bus (with a Modbus [meter] model)
    meter_tx, meter_rx  its TX and RX pins
    meter_de         RS-485 driver enable (DE and /RE tied together), active while sending
                     ("!N" if low); absent for a transceiver with automatic direction
    reserved_pins    GPIOs the module keeps for itself, refused to every key (default: rp2
                     23, 24, 25, 29 as on a Pico; esp32 1, 3, UART0). `evse bundle` also
                     refuses a pin used by two keys or unfit for its key (tools/boardfile.py)

`[connectors.mcu]` (one per connector)
    pilot_pwm        GPIO of the 1 kHz PWM into the +-12 V amplifier (required)
    pilot_adc        ADC pin reading the pilot through the front-end's divider (required)
    pilot_sense      ESP32 only (required there): input wired to the PWM output or to the
                     front-end's pilot comparator; its edges time the samples. "!N" when it
                     is low on the pilot's high plateau (a jumper from the PWM GPIO of an
                     inverting front-end). RP2 reads the PWM counter instead, ignores it.
    pilot_calibration  [[mV at the ADC pin, mV on the pilot], [..., ...]] (required)
    pilot_inverted   true for an inverting amplifier (false)
    contactor        coil driver output (required)
    contactor_feedback  the auxiliary (mirror) contact, active = closed
    rcd_trip         the RCD/RDC-DD module's trip output, active = tripped
    rcd_test         its test input (a pulse injects the test current)
    rcd_reset        its reset input (pulsed by reset())
    lock             lock actuator: held active while locked; or, with lock_unlock, the
                     motor's "lock" direction, pulsed for lock_pulse_ms
    lock_unlock      the motor's "unlock" direction (a two-wire motor lock on an H-bridge)
    lock_pulse_ms    motor run time per move (600)
    lock_feedback    the lock's switch, active = locked
    pp_adc           ADC pin of the PP divider (sockets)
    pp_pullup_ohms   its pull-up resistor (1000)
    pp_reference_mv  the voltage the pull-up goes to (3300)

A pin is a GPIO number (17) or a string: "17", "!17" for active low, and for inputs an
internal pull resistor with "+up" or "+down" ("!22+up": an open-collector output that pulls
low when active).

Example, ESP32 DevKitC (the ADCs on ADC1 pins: ADC2 stops working with Wi-Fi on; GPIO34-39
are input-only and have no internal pulls, so their inputs need external pull-ups):

    [mcu]
    watchdog_ms = 5000
    meter_uart = 2
    meter_tx = 17
    meter_rx = 16
    meter_de = 4

    [connectors.mcu]
    pilot_pwm = 25
    pilot_sense = 26                 # jumper from GPIO25, or the front-end's comparator
    pilot_adc = 36                   # SENSOR_VP, ADC1 channel 0
    pilot_calibration = [[150, -12000], [2450, 12000]]
    contactor = 27
    contactor_feedback = "!14+up"
    rcd_trip = "!34"
    rcd_test = 13
    lock = 32
    lock_unlock = 33
    lock_feedback = "!35"
    pp_adc = 39                      # SENSOR_VN, ADC1 channel 3
    pp_pullup_ohms = 1000
    pp_reference_mv = 3300

Raspberry Pi Pico (ADC inputs on GPIO26-28):

    [mcu]
    watchdog_ms = 5000
    adc_reference_mv = 3300
    meter_uart = 1
    meter_tx = 4
    meter_rx = 5
    meter_de = 6

    [connectors.mcu]
    pilot_pwm = 16                   # PWM slice 0, channel A
    pilot_adc = 26                   # ADC0
    pilot_calibration = [[0, -12000], [3300, 12000]]
    contactor = 17
    contactor_feedback = "!18+up"
    rcd_trip = "!19+up"
    rcd_test = 20
    lock = 21
    lock_unlock = 22
    lock_feedback = "!15+up"
    pp_adc = 27                      # ADC1
    pp_pullup_ohms = 1000
    pp_reference_mv = 3300

Meter: a Modbus [meter] model (hal/meter_profiles.py) with baud, parity, stopbits, id and
timeout as in any board file; `board_meters` puts connector k (in id order) at unit id + k - 1
on the one bus, as hal/modbus_client.py does on Linux.

Running it (the integrator's main.py):

    hardware = mp_drivers.board_hardware(board)       # {connector id: ConnectorHardware}
    agent = Agent(station, hardware, poll_ms=..., ...)
    dog = mp_drivers.watchdog(board)
    if dog: agent.hooks.append(dog.feed)              # fed after every service pass
    asyncio.create_task(mp_drivers.EVENTS.run())      # pin IRQs -> on_change
    await agent.run()

Events. Inputs with a pin interrupt (contactor and lock feedback, RCD trip) call the
device's `changed()`, but not from the interrupt: MicroPython pin IRQs are soft on both ports
(scheduled between bytecodes), and asyncio primitives other than ThreadSafeFlag must not be
touched from there. The IRQ marks the device and sets one `asyncio.ThreadSafeFlag`; the task
`EVENTS.run()` (start it beside the agent) calls `changed()` from task context. The agent
polls every device anyway; the IRQ only makes it look sooner.
"""
import sys
import time

from machine import UART, WDT, Pin

from agent.compat import asyncio, monotonic_ms, sleep_ms
from hal import interfaces as hal
from hal.mp_pilot import parse_pin, pp_ohms

PORTS = {"esp32": "mp_pilot_esp32", "rp2": "mp_pilot_rp2"}
RCD_TEST_MS = 60            # hal/linux.py GpioRcd: the trip output must follow within this
RCD_RESET_PULSE_MS = 20
LOCK_PULSE_MS = 600
RP2_WDT_MAX_MS = 8388       # RP2040 datasheet §4.7: 24-bit counter at 2 ticks per us (erratum)
UART_RX_BUFFER = 512        # an 80-register answer is 165 bytes


def port_module(platform=None):
    """The pilot/ADC module of this port (hal.mp_pilot_esp32 or hal.mp_pilot_rp2)."""
    platform = platform or sys.platform
    name = PORTS.get(platform)
    if name is None:
        raise ValueError("no MicroPython drivers for platform %r (known: %s)" % (
            platform, ", ".join(sorted(PORTS))))
    package = __import__("hal." + name)       # not a static import: type checkers check
    return getattr(package, name)             # each port's module against its own stubs


def _pause_ms(ms):
    """A short blocking wait (the RCD test: no EV, contactor open, so nothing to miss)."""
    time.sleep(ms / 1000)


# -- events from interrupts ------------------------------------------------------------------

# set() is safe from an interrupt; asyncio.Event stands in on CPython (tests, fake machine)
_Flag = getattr(asyncio, "ThreadSafeFlag", asyncio.Event)


class IrqEvents:
    """Pin IRQs -> device.changed(), from a task (see the module docstring)."""

    def __init__(self):
        self.flag = _Flag()
        self.devices = []

    def watch(self, pin, device):
        """Call device.changed() (from `run()`) after every edge on `pin`."""
        if device not in self.devices:
            self.devices.append(device)
            device.irq_pending = False
        flag = self.flag

        def handler(_pin):
            device.irq_pending = True
            flag.set()
        pin.irq(handler=handler, trigger=Pin.IRQ_RISING | Pin.IRQ_FALLING)

    def dispatch(self):
        for device in self.devices:
            if device.irq_pending:
                device.irq_pending = False
                device.changed()

    async def run(self):
        while True:
            await self.flag.wait()
            self.flag.clear()               # ThreadSafeFlag clears itself; Event does not
            self.dispatch()


EVENTS = IrqEvents()


# -- pins --------------------------------------------------------------------------------------

class Output:
    """A digital output; `set(True)` drives its active level. Starts inactive."""

    def __init__(self, spec, what):
        pin_id, self.active_low, _ = parse_pin(spec, what)
        self.pin = Pin(pin_id, Pin.OUT, value=1 if self.active_low else 0)
        self.level = False

    def set(self, active):
        active = bool(active)
        self.pin.value(0 if active == self.active_low else 1)
        self.level = active


class Input:
    """A digital input; `get()` is True while it is at its active level."""

    def __init__(self, spec, what):
        pin_id, self.active_low, pull = parse_pin(spec, what)
        self.pin = Pin(pin_id, Pin.IN, {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN}.get(pull, 0))

    def get(self):
        return (self.pin.value() != 0) != self.active_low


# -- devices -------------------------------------------------------------------------------------

class McuContactor(hal.Contactor):
    def __init__(self, coil, feedback=None, events=None):
        self.coil = Output(coil, "contactor")
        self.mirror = Input(feedback, "contactor_feedback") if feedback is not None else None
        self.has_feedback = self.mirror is not None
        if self.mirror is not None and events is not None:
            events.watch(self.mirror.pin, self)

    def set(self, closed):
        self.coil.set(closed)

    def feedback(self):
        return None if self.mirror is None else self.mirror.get()


class McuRcd(hal.Rcd):
    """An RCD/RDC-DD module with a trip output (its own contact cuts the contactor coil in
    hardware), optionally test and reset inputs; as hal/linux.py GpioRcd. A trip is latched
    until reset(), as the interface says, also with a module whose output releases by itself;
    an edge whose level is gone again by the time its event is handled is a spike and ignored
    (SmartEVSE re-checks its RCM input after 1 ms). It tells no AC from DC: reported as
    `kind` ("dc": the 6 mA DC channel trips first on a DC fault)."""

    def __init__(self, trip, test=None, reset=None, kind="dc", test_ms=RCD_TEST_MS,
                 events=None):
        self.trip_line = Input(trip, "rcd_trip")
        self.test_line = Output(test, "rcd_test") if test is not None else None
        self.reset_line = Output(reset, "rcd_reset") if reset is not None else None
        self.kind = kind
        self.test_ms = test_ms
        self.latched = False
        if events is not None:
            events.watch(self.trip_line.pin, self)

    def changed(self):
        if self.trip_line.get():
            self.latched = True
        hal.Rcd.changed(self)

    def trip(self):
        if self.trip_line.get():
            self.latched = True
        return self.kind if self.latched else None

    def _within_test_time(self, condition):
        deadline = monotonic_ms() + self.test_ms
        while not condition():
            if monotonic_ms() > deadline:
                return False
            _pause_ms(2)
        return True

    def reset(self):
        """Pulse the reset input (if wired); True once the trip output has released."""
        if self.reset_line is not None:
            self.reset_line.set(True)
            _pause_ms(RCD_RESET_PULSE_MS)
            self.reset_line.set(False)
        released = self._within_test_time(lambda: not self.trip_line.get())
        if released:
            self.latched = False
        return released

    def self_test(self):
        """Inject the test current: the trip output must follow and release after the test.
        Blocks at most about 2 x test_ms (only asked with no EV and the contactor open)."""
        if self.test_line is None:
            return True
        self.test_line.set(True)
        tripped = self._within_test_time(self.trip_line.get)
        self.test_line.set(False)
        return tripped and self.reset()


class McuLock(hal.Lock):
    """A socket lock: a held actuator on one output (locked while active), or a two-wire
    motor on `lock`/`unlock` outputs run for `pulse_ms` per move. The motor is stopped from a
    task after the pulse; if the event loop hangs, the watchdog resets the board, which
    stops it too."""

    def __init__(self, actuator, unlock=None, feedback=None, pulse_ms=LOCK_PULSE_MS,
                 events=None):
        self.actuator = Output(actuator, "lock")
        self.unlock_line = Output(unlock, "lock_unlock") if unlock is not None else None
        self.switch = Input(feedback, "lock_feedback") if feedback is not None else None
        self.has_feedback = self.switch is not None
        self.pulse_ms = pulse_ms
        self.moves = 0              # which move the running stop task belongs to
        self.stopper = None
        if self.switch is not None and events is not None:
            events.watch(self.switch.pin, self)

    def set(self, locked):
        if self.unlock_line is None:
            self.actuator.set(locked)
            return
        self.actuator.set(False)            # never both directions at once
        self.unlock_line.set(False)
        (self.actuator if locked else self.unlock_line).set(True)
        self.moves += 1
        self.stopper = asyncio.create_task(self._stop_after(self.moves))

    async def _stop_after(self, move):
        await sleep_ms(self.pulse_ms)
        if move == self.moves:
            self.stop()

    def stop(self):
        self.actuator.set(False)
        if self.unlock_line is not None:
            self.unlock_line.set(False)

    def feedback(self):
        return None if self.switch is None else self.switch.get()


class McuProximityPilot(hal.ProximityPilot):
    """PP through a pull-up to a reference voltage (hal/mp_pilot.py `pp_ohms`); `adc` is the
    port's ADC reader (read_mv())."""

    def __init__(self, adc, pullup_ohms=1000, reference_mv=3300):
        self.adc = adc
        self.pullup_ohms = pullup_ohms
        self.reference_mv = reference_mv

    def read_ohms(self):
        return pp_ohms(self.adc.read_mv(), self.pullup_ohms, self.reference_mv)


class Watchdog:
    """machine.WDT: `feed()` from the agent loop. It cannot be stopped once started."""

    def __init__(self, timeout_ms):
        if sys.platform == "rp2" and timeout_ms > RP2_WDT_MAX_MS:
            raise ValueError("watchdog_ms: at most %d on an RP2040, got %d" % (
                RP2_WDT_MAX_MS, timeout_ms))
        self.wdt = WDT(timeout=timeout_ms)
        self.timeout_ms = timeout_ms

    def feed(self):
        self.wdt.feed()


# -- assembly ------------------------------------------------------------------------------------

def connector_hardware(pins, mcu=None, port=None, events=EVENTS, meter=None):
    """The HAL devices of one connector from its [connectors.mcu] table."""
    mcu = mcu or {}
    port = port or port_module()
    pilot = port.pilot(pins, mcu)
    contactor = McuContactor(pins["contactor"], pins.get("contactor_feedback"), events)
    rcd = McuRcd(pins["rcd_trip"], pins.get("rcd_test"), pins.get("rcd_reset"),
                 events=events) if pins.get("rcd_trip") is not None else None
    lock = McuLock(pins["lock"], pins.get("lock_unlock"), pins.get("lock_feedback"),
                   pins.get("lock_pulse_ms", LOCK_PULSE_MS), events) \
        if pins.get("lock") is not None else None
    pp = McuProximityPilot(port.adc(pins["pp_adc"], mcu, "pp_adc"),
                           pins.get("pp_pullup_ohms", 1000),
                           pins.get("pp_reference_mv", 3300)) \
        if pins.get("pp_adc") is not None else None
    return hal.ConnectorHardware(pilot, contactor, rcd=rcd, lock=lock, pp=pp, meter=meter)


def meter_uart(mcu, meter):
    """(UART, driver-enable Output or None) of the meter bus, from [mcu] and [meter]."""
    for key in ("meter_uart", "meter_tx", "meter_rx"):
        if mcu.get(key) is None:
            raise ValueError("mcu: %s is needed for a Modbus meter" % key)
    parity = {"N": None, "E": 0, "O": 1}[str(meter.get("parity") or "N").upper()]
    uart = UART(mcu["meter_uart"], baudrate=meter.get("baud") or 9600, bits=8,
                parity=parity, stop=meter.get("stopbits") or 1,
                tx=Pin(parse_pin(mcu["meter_tx"], "meter_tx")[0]),
                rx=Pin(parse_pin(mcu["meter_rx"], "meter_rx")[0]),
                rxbuf=UART_RX_BUFFER, timeout=0)
    de = Output(mcu["meter_de"], "meter_de") if mcu.get("meter_de") is not None else None
    return uart, de


def board_meters(board, clock=None):
    """{connector id: RtuMeter} for a board whose [meter] model is a Modbus profile (else
    empty), on the [mcu] meter UART (hal/modbus_rtu.py board_meters)."""
    if (board.get("meter") or {}).get("model", "sim") in ("sim", "none"):
        return {}
    from hal import modbus_rtu
    mcu = board.get("mcu") or {}

    def open_uart(settings):
        uart, de = meter_uart(mcu, settings)
        return uart, "uart%s" % mcu.get("meter_uart"), de.set if de is not None else None
    return modbus_rtu.board_meters(board, open_uart, clock)


def board_hardware(board, port=None, events=EVENTS, clock=None):
    """{connector id: ConnectorHardware} for a board dict with hal = "micropython".
    Start `events.run()` as a task beside the agent, and feed `watchdog(board)` from it."""
    mcu = board.get("mcu") or {}
    port = port or port_module()
    meters = board_meters(board, clock)
    return {c["id"]: connector_hardware(c["mcu"], mcu, port, events, meters.get(c["id"]))
            for c in board["connectors"]}


def watchdog(board):
    """The board's Watchdog, or None without [mcu] watchdog_ms."""
    timeout_ms = (board.get("mcu") or {}).get("watchdog_ms")
    return Watchdog(timeout_ms) if timeout_ms else None

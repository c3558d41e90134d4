"""The microcontroller drivers off hardware: hal/mp_pilot.py's arithmetic, the ESP32 and RP2
pilot samplers against a simulated PWM in virtual microseconds, and hal/mp_drivers.py's
devices on a fake `machine` module.

Portable: plain functions and asserts, so pytest runs this file on CPython and
tests/mp_run.py on the MicroPython unix port (whose `machine` has no Pin/PWM/ADC). The fake
`machine` goes into sys.modules while a test imports the drivers, and out again after.
The samplers' time functions (`ticks_us`, `ticks_diff`, `sleep_us`, bound by name in the
port modules) are replaced by a virtual clock in which an ADC read takes READ_US and the
pilot is a 1 kHz square wave whose value is garbage near its edges: a sample taken in the
wrong place shows up as a wrong reading. Only the real machine.* timing stays untested.
"""
import gc
import sys
import time

from agent.compat import asyncio
from hal import mp_pilot as mp
from hal.mp_pilot import EDGE, HIGH, LOW

CAL = ((0, -12000), (3300, 12000))      # 0..3.3 V at the pin = -12..+12 V on the pilot
READ_US = 20                            # an ADC read in virtual time
EDGE_US = 12                            # the front-end is still slewing this long after an edge


def _raises(exc_type, func, *args):
    try:
        func(*args)
    except exc_type as error:
        return str(error)
    raise AssertionError("%s did not raise %s" % (func, exc_type))


# -- hal/mp_pilot.py ---------------------------------------------------------------------------

def test_calibrate_is_the_two_point_line_in_integers():
    assert mp.calibrate(0, CAL) == -12000
    assert mp.calibrate(3300, CAL) == 12000
    assert mp.calibrate(1650, CAL) == 0
    assert mp.calibrate(2475, CAL) == 6000
    assert mp.calibrate(1, CAL) == -11993              # -11992.7 rounds away from zero
    # points in either order, a falling line, readings beyond the points
    assert mp.calibrate(2475, ((3300, 12000), (0, -12000))) == 6000
    assert mp.calibrate(1000, ((0, 5000), (2000, -5000))) == 0
    assert mp.calibrate(3400, CAL) == 12727
    # as hal/linux.py Calibration.value, which rounds the same line in floats
    for adc_mv in (0, 7, 150, 1234, 2450, 3299):
        exact = -12000 + (adc_mv - 0) * 24000 / 3300
        assert abs(mp.calibrate(adc_mv, CAL) - exact) <= 0.5


def test_check_calibration_says_what_is_wrong():
    assert mp.check_calibration([[150, -12000], [2450, 12000]]) == ((150, -12000),
                                                                     (2450, 12000))
    assert "two different" in _raises(ValueError, mp.check_calibration, [[5, 1], [5, 2]])
    assert "integers" in _raises(ValueError, mp.check_calibration, [[0, 1.5], [5, 2]])
    assert "[[adc_mv" in _raises(ValueError, mp.check_calibration, [[0, 1]])
    assert "[[adc_mv" in _raises(ValueError, mp.check_calibration, None)


def test_u16_counts_to_millivolts():
    assert mp.u16_mv(0, 3300) == 0
    assert mp.u16_mv(65535, 3300) == 3300
    assert mp.u16_mv(32768, 3300) == 1650
    assert mp.u16_mv(49151, 3300) == 2475


def test_sample_offsets_plan_both_plateaus_or_none():
    assert mp.high_us(500) == 500 and mp.high_us(100) == 100 and mp.high_us(1000) == 1000
    # 50 %: high right after settling, low late in the period before the guard
    assert mp.sample_offsets(500, 20) == (15, 1000 - 40 - 20)
    # 96 % (80 A): the low plateau is 40 us; the read starts after settling and fits
    assert mp.sample_offsets(960, 20) == (15, 975)
    # a read too long for the plateau: no sample there
    assert mp.sample_offsets(960, 30) == (15, None)
    assert mp.sample_offsets(50, 40) == (None, 920)       # 5 %: 50 us < 15 + 40
    assert mp.sample_offsets(50, 35) == (15, 925)


def test_classify_sample_accepts_only_reads_wholly_inside_a_plateau():
    high = 500
    assert mp.classify_sample(15, 35, high) == HIGH
    assert mp.classify_sample(14, 35, high) == EDGE          # inside the settling time
    assert mp.classify_sample(480, 500, high) == HIGH
    assert mp.classify_sample(490, 510, high) == EDGE        # across the falling edge
    assert mp.classify_sample(510, 530, high) == EDGE        # falling edge still settling
    assert mp.classify_sample(515, 535, high) == LOW
    assert mp.classify_sample(980, 1000, high) == LOW
    assert mp.classify_sample(990, 1010, high) == EDGE       # into the next period
    assert mp.classify_sample(950, 20, high) == EDGE         # end before start: wrapped
    # any unit: RP2 passes counter values (62500 counts per period, CC 31250)
    assert mp.classify_sample(1000, 2250, 31250, 937, 62500) == HIGH
    assert mp.classify_sample(31000, 32000, 31250, 937, 62500) == EDGE


def test_median_and_plateau_tracker():
    assert mp.median([]) is None
    assert mp.median([5]) == 5
    assert mp.median([9, 1, 5]) == 5
    assert mp.median([1, 4]) == 3                             # 2.5 rounds away from zero
    assert mp.median([-1, -4]) == -3
    tracker = mp.PlateauTracker(max_stale=2)
    assert tracker.update([], []) == (0, 0)                  # nothing seen yet: 0 V
    assert tracker.update([6000, 6010, 5990], [-12000]) == (6000, -12000)
    assert tracker.update([], [-11990]) == (6000, -11990)    # high stale 1
    assert tracker.update([], [-11990]) == (6000, -11990)    # high stale 2
    assert tracker.update([], [-11990]) == (0, -11990)       # too stale: 0 V (E)
    assert tracker.update([9000], []) == (9000, -11990)


def test_pp_ohms_through_the_pull_up():
    # 1 kOhm to 3.3 V: 220 Ohm (32 A) reads 595 mV, 680 Ohm 1336 mV, 1500 Ohm 1980 mV
    assert mp.pp_ohms(595, 1000, 3300) == 220
    assert mp.pp_ohms(1336, 1000, 3300) == 680
    assert mp.pp_ohms(1980, 1000, 3300) == 1500
    assert mp.pp_ohms(3200, 1000, 3300) is None              # above 95 %: no resistor
    assert mp.pp_ohms(None, 1000, 3300) is None
    assert mp.pp_ohms(0, 1000, 3300) == 0


def test_parse_pin_specs():
    assert mp.parse_pin(17) == (17, False, None)
    assert mp.parse_pin("17") == (17, False, None)
    assert mp.parse_pin("!22+up") == (22, True, "up")
    assert mp.parse_pin("5+down") == (5, False, "down")
    assert mp.parse_pin("LED") == ("LED", False, None)
    assert "pull" in _raises(ValueError, mp.parse_pin, "!22+sideways", "rcd_trip")
    assert "rcd_trip" in _raises(ValueError, mp.parse_pin, "!", "rcd_trip")
    assert "GPIO number" in _raises(ValueError, mp.parse_pin, 2.5)
    assert ">= 0" in _raises(ValueError, mp.parse_pin, -1)
    assert "GPIO number" in _raises(ValueError, mp.parse_pin, True)


# -- a fake machine in virtual time ------------------------------------------------------------

class Clock:
    """Virtual microseconds; `stall_*` inject what an interrupt would do, once."""

    def __init__(self):
        self.now = 0
        self.stall_next_read = 0         # extra time inside the next ADC read
        self.stall_after_edge = 0        # between time_pulse_us's return and ticks_us()

    def ticks_us(self):
        return self.now

    def ticks_diff(self, new, old):
        return new - old

    def sleep_us(self, us):
        if us > 0:
            self.now += us


class Waveform:
    """The pilot at the ADC pin: `high_mv` for `duty` permille of each 1 ms period from the
    rising edge, then `low_mv`; for EDGE_US after an edge (still slewing, filtered) a value
    no plateau has."""

    def __init__(self, clock, high_mv=2475, low_mv=0):
        self.clock = clock
        self.high_mv = high_mv
        self.low_mv = low_mv
        self.duty = 1000

    def high_us(self):
        return self.duty             # 1000 us period: permille == us

    def level(self, at=None):
        at = self.clock.now if at is None else at
        if self.duty in (0, 1000):
            return 1 if self.duty else 0
        return 1 if at % 1000 < self.high_us() else 0

    def pin_mv(self, at):
        if self.duty == 1000:
            return self.high_mv
        if self.duty == 0:
            return self.low_mv
        phase = at % 1000
        high = self.high_us()
        if phase < EDGE_US or 0 <= phase - high < EDGE_US:
            return (self.high_mv + self.low_mv) // 2 + 333      # slewing: neither plateau
        return self.high_mv if phase < high else self.low_mv

    def convert(self):
        """One ADC read: the value at the middle of the read; the read takes READ_US."""
        clock = self.clock
        clock.now += clock.stall_next_read
        clock.stall_next_read = 0
        value = self.pin_mv(clock.now + READ_US // 2)
        clock.now += READ_US
        return value


def make_machine(clock=None, waveform=None):
    """A stand-in for MicroPython's `machine` with Pin, ADC, PWM, WDT, UART, mem32 and
    time_pulse_us; `pins` maps each pin id to its last Pin object."""
    clock = clock or Clock()
    waveform = waveform or Waveform(clock)
    pins = {}
    adc_mv = {}          # pin id -> mV at that ADC pin (other than the pilot's)
    made = {"wdt": [], "uart": [], "pwm": []}
    pilot_adc = []       # the pin ids whose ADC reads the waveform

    class Pin:
        IN, OUT, OPEN_DRAIN = 1, 3, 7
        PULL_UP, PULL_DOWN = 2, 1
        IRQ_RISING, IRQ_FALLING = 1, 2

        def __init__(self, pin_id, mode=-1, pull=-1, value=None):
            self.id = pin_id
            self.mode = mode
            self.pull = pull
            self.level = 1 if value else 0
            self.handler = None
            self.trigger = None
            self.sense = False       # reads the pilot waveform (the ESP32 sense input)
            self.on_write = None
            pins[pin_id] = self

        def value(self, *level):
            if level:
                self.level = 1 if level[0] else 0
                if self.on_write is not None:
                    self.on_write(self.level)
                return None
            if self.sense:                          # "inverted": an inverting front-end
                level = waveform.level()
                return 1 - level if self.sense == "inverted" else level
            return self.level

        def irq(self, handler=None, trigger=3):
            self.handler = handler
            self.trigger = trigger

        def drive(self, level):
            """The outside world moves an input; its IRQ fires on a change."""
            changed = level != self.level
            self.level = level
            if changed and self.handler is not None:
                self.handler(self)

    class ADC:
        ATTN_11DB = 3

        def __init__(self, pin, atten=None):
            self.pin = pin
            self.atten = atten

        def _mv(self):
            if self.pin.id in pilot_adc:
                return waveform.convert()
            return adc_mv.get(self.pin.id, 0)

        def read_uv(self):
            return self._mv() * 1000

        def read_u16(self):
            return self._mv() * 65535 // 3300

    class PWM:
        def __init__(self, pin, freq=None, duty_u16=None, invert=False):
            self.pin = pin
            self.freq = freq
            self.invert = invert
            made["pwm"].append(self)
            if duty_u16 is not None:
                self.duty_u16(duty_u16)

        def duty_u16(self, value):
            waveform.duty = 1000 if value == 65535 else value * 1000 // 65535

        def duty_ns(self, ns):
            waveform.duty = ns // 1000

    class WDT:
        def __init__(self, id=0, timeout=5000):
            self.timeout = timeout
            self.fed = 0
            made["wdt"].append(self)

        def feed(self):
            self.fed += 1

    class UART:
        def __init__(self, uart_id, baudrate=9600, bits=8, parity=None, stop=1, tx=None,
                     rx=None, rxbuf=None, timeout=None):
            self.settings = (uart_id, baudrate, bits, parity, stop, tx.id, rx.id)
            made["uart"].append(self)

    counts = 62500       # RP2 slice at 125 MHz / 2: TOP 62499

    class Mem32:
        """The RP2040 PWM registers of the slice driving GPIO 16 (slice 0, channel A)."""

        def __getitem__(self, address):
            clock.now += 1                                   # a register read takes 1 us
            offset = (address - 0x40050000) % 0x14
            if offset == 0x00:
                return 0                                     # CSR: not phase-correct
            if offset == 0x08:
                return (clock.now % 1000) * counts // 1000   # CTR
            if offset == 0x0C:
                return waveform.duty * counts // 1000        # CC (A)
            if offset == 0x10:
                return counts - 1                            # TOP
            raise AssertionError("unexpected register 0x%08x" % address)

    def time_pulse_us(pin, level, timeout_us=1000000):
        """ESP32 semantics: wait until the pin is at `level`, then time how long it stays:
        returns at the next edge away from `level` (-2/-1 on timeout)."""
        if waveform.duty in (0, 1000):
            return -2 if waveform.level() != level else -1
        high = waveform.high_us()
        if waveform.level() != level:                        # wait for the falling edge
            clock.now += (high - clock.now % 1000) % 1000
        low_started = clock.now
        clock.now += 1000 - clock.now % 1000                 # to the rising edge
        duration = clock.now - low_started
        clock.now += clock.stall_after_edge
        clock.stall_after_edge = 0
        return duration

    class Machine:
        pass

    machine = Machine()
    machine.Pin, machine.ADC, machine.PWM, machine.WDT, machine.UART = Pin, ADC, PWM, WDT, UART
    machine.mem32 = Mem32()
    machine.time_pulse_us = time_pulse_us
    machine.pins, machine.adc_mv, machine.made = pins, adc_mv, made
    machine.pilot_adc = pilot_adc
    machine.clock, machine.waveform = clock, waveform
    return machine


class Drivers:
    """`with Drivers(machine) as modules:` imports hal.mp_drivers, hal.mp_pilot_esp32 and
    hal.mp_pilot_rp2 against `machine`, with the samplers on its virtual clock; afterwards
    sys.modules is as before (so no other test meets the fake)."""
    NAMES = ("hal.mp_drivers", "hal.mp_pilot_esp32", "hal.mp_pilot_rp2")
    TIME_NAMES = ("sleep_us", "ticks_diff", "ticks_us")

    def __init__(self, machine):
        self.machine = machine
        self.saved = {}
        self.shimmed = []

    def __enter__(self):
        for name in ("machine",) + self.NAMES:
            self.saved[name] = sys.modules.get(name)
            if name in sys.modules:
                del sys.modules[name]
        sys.modules["machine"] = self.machine
        for name in self.TIME_NAMES:         # CPython: so `from time import ...` works
            if not hasattr(time, name):
                setattr(time, name, getattr(self.machine.clock, name))
                self.shimmed.append(name)
        import hal
        modules = {}
        for name in self.NAMES:
            short = name.split(".")[1]
            __import__(name)
            modules[short] = getattr(hal, short)
        for short in ("mp_pilot_esp32", "mp_pilot_rp2"):
            for name in self.TIME_NAMES:
                setattr(modules[short], name, getattr(self.machine.clock, name))
        return modules

    def __exit__(self, *exc):
        import hal
        for name in self.NAMES:              # `from hal import x` must not find ours later
            short = name.split(".")[1]
            if hasattr(hal, short):
                delattr(hal, short)
        for name in self.shimmed:
            delattr(time, name)
        for name, module in self.saved.items():
            if module is None:
                if name in sys.modules:
                    del sys.modules[name]
            else:
                sys.modules[name] = module
        return False


PINS = {"pilot_pwm": 16, "pilot_adc": 26, "pilot_sense": 25,
        "pilot_calibration": [[0, -12000], [3300, 12000]], "contactor": 17}


def _pilot(port, machine, modules, pins=None, **mcu):
    machine.pilot_adc.append(26)
    module = modules["mp_pilot_" + port]
    pilot = module.pilot(dict(PINS, **(pins or {})), mcu)
    if 25 in machine.pins:
        machine.pins[25].sense = True   # ESP32: the PWM output wired back to GPIO 25
    return pilot


# -- the samplers -------------------------------------------------------------------------------

def _check_sampler(port):
    machine = make_machine()
    with Drivers(machine) as modules:
        pilot = _pilot(port, machine, modules)
        assert pilot.read_us >= READ_US
        # x1 at start: +12 V, no edges, both plateaus the same
        machine.waveform.high_mv = 3300
        assert pilot.read() == (12000, 12000)
        # PWM, EV in C (6 V) with its diode: -12 V low plateau
        machine.waveform.high_mv = 2475
        for duty in (500, 100, 267, 850, 960):
            pilot.set_pwm(duty)
            assert machine.waveform.duty == duty
            for _ in range(3):
                assert pilot.read() == (6000, -12000), (port, duty)
        # F: -12 V static
        pilot.set_static("f")
        assert machine.waveform.duty == 0
        assert pilot.read() == (-12000, -12000)
        assert "x1" in _raises(ValueError, pilot.set_static, "e")


def test_esp32_sampler_reads_both_plateaus_in_virtual_time():
    _check_sampler("esp32")


def test_rp2_sampler_reads_both_plateaus_in_virtual_time():
    _check_sampler("rp2")


def _never_wrong(port, stall):
    """Interrupt-like stalls cost samples, never a wrong reading."""
    machine = make_machine()
    clock = machine.clock
    with Drivers(machine) as modules:
        pilot = _pilot(port, machine, modules, pilot_periods=1)
        pilot.periods = 1
        pilot.set_pwm(500)
        assert pilot.read() == (6000, -12000)
        machine.waveform.high_mv = 2860             # the EV goes to B (8.8 V)
        for delay in range(0, 1100, 3):
            stall(clock, delay)
            high, low = pilot.read()
            assert high in (6000, 8800) and low == -12000, (port, delay, high, low)
            assert pilot.read() == (8800, -12000), (port, delay)
    gc.collect()            # hundreds of reads' garbage: not what the drivers need to hold


def _stall_read(clock, delay):
    clock.stall_next_read = delay


def _stall_edge(clock, delay):
    clock.stall_after_edge = delay


def test_esp32_sampler_discards_samples_spoilt_by_interrupts():
    _never_wrong("esp32", _stall_read)
    # an interrupt between the edge and its time stamp makes the edge look late: the sense
    # input, read again after the ADC, catches the samples that ran into the other plateau
    _never_wrong("esp32", _stall_edge)


def test_rp2_sampler_discards_samples_spoilt_by_interrupts():
    _never_wrong("rp2", _stall_read)


def test_a_plateau_too_short_to_sample_goes_stale_then_reads_zero():
    machine = make_machine()
    with Drivers(machine) as modules:
        pilot = _pilot("rp2", machine, modules)
        pilot.set_pwm(500)
        assert pilot.read() == (6000, -12000)
        pilot.read_us = 60                  # a slow board: no room in a 50 us plateau
        pilot.set_pwm(50)
        for _ in range(mp.MAX_STALE_READS):
            assert pilot.read() == (6000, -12000)
        assert pilot.read() == (0, -12000)  # E: the agent removes power


def test_esp32_sense_input_low_on_the_high_plateau():
    machine = make_machine()
    with Drivers(machine) as modules:
        pilot = _pilot("esp32", machine, modules, {"pilot_sense": "!25",
                                                    "pilot_inverted": True})
        machine.pins[25].sense = "inverted"     # a jumper from the GPIO of an inverting amp
        assert machine.made["pwm"][-1].invert is True
        pilot.set_pwm(267)
        assert pilot.read() == (6000, -12000)


def test_esp32_pilot_needs_its_sense_input_and_rp2_reads_the_slice_registers():
    machine = make_machine()
    with Drivers(machine) as modules:
        pins = dict(PINS)
        del pins["pilot_sense"]
        assert "pilot_sense" in _raises(ValueError, modules["mp_pilot_esp32"].pilot, pins, {})
        assert "calibration" in _raises(ValueError, modules["mp_pilot_rp2"].pilot,
                                        dict(PINS, pilot_calibration=[[1, 2]]), {})
        rp2 = modules["mp_pilot_rp2"]
        assert rp2.pwm_slice(16) == (0, 0) and rp2.pwm_slice(25) == (4, 1)
        assert rp2.pwm_base("Raspberry Pi Pico with RP2040") == 0x40050000
        assert rp2.pwm_base("Raspberry Pi Pico2 with RP2350") == 0x400A8000
        pilot = _pilot("rp2", machine, modules, {"pilot_inverted": True})
        assert machine.made["pwm"][-1].invert is True
        assert pilot.ctr_address == 0x40050008


# -- hal/mp_drivers.py devices --------------------------------------------------------------------

def test_outputs_start_inactive_and_inputs_get_their_pulls():
    machine = make_machine()
    with Drivers(machine) as modules:
        drivers = modules["mp_drivers"]
        events = drivers.IrqEvents()
        contactor = drivers.McuContactor("!17", "!14+up", events)
        coil, mirror = machine.pins[17], machine.pins[14]
        assert coil.level == 1 and coil.mode == machine.Pin.OUT       # active low: off = 1
        assert mirror.pull == machine.Pin.PULL_UP and contactor.has_feedback
        contactor.set(True)
        assert coil.level == 0
        mirror.level = 1
        assert contactor.feedback() is False
        seen = []
        contactor.on_change = lambda: seen.append(contactor.feedback())
        mirror.drive(0)                     # the mirror contact closes: IRQ, then the task
        assert seen == []
        events.dispatch()
        assert seen == [True]
        events.dispatch()                   # nothing new
        assert seen == [True]
        plain = drivers.McuContactor(27)
        assert plain.feedback() is None and not plain.has_feedback
        assert machine.pins[27].level == 0


def test_irq_events_run_as_a_task():
    machine = make_machine()
    with Drivers(machine) as modules:
        drivers = modules["mp_drivers"]

        async def body():
            events = drivers.IrqEvents()
            lock = drivers.McuLock(21, feedback="!15+up", events=events)
            seen = []
            lock.on_change = lambda: seen.append(lock.feedback())
            task = asyncio.create_task(events.run())
            machine.pins[15].drive(1)
            await asyncio.sleep(0.01)
            machine.pins[15].drive(0)
            await asyncio.sleep(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return seen

        assert asyncio.run(body()) == [False, True]


def test_rcd_latches_a_trip_ignores_a_spike_and_self_tests():
    machine = make_machine()
    with Drivers(machine) as modules:
        drivers = modules["mp_drivers"]
        events = drivers.IrqEvents()
        rcd = drivers.McuRcd("!34", test=13, events=events, test_ms=50)
        trip_pin = machine.pins[34]
        trip_pin.level = 1                  # released (active low)
        assert rcd.trip() is None
        trip_pin.drive(0)                   # a spike, gone before its event is handled
        trip_pin.drive(1)
        events.dispatch()
        assert rcd.trip() is None
        trip_pin.drive(0)                   # a real trip, and the module releases it
        events.dispatch()
        trip_pin.drive(1)
        assert rcd.trip() == "dc"           # latched until reset()
        assert rcd.reset() is True and rcd.trip() is None
        # the test input trips the module while it is active (a healthy RCD)
        machine.pins[13].on_write = lambda level: setattr(trip_pin, "level", 1 - level)
        assert rcd.self_test() is True and rcd.trip() is None
        machine.pins[13].on_write = None    # a dead RCD: the test current does nothing
        assert rcd.self_test() is False


def test_lock_held_or_pulsed_motor():
    machine = make_machine()
    with Drivers(machine) as modules:
        drivers = modules["mp_drivers"]
        held = drivers.McuLock(21)
        held.set(True)
        assert machine.pins[21].level == 1 and held.feedback() is None

        async def body():
            motor = drivers.McuLock(32, unlock=33, pulse_ms=20)
            lock_pin, unlock_pin = machine.pins[32], machine.pins[33]
            motor.set(True)
            assert (lock_pin.level, unlock_pin.level) == (1, 0)
            await asyncio.sleep(0.01)
            motor.set(False)                # reversed mid-move: never both directions
            assert (lock_pin.level, unlock_pin.level) == (0, 1)
            await asyncio.sleep(0.015)      # the first move's stop must not cut this one
            assert unlock_pin.level == 1
            await asyncio.sleep(0.03)
            assert (lock_pin.level, unlock_pin.level) == (0, 0)

        asyncio.run(body())


def test_pp_and_watchdog_and_board_assembly():
    machine = make_machine()
    with Drivers(machine) as modules:
        drivers = modules["mp_drivers"]
        rp2 = modules["mp_pilot_rp2"]
        pp = drivers.McuProximityPilot(rp2.adc(27, {}, "pp_adc"), 1000, 3300)
        machine.adc_mv[27] = 595
        assert pp.read_ohms() == 220
        machine.adc_mv[27] = 3300
        assert pp.read_ohms() is None
        dog = drivers.Watchdog(5000)
        dog.feed()
        assert machine.made["wdt"][0].timeout == 5000 and machine.made["wdt"][0].fed == 1
        assert drivers.watchdog({"mcu": {}}) is None
        assert drivers.port_module("rp2") is rp2
        assert drivers.port_module("esp32") is modules["mp_pilot_esp32"]
        assert "pyboard" in _raises(ValueError, drivers.port_module, "pyboard")

        machine.pilot_adc.append(26)
        board = {
            "mcu": {"watchdog_ms": 3000, "meter_uart": 1, "meter_tx": 4, "meter_rx": 5,
                    "meter_de": 6},
            "meter": {"model": "or-we-517", "id": 3, "timeout": 400},    # 9600 8E1
            "connectors": [
                {"id": 2, "mcu": dict(PINS, contactor=18, pp_adc=28)},
                {"id": 1, "mcu": dict(PINS, rcd_trip="!19+up", lock=21, lock_unlock=22,
                                      lock_feedback="!15+up", pp_adc=27)},
            ],
        }
        hardware = drivers.board_hardware(board, port=rp2, events=drivers.IrqEvents())
        assert sorted(hardware) == [1, 2]
        one, two = hardware[1], hardware[2]
        assert one.rcd is not None and one.lock.unlock_line is not None and one.pp is not None
        assert two.rcd is None and two.lock is None
        assert one.meter.unit_id == 3 and two.meter.unit_id == 4     # by connector id order
        assert one.meter.master is two.meter.master                  # one bus
        assert one.meter.master.timeout_ms == 400
        uart_id, baud, bits, parity, stop, tx, rx = machine.made["uart"][0].settings
        assert (uart_id, bits, tx, rx) == (1, 8, 4, 5)
        assert (baud, parity, stop) == (9600, 0, 1)                 # E: machine.UART's 0
        assert drivers.board_meters({"meter": {"model": "none"}, "connectors": []}) == {}
        assert "mcu: meter_uart" in _raises(ValueError, drivers.board_meters, {
            "meter": {"model": "sdm630"}, "connectors": [{"id": 1}]})


class _RecordingPwm:
    def __init__(self):
        self.calls = []

    def duty_ns(self, ns):
        self.calls.append(("ns", ns))

    def duty_u16(self, value):
        self.calls.append(("u16", value))


def test_pwm_output_writes_duty_in_nanoseconds_and_static_levels_fully_on_or_off():
    from hal.mp_pilot import PwmOutput
    pwm = _RecordingPwm()
    out = PwmOutput(pwm)
    assert out.duty == 1000                 # +12 V until told otherwise
    out.set_pwm(533)                        # 32 A
    out.set_static("f")
    out.set_static("x1")
    out.set_pwm(1200)                       # clamped
    assert pwm.calls == [("ns", 533000), ("u16", 0), ("u16", 65535), ("u16", 65535)]
    assert out.duty == 1000
    try:
        out.set_static("e")
    except ValueError:
        pass
    else:
        raise AssertionError("state E needs a front-end that can drive 0 V")

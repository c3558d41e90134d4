"""Control pilot on an ESP32 under MicroPython: LEDC PWM, ADC samples timed from the edges.

Generation. machine.PWM on ESP32 is an LEDC channel: 1 kHz, duty set in nanoseconds
(`duty_ns(permille * 1000)`; even a 10-bit LEDC resolution is 1 us steps at 1 kHz, far
inside the standard's +-5 us). State x1 (+12 V) is 100 % duty, F (-12 V) is 0 %, both with
the channel running: a stopped LEDC output idles at a level that depends on the chip.
`pilot_inverted` is for a front-end whose amplifier inverts (PWM `invert=True`, so the duty
stays the pilot's high time).

Sampling, synchronised to the PWM. MicroPython on ESP32 has no way to trigger the ADC from
the LEDC timer, and its pin and timer interrupts are *soft*: the handler is scheduled onto
the interpreter, tens of microseconds to milliseconds after the edge, far too late for a
50-100 us plateau. What it does have is `machine.time_pulse_us()`, a C busy-wait on a pin,
and `time.sleep_us()`, a busy-wait for short delays. So the board wires the PWM output back
into an input (`pilot_sense`: a jumper from the PWM GPIO, or better the front-end's pilot
comparator, which shows the real waveform with its rise time; "!N" if that input is LOW on
the pilot's high plateau, e.g. a jumper from the GPIO of an inverting front-end), and each
read():

  1. `time_pulse_us(sense, <low level>, 1100)` waits out the low plateau and returns at the
     rising edge; `ticks_us()` right after stamps it. The stamp only AIMS the samples: an
     interrupt between the edge and the stamp makes it late by an unknown amount;
  2. `sleep_us` to `settle` before the planned high-plateau offset (hal/mp_pilot.py
     `sample_offsets`), then: tick, sense level, tick, `sleep_us(settle)`, tick,
     `ADC.read_uv()`, sense level, tick;
  3. the same late in the low plateau;
  4. a sample counts only if both level checks showed its plateau and `bracket_ok` holds:
     the read began `settle` after the first check and the whole bracket was shorter than
     the other plateau (so no excursion out and back fits inside). That proves the
     conversion lay inside the plateau, `settle` or more after its edge, whatever was
     stamped or delayed (hal/mp_pilot.py `bracket_ok`).
  `pilot_periods` periods (default 2) per read(), the median of the valid samples per
  plateau (hal/mp_pilot.py `PlateauTracker`). With a static output (x1, F) there are no
  edges: the samples are taken at once and are both plateaus.

`ADC.read_uv()` is the ESP32 port's calibrated reading (eFuse characterisation), in uV at
the pin, at 11 dB attenuation (about 0.15-2.45 V linear, usable to ~3.1 V); the board's
two-point `pilot_calibration` maps mV at the pin to mV on the pilot.

Limits (measure on the bench; `pilot.read_us` is the ADC read time found at start-up):
- read() busy-waits: up to 1.1 ms for the first edge, then about a period per sample
  pair: 2-3 ms with 2 periods, 2.2 ms when no edge comes at all (sense wire off). Poll the
  pilot every 10 ms or more; the contactor-opening deadline (100 ms) is far away.
- a read_uv() takes a few tens of us. At 10 % duty (6 A, 100 us high) there is room; at
  5 % (50 us, digital communication) the high plateau is too short for settle + read, and
  at 96 % (80 A) the high-plateau bracket must be shorter than the 40 us low plateau
  (likewise the low bracket shorter than the high plateau at 5 %). A plateau that cannot
  be sampled keeps its last value for 10 reads, then reads 0 V, which the agent treats as
  E / a diode fault (power off). Fail-safe, but a board whose read_us is too long for
  96 % cannot offer 80 A (a Type 2 socket's 32 A is 53 %, far from it).
- FreeRTOS tasks (Wi-Fi, BLE) can preempt the busy-wait; the checks above discard the
  samples they spoil, at the cost of staleness.
- ADC2 pins do not work while Wi-Fi is on: use ADC1 pins (GPIO32-39 on the ESP32) for the
  pilot and PP.
"""
from time import sleep_us, ticks_diff, ticks_us

from machine import ADC, PWM, Pin, time_pulse_us

from hal import interfaces as hal
from hal.mp_pilot import (PERIOD_US, PWM_FREQ_HZ, READ_TIME_PROBES, PlateauTracker, PwmOutput,
                          SETTLE_US, bracket_ok, calibrate, check_calibration, high_us,
                          parse_pin, plain_pin_id, sample_offsets)

EDGE_TIMEOUT_US = PERIOD_US + 100      # per phase of time_pulse_us: one period and a margin


class AdcMv:
    """One ADC1 input in mV at the pin (ESP32: calibrated read_uv, 11 dB attenuation)."""

    def __init__(self, spec, what="adc"):
        self.adc = ADC(Pin(plain_pin_id(spec, what)), atten=ADC.ATTN_11DB)

    def read_mv(self):
        return (self.adc.read_uv() + 500) // 1000


class Esp32Pilot(PwmOutput, hal.Pilot):
    """See the module docstring. `pins`: the connector's [connectors.mcu] table."""

    def __init__(self, pins, settle_us=SETTLE_US, periods=2):
        self.calibration = check_calibration(pins.get("pilot_calibration"))
        self.inverted = bool(pins.get("pilot_inverted", False))
        if pins.get("pilot_sense") is None:
            raise ValueError("pilot_sense: the ESP32 pilot needs the PWM output wired back "
                             "to an input (see hal/mp_pilot_esp32.py)")
        sense_id, sense_low, pull = parse_pin(pins["pilot_sense"], "pilot_sense")
        pull_mode = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN}.get(pull, 0)
        self.sense = Pin(sense_id, Pin.IN, pull_mode)
        # what the sense input shows on the pilot's high plateau ("!N": low)
        self.high_level = 0 if sense_low else 1
        self.adc = AdcMv(pins["pilot_adc"], "pilot_adc")
        PwmOutput.__init__(self, PWM(Pin(plain_pin_id(pins["pilot_pwm"], "pilot_pwm"), Pin.OUT),
                                     freq=PWM_FREQ_HZ, duty_u16=65535, invert=self.inverted))
        self.settle_us = settle_us
        self.periods = periods
        self.tracker = PlateauTracker()
        self.read_us = self._measure_read_us()

    def _measure_read_us(self):
        longest = 0
        for _ in range(READ_TIME_PROBES):
            start = ticks_us()
            self.adc.adc.read_uv()
            longest = max(longest, ticks_diff(ticks_us(), start))
        return longest

    # -- readings ---------------------------------------------------------------------------

    def _mv(self, uv):
        return calibrate((uv + 500) // 1000, self.calibration)

    def read(self):
        duty = self.duty
        if duty in (0, 1000):
            static = [self._mv(self.adc.adc.read_uv()) for _ in range(self.periods)]
            return self.tracker.update(static, static)
        high = high_us(duty)
        high_at, low_at = sample_offsets(high, self.read_us, self.settle_us)
        low_level = 1 - self.high_level
        highs = []
        lows = []
        for _ in range(self.periods):
            if time_pulse_us(self.sense, low_level, EDGE_TIMEOUT_US) < 0:
                continue            # no edge: PWM stopped or the sense wire is off
            edge = ticks_us()
            if high_at is not None:
                mv = self._sample(edge, high_at, self.high_level, PERIOD_US - high)
                if mv is not None:
                    highs.append(mv)
            if low_at is not None:
                mv = self._sample(edge, low_at, low_level, high)
                if mv is not None:
                    lows.append(mv)
        return self.tracker.update(highs, lows)

    def _sample(self, edge, at_us, level, other_us):
        """The pilot mV of a read aimed `at_us` after the stamped `edge`, if the sense input
        proves it lay in the plateau showing `level` (other plateau: `other_us` long)."""
        settle = self.settle_us
        wait = at_us - settle - ticks_diff(ticks_us(), edge)
        if wait > 0:
            sleep_us(wait)
        sense = self.sense
        before = ticks_us()
        if sense.value() != level:
            return None
        checked = ticks_us()
        sleep_us(settle)
        start = ticks_us()
        uv = self.adc.adc.read_uv()
        if sense.value() != level:
            return None
        end = ticks_us()
        if not bracket_ok(ticks_diff(checked, before), ticks_diff(start, before),
                          ticks_diff(end, before), other_us, settle):
            return None
        return self._mv(uv)

def pilot(pins, mcu):
    """The connector's pilot from its [connectors.mcu] pins and the board's [mcu] table."""
    return Esp32Pilot(pins, settle_us=mcu.get("pilot_settle_us", SETTLE_US),
                      periods=mcu.get("pilot_periods", 2))


def adc(spec, mcu, what="adc"):
    return AdcMv(spec, what)

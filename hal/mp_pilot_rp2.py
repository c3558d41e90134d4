"""Control pilot on an RP2040 (or RP2350) under MicroPython: slice PWM, ADC samples placed
by the PWM counter itself.

Generation. machine.PWM drives one channel of a PWM slice at 1 kHz (at 125 MHz the slice
counts 0..TOP with TOP around 62 500, so the duty resolution is far below the standard's
+-5 us); duty in nanoseconds, `duty_ns(permille * 1000)`. x1 (+12 V) is 100 %, F (-12 V) 0 %,
with the slice running. `pilot_inverted` (PWM `invert=True`) is for an inverting front-end.

Sampling, synchronised to the PWM. The RP2 port has no `ADC.read_uv` (read_u16 only) and no
way to start a conversion from a PWM wrap in machine.*, but the slice's counter register is
readable: `machine.mem32[PWM_BASE + 0x14 * slice + 0x08]` (CHn_CTR; RP2040 datasheet §4.5.3,
RP2350 §12.5). The counter IS the phase: it restarts at 0 on the wrap, where the output
rises, and the pilot is on its high plateau while CTR < CC (with or without `invert`, which
flips the pin, not the compare; an inverting amplifier flips it back). So each sample is:

  1. read CTR, `sleep_us` until the planned offset (hal/mp_pilot.py `sample_offsets`: 15 us
     after the rising edge for the high plateau, late in the period for the low one);
  2. CTR, `ADC.read_u16()`, CTR again, all bracketed by `ticks_us()`;
  3. `classify_sample` on the two counter values (in counts, against CC and TOP read from
     the slice's registers, so a rounding of duty_ns cannot mislead it). A read during which
     the counter wrapped (second value smaller), or that took over half a period by the
     tick clock (a wrap hidden by a long interrupt), is discarded.
No GPIO needs to be wired back (unlike the ESP32), and an interrupt anywhere only costs the
sample it delayed. `pilot_periods` sample pairs per read(), median per plateau
(`PlateauTracker`); static x1/F outputs have no edges and are sampled at once.

`read_u16()` scales the 12-bit conversion to 16 bits; mV at the pin = count x
`adc_reference_mv` / 65535 (the board's [mcu] key, 3300 by default: ADC_AVDD on a Pico),
then the board's two-point `pilot_calibration`.

Limits:
- read() busy-waits: up to a period for the first planned offset and about a period per
  sample pair, so about 2-3 ms with 2 periods. Poll the pilot every 10 ms or more.
- the read itself (two mem32 reads, read_u16, interpreter overhead) takes tens of us at
  125 MHz (`pilot.read_us`, measured at start-up): at 5 % (50 us high) or 96 % (40 us low)
  a plateau may be too short; it then goes without samples and, after 10 reads, reads 0 V
  (E / diode fault: power off). Fail-safe, but check `read_us` before offering 80 A.
- the counter method assumes a free-running slice that machine.PWM set up in normal
  (not phase-correct) mode; the constructor refuses a phase-correct slice. PWM_BASE is
  picked from sys.implementation._machine (RP2040 0x40050000, RP2350 0x400A8000); the
  slice of GPIO n is (n >> 1) & 7 on both for GPIO 0..31.
- the RP2040 ADC has a known non-linearity (DNL spikes at a few codes) and a noisy
  reference on a bare Pico; the median and the front-end's two-point calibration are the
  remedy, a separate reference (ADC_VREF) the better one.
"""
import sys
from time import sleep_us, ticks_diff, ticks_us

from machine import ADC, PWM, Pin, mem32

from hal import interfaces as hal
from hal.mp_pilot import (HIGH, LOW, PERIOD_US, PWM_FREQ_HZ, READ_TIME_PROBES, PlateauTracker,
                          PwmOutput, SETTLE_US, calibrate, check_calibration, classify_sample,
                          plain_pin_id, sample_offsets, u16_mv)

PWM_BASES = (("RP2350", 0x400A8000), ("RP2040", 0x40050000))
SLICE_STRIDE = 0x14
CSR, CTR, CC, TOP = 0x00, 0x08, 0x0C, 0x10
CSR_PH_CORRECT = 0x02
DEFAULT_REFERENCE_MV = 3300


def pwm_base(machine_name):
    """The PWM block's address for a sys.implementation._machine (= os.uname().machine)
    string, e.g. "Raspberry Pi Pico with RP2040"."""
    for chip, base in PWM_BASES:
        if chip in machine_name:
            return base
    return PWM_BASES[-1][1]


def pwm_slice(gpio):
    """(slice, channel) driving GPIO `gpio` (channel 0 = A, 1 = B)."""
    return (gpio >> 1) & 7, gpio & 1


class AdcMv:
    """One ADC input in mV at the pin (RP2: read_u16 scaled by the reference voltage)."""

    def __init__(self, spec, reference_mv=DEFAULT_REFERENCE_MV, what="adc"):
        self.adc = ADC(Pin(plain_pin_id(spec, what)))
        self.reference_mv = reference_mv

    def read_mv(self):
        return u16_mv(self.adc.read_u16(), self.reference_mv)


class Rp2Pilot(PwmOutput, hal.Pilot):
    """See the module docstring. `pins`: the connector's [connectors.mcu] table."""

    def __init__(self, pins, reference_mv=DEFAULT_REFERENCE_MV, settle_us=SETTLE_US,
                 periods=2):
        self.calibration = check_calibration(pins.get("pilot_calibration"))
        self.inverted = bool(pins.get("pilot_inverted", False))
        gpio = plain_pin_id(pins["pilot_pwm"], "pilot_pwm")
        if not isinstance(gpio, int):
            raise ValueError("pilot_pwm: the RP2 pilot needs a GPIO number, got %r" % (gpio,))
        self.adc = AdcMv(pins["pilot_adc"], reference_mv, "pilot_adc")
        self.reference_mv = reference_mv
        PwmOutput.__init__(self, PWM(Pin(gpio), freq=PWM_FREQ_HZ, duty_u16=65535,
                                     invert=self.inverted))
        slice_number, self.channel = pwm_slice(gpio)
        slice_base = pwm_base(getattr(sys.implementation, "_machine", "")) + \
            SLICE_STRIDE * slice_number
        self.ctr_address = slice_base + CTR
        self.cc_address = slice_base + CC
        self.top_address = slice_base + TOP
        if mem32[slice_base + CSR] & CSR_PH_CORRECT:
            raise ValueError("pilot_pwm: PWM slice %d runs phase-correct; the sampler needs "
                             "the normal mode machine.PWM sets up" % slice_number)
        self.settle_us = settle_us
        self.periods = periods
        self.tracker = PlateauTracker()
        self.read_us = self._measure_read_us()

    def _measure_read_us(self):
        longest = 0
        for _ in range(READ_TIME_PROBES):
            start = ticks_us()
            _ = mem32[self.ctr_address]
            self.adc.adc.read_u16()
            _ = mem32[self.ctr_address]
            longest = max(longest, ticks_diff(ticks_us(), start))
        return longest

    # -- readings ---------------------------------------------------------------------------

    def _mv(self, raw):
        return calibrate(u16_mv(raw, self.reference_mv), self.calibration)

    def read(self):
        if self.duty in (0, 1000):
            static = [self._mv(self.adc.adc.read_u16()) for _ in range(self.periods)]
            return self.tracker.update(static, static)
        highs = []
        lows = []
        counts = (mem32[self.top_address] & 0xFFFF) + 1
        cc = (mem32[self.cc_address] >> (16 * self.channel)) & 0xFFFF
        high = cc * PERIOD_US // counts
        high_at, low_at = sample_offsets(high, self.read_us, self.settle_us)
        settle = self.settle_us * counts // PERIOD_US
        for _ in range(self.periods):
            if high_at is not None:
                mv = self._sample(high_at, counts, cc, settle, HIGH)
                if mv is not None:
                    highs.append(mv)
            if low_at is not None:
                mv = self._sample(low_at, counts, cc, settle, LOW)
                if mv is not None:
                    lows.append(mv)
        return self.tracker.update(highs, lows)

    def _sample(self, at_us, counts, cc, settle, plateau):
        """The pilot mV of a read started `at_us` into the period, if it lay in `plateau`."""
        now = mem32[self.ctr_address] & 0xFFFF
        wait = (at_us * counts // PERIOD_US - now) % counts
        sleep_us(wait * PERIOD_US // counts)
        started = ticks_us()
        first = mem32[self.ctr_address] & 0xFFFF
        raw = self.adc.adc.read_u16()
        last = mem32[self.ctr_address] & 0xFFFF
        if ticks_diff(ticks_us(), started) >= PERIOD_US // 2:
            return None             # so long that the counter may have wrapped unseen
        if classify_sample(first, last, cc, settle, counts) != plateau:
            return None
        return self._mv(raw)


def pilot(pins, mcu):
    """The connector's pilot from its [connectors.mcu] pins and the board's [mcu] table."""
    return Rp2Pilot(pins, reference_mv=mcu.get("adc_reference_mv", DEFAULT_REFERENCE_MV),
                    settle_us=mcu.get("pilot_settle_us", SETTLE_US),
                    periods=mcu.get("pilot_periods", 2))


def adc(spec, mcu, what="adc"):
    return AdcMv(spec, mcu.get("adc_reference_mv", DEFAULT_REFERENCE_MV), what)

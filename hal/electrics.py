"""Control pilot electrics from first principles (IEC 61851-1 Annex A, spec/standards.md §1.1).

Portable (CPython and MicroPython): the simulator's world, the portable test rig and the
unix-port board's scripted EV (hal/unix_sim.py) all compute the line from this one model.

The EVSE drives +-12 V through a 1 kOhm source resistor. The EV loads the line with a diode
and R2 = 2.74 kOhm (state B); closing S2 adds R3 = 1.3 kOhm (C, 882 Ohm in total) or 270 Ohm
(D, 246 Ohm). The diode blocks the negative half, so the low plateau stays at -12 V unless the
diode is shorted.
"""
SOURCE_OHMS = 1000
DIODE_MV = 700
R2_OHMS = 2740
R3_C_OHMS = 1300
R3_D_OHMS = 270

# generator output (high phase, low phase) in mV per pilot mode
GENERATOR_MV = {
    "pwm": (12000, -12000),
    "x1": (12000, 12000),
    "f": (-12000, -12000),
    "e": (0, 0),
}


def parallel(a, b):
    return a * b // (a + b)


def ev_resistance(s2_closed, ventilation):
    """The EV's load resistor behind its diode."""
    if not s2_closed:
        return R2_OHMS
    return parallel(R2_OHMS, R3_D_OHMS if ventilation else R3_C_OHMS)


def line_mv(generator_mv, load_ohms, diode_shorted):
    """CP voltage for one generator level with an EV (or None: no EV) on the line."""
    if load_ohms is None:
        return generator_mv
    if diode_shorted:
        return generator_mv * load_ohms // (load_ohms + SOURCE_OHMS)
    if generator_mv <= DIODE_MV:
        return generator_mv            # diode blocks: no current, no drop
    return (generator_mv * load_ohms + DIODE_MV * SOURCE_OHMS) // (load_ohms + SOURCE_OHMS)


def plateaus(mode, load_ohms, diode_shorted=False, cp_shorted=False):
    """(high_mv, low_mv) the EVSE's sampler sees."""
    if cp_shorted:
        return 0, 0
    gen_high, gen_low = GENERATOR_MV[mode]
    return (line_mv(gen_high, load_ohms, diode_shorted),
            line_mv(gen_low, load_ohms, diode_shorted))

"""Control pilot electrics for the simulator: the portable model (hal/electrics.py) plus
Gaussian measurement noise (CPython's random.gauss), for sampler robustness tests."""
import random

from hal.electrics import (
    DIODE_MV, GENERATOR_MV, R2_OHMS, R3_C_OHMS, R3_D_OHMS, SOURCE_OHMS, ev_resistance,
    line_mv, parallel,
)
from hal.electrics import plateaus as clean_plateaus

__all__ = ["DIODE_MV", "GENERATOR_MV", "R2_OHMS", "R3_C_OHMS", "R3_D_OHMS", "SOURCE_OHMS",
           "ev_resistance", "line_mv", "parallel", "plateaus"]


def plateaus(mode, load_ohms, diode_shorted=False, cp_shorted=False, noise_mv=0, rng=random):
    """(high_mv, low_mv) the EVSE's sampler sees, with noise_mv of Gaussian noise (sigma)."""
    high, low = clean_plateaus(mode, load_ohms, diode_shorted, cp_shorted)
    if noise_mv:
        high += int(rng.gauss(0, noise_mv))
        low += int(rng.gauss(0, noise_mv))
    return high, low

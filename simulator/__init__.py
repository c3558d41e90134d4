"""The simulated world (CPython only): EV, pilot electrics, contactor, RCD, meter, clock."""

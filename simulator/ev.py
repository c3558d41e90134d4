"""The simulated electric vehicle, driven by one shared `transitions` machine.

States: unplugged -> connected (S2 open, CP shows B) <-> requesting (S2 closed, CP shows C,
or D when the EV asks for ventilation). The EV closes S2 when its driver wants to charge, the
battery is not full, it is awake, and the pilot offers current (8-97 % duty); it opens S2
when any of that stops being true. Every reaction takes `delay_ms` (a real EV needs up to
5 s to follow a PWM change, IEC 61851-1 [K]).

One `Machine` serves every EV (`add_model`), so a fleet of thousands shares one table.
"""
from transitions import Machine

from agent.pilot import current_for_duty

NOMINAL_VOLTAGE_DV = 2300
TAPER_START_PERMILLE = 800      # constant current up to 80 % SoC, then a linear taper
TAPER_FLOOR_MA = 1000           # below this the battery is "full" and the EV opens S2

EV_MACHINE = Machine(
    model=None,
    states=["unplugged", "connected", "requesting"],
    transitions=[
        {"trigger": "plug_in", "source": "unplugged", "dest": "connected"},
        {"trigger": "unplug", "source": ["connected", "requesting"], "dest": "unplugged"},
        {"trigger": "close_s2", "source": "connected", "dest": "requesting",
         "conditions": "wants_power"},
        {"trigger": "open_s2", "source": "requesting", "dest": "connected",
         "unless": "wants_power"},
    ],
    initial="unplugged",
    auto_transitions=False,
    ignore_invalid_triggers=True,
)


class Ev:
    """A car: battery, on-board charger limits, and how it behaves on the pilot."""

    def __init__(self, capacity_wh=60000, soc_permille=200, max_current_ma=32000, phases=3,
                 delay_ms=500, sleepy=False, ignore_pwm_off=False):
        self.capacity_wh = capacity_wh
        self.energy_mwh = capacity_wh * soc_permille     # battery content, milli-Wh
        self.max_current_ma = max_current_ma
        self.phases = phases
        self.delay_ms = delay_ms
        self.sleepy = sleepy                  # ignores PWM until an E/F wake-up step
        self.ignore_pwm_off = ignore_pwm_off  # keeps S2 closed when PWM stops (non-compliant)
        self.driver_wants_charge = False
        self.ventilation = False              # asks for state D
        self.diode_shorted = False
        self.overdraw = False                 # draws far more than offered (fault injection)
        self.duty = 0                         # what the EV last saw on the pilot
        self.pilot_mode = "x1"
        self.current_ma = 0                   # drawn per phase
        self.target_ma = 0
        EV_MACHINE.add_model(self)

    def retire(self):
        """Leave the shared machine (a fleet run must not keep every EV it ever made)."""
        EV_MACHINE.remove_model(self)

    # ------------------------------------------------------------------ derived
    @property
    def soc_permille(self):
        return min(1000, self.energy_mwh // self.capacity_wh)

    @property
    def letter(self):
        if self.state == "unplugged":
            return "A"
        if self.state == "connected":
            return "B"
        return "D" if self.ventilation else "C"

    def battery_limit_ma(self):
        soc = self.soc_permille
        if soc < TAPER_START_PERMILLE:
            return self.max_current_ma
        return self.max_current_ma * (1000 - soc) // (1000 - TAPER_START_PERMILLE)

    def full(self):
        return self.battery_limit_ma() < TAPER_FLOOR_MA

    def pwm_allows(self):
        if self.pilot_mode == "pwm":
            return current_for_duty(self.duty) > 0
        return self.ignore_pwm_off and self.state == "requesting"

    def wants_power(self):
        return self.driver_wants_charge and not self.full() and not self.sleepy \
            and self.pwm_allows()

    def wanted_current_ma(self, powered):
        """Per-phase current the EV draws with power on the line."""
        if not powered or self.state != "requesting":
            return 0
        offered = current_for_duty(self.duty) if self.pilot_mode == "pwm" else self.current_ma
        if self.overdraw:
            return offered * 13 // 10 + 2000
        return max(0, min(offered, self.max_current_ma, self.battery_limit_ma()))

    def see_pilot(self, mode, duty):
        """Returns True if what the EV sees changed."""
        if mode in ("f", "e") and self.sleepy:
            self.sleepy = False     # the E/F wake-up step of IEC 61851-1 A.5.3
        changed = (mode, duty) != (self.pilot_mode, self.duty)
        self.pilot_mode, self.duty = mode, duty
        return changed

    def charge(self, power_w, dt_ms):
        """Add energy to the battery (milli-Wh from W x ms, integer)."""
        if power_w > 0 and dt_ms > 0:
            self.energy_mwh = min(self.capacity_wh * 1000,
                                  self.energy_mwh + power_w * dt_ms // 3600)

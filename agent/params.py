"""Every timing rule and threshold of the controller: a name, the standard's value, a citation.

A board file may override any of these in its `[timing]` table (same names); `evse sim` and the
tests read the deadlines from here, so a rule and its check can never drift apart.
Table numbers are IEC 61851-1:2017 as cited by EVerest (spec/standards.md §1.4).
"""

# name, default, unit, min and max accepted in board files. The why is a comment, not a
# string: on a microcontroller every string in a loaded module costs RAM.
PARAMETERS = (
    # -- pilot detection
    # a new CP state must be stable this long; the EVerest bring-up guide forbids filtering > 50 ms
    ("pilot_debounce_ms", 20, "ms", 1, 50),
    # debounce towards less power (C/D->B, ->A, ->E, ->F): the 100 ms opening budget starts at the
    # edge
    ("pilot_release_debounce_ms", 5, "ms", 1, 50),
    # a confirmed state keeps its window widened by this much, so noise on a boundary cannot flap
    ("pilot_hysteresis_mv", 300, "mV", 0, 1000),
    # -- contactor
    # Table A.6 seq. 2.x/8.1: open <= 100 ms after C->B or unplug (a budget, checked by tests and
    # bench)
    ("contactor_open_deadline_ms", 100, "ms", 1, 1000),
    # Table A.6 seq. 4: close within 3 s of B->C when power is permitted (a budget)
    ("contactor_close_deadline_ms", 3000, "ms", 1, 10000),
    # Table A.6 seq. 10.2: PWM stopped but EV stays in C: open under load only after 6 s
    ("power_off_under_load_ms", 6000, "ms", 6000, 60000),
    # mirror contact must follow the command this fast (OpenEVSE STUCK_RELAY_DELAY 1000 ms)
    ("contactor_feedback_ms", 1000, "ms", 50, 5000),
    # -- pilot sequencing
    # Table A.5 via EVerest state_F_after_fault_ms: show F >= 300 ms after a fault while charging
    ("fault_state_f_ms", 300, "ms", 0, 5000),
    # EVerest IEC_PWM_MAX_UPDATE_INTERVAL: change the duty cycle at most once per 5 s
    ("pwm_update_interval_ms", 5000, "ms", 0, 60000),
    # IEC 61851-1 A.5.3: PWM on for 30 s and no B->C: one E/F wake-up step (0 = never)
    ("legacy_wakeup_ms", 30000, "ms", 0, 600000),
    # EVerest T_STEP_EF: length of the F pulse of the wake-up step
    ("wakeup_step_ms", 4000, "ms", 0, 10000),
    # EVerest PREPARING_TIMEOUT_PAUSED_BY_EV: still no C after the wake-up -> suspended by EV
    ("paused_by_ev_ms", 10000, "ms", 0, 600000),
    # EVerest IECStateMachine: unlock only after 5 s in F, so short F pulses do not cycle the lock
    ("unlock_in_f_ms", 5000, "ms", 0, 60000),
    # lock motor must report the commanded position this fast
    ("lock_feedback_ms", 2000, "ms", 50, 10000),
    # -- protection
    # EVerest soft_over_current_tolerance_percent
    ("over_current_tolerance_pct", 10, "%", 0, 100),
    # EVerest soft_over_current_measurement_noise_A
    ("over_current_noise_ma", 500, "mA", 0, 5000),
    # EVerest soft_over_current_timeout_ms (minimum 6 s: the EV has 5 s to follow a PWM change)
    ("over_current_ms", 7000, "ms", 6000, 60000),
    # no valid meter reading this long -> meter_lost (SmartEVSE: 8-11 s)
    ("meter_timeout_ms", 10000, "ms", 1000, 120000),
    # meter sampling period (EVerest GenericPowermeter polls about once a second)
    ("meter_poll_ms", 1000, "ms", 100, 60000),
    # a session's stop reading is a fresh one, taken after the stop; this long at most
    # (MicroOcpp's stop-ready gate waits about 5 s for the final Modbus reading)
    ("stop_reading_timeout_ms", 5000, "ms", 0, 30000),
    # Tinkerforge WARP: RCD/RDC-DD self-test at least every 24 h, only with no EV and contactor
    # open
    ("rcd_selftest_interval_ms", 86400000, "ms", 0, 604800000),
    # OpenEVSE: throttle to 1/2 current at 65.0 C
    ("temperature_derate_half_dc", 650, "0.1 C", 0, 1500),
    # OpenEVSE: throttle to 1/4 current at 68.0 C
    ("temperature_derate_quarter_dc", 680, "0.1 C", 0, 1500),
    # OpenEVSE: stop (fault) at 71.0 C
    ("temperature_stop_dc", 710, "0.1 C", 0, 1500),
    # OpenEVSE: full current again below 62.0 C
    ("temperature_restore_dc", 620, "0.1 C", 0, 1500),
    # PP out of range this long while the pilot still shows an EV -> pp_fault (at unplug the latch
    #  opens PP a moment before CP reaches A)
    ("pp_fault_ms", 500, "ms", 0, 10000),
    # a token presented before plug-in stays valid this long (OCPP ConnectionTimeOut)
    ("connection_timeout_ms", 60000, "ms", 1000, 3600000),
    # EVerest hack_simplified_mode_limit_10A: cap for a direct A->C plug-in (0 = no cap)
    ("simplified_mode_limit_ma", 0, "mA", 0, 80000),
)

DEFAULTS = {}
RANGES = {}
for _name, _default, _unit, _low, _high in PARAMETERS:
    DEFAULTS[_name] = _default
    RANGES[_name] = (_low, _high)


class Params:
    """Attribute access to the parameters, defaults overridden by a board's `[timing]`."""

    def __init__(self, overrides=None):
        for name in DEFAULTS:
            setattr(self, name, DEFAULTS[name])
        if overrides:
            for name in overrides:
                if name not in DEFAULTS:
                    raise ValueError("unknown timing parameter %r" % name)
                value = overrides[name]
                low, high = RANGES[name]
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    raise ValueError("%s must be an integer %d..%d" % (name, low, high))
                setattr(self, name, value)

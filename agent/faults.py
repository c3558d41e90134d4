"""Fault codes: one row per fault, the stable code is what every layer above speaks.

Every fault opens the contactor at once (the reaction is not configurable: that is the safety
rule). What differs per fault is when it may clear, and how OCPP reports it.

clears:
- "condition": as soon as the condition is gone (E short removed, temperature back down).
- "unplug":    the condition is gone *and* the EV has been unplugged since (a latched trip).
- "manual":    only a reboot or an operator reset (a welded contactor needs service).
"""

CONDITION = "condition"
UNPLUG = "unplug"
MANUAL = "manual"

# code, clears, OCPP 1.6 errorCode, vendorErrorCode, description
FAULTS = (
    ("diode_fault", UNPLUG, "OtherError", "DiodeFault",
     "EV diode missing or shorted: low plateau not at -12 V while PWM runs"),
    ("state_e", CONDITION, "OtherError", "CX014",
     "control pilot shorted to PE (state E)"),
    ("pilot_fault", CONDITION, "OtherError", "CX014",
     "control pilot reads -12 V although the EVSE does not drive F"),
    ("rcd_ac", UNPLUG, "GroundFailure", "CX002",
     "residual current device tripped: AC residual current >= 30 mA"),
    ("rcd_dc", UNPLUG, "GroundFailure", "CX002",
     "residual current device tripped: smooth DC residual current >= 6 mA (IEC 62955)"),
    ("rcd_selftest_failed", MANUAL, "GroundFailure", "RcdSelftest",
     "RCD / RDC-DD self-test failed"),
    ("contactor_welded", MANUAL, "PowerSwitchFailure", "CX017",
     "contactor feedback still closed after the open command"),
    ("contactor_not_closed", UNPLUG, "PowerSwitchFailure", "CX017",
     "contactor feedback still open after the close command"),
    ("over_current", UNPLUG, "OverCurrentFailure", "CX004",
     "EV draws more than offered (+10 % +0.5 A) for longer than 7 s"),
    ("meter_lost", CONDITION, "PowerMeterFailure", "",
     "no valid energy meter reading"),
    ("over_temperature", CONDITION, "HighTemperature", "CX003",
     "EVSE temperature above the stop limit"),
    ("pp_fault", CONDITION, "OtherError", "CX023",
     "proximity pilot resistance out of range (cable missing or broken)"),
    ("ventilation_unavailable", CONDITION, "OtherError", "VentilationNotAvailable",
     "EV requests ventilation (state D) but the site has none"),
    ("lock_failure", UNPLUG, "ConnectorLockFailure", "CX001",
     "connector lock did not reach the commanded position"),
)

CODES = tuple(row[0] for row in FAULTS)
CLEARS = {}
OCPP16_ERROR = {}
VENDOR_ERROR = {}
DESCRIPTION = {}
for _code, _clears, _ocpp, _vendor, _text in FAULTS:
    CLEARS[_code] = _clears
    OCPP16_ERROR[_code] = _ocpp
    VENDOR_ERROR[_code] = _vendor
    DESCRIPTION[_code] = _text


class FaultSet:
    """Active faults of one connector with their clearing policy (sans-I/O)."""

    def __init__(self):
        self._present = {}   # code -> True while the condition holds, False once it is gone

    def __len__(self):
        return len(self._present)

    def __contains__(self, code):
        return code in self._present

    def codes(self):
        return sorted(self._present)

    def first(self):
        """The code reported when one must be chosen: the first in table order."""
        for code in CODES:
            if code in self._present:
                return code
        return None

    def raise_(self, code):
        """Returns True if the fault is new."""
        if code not in CLEARS:
            raise ValueError("unknown fault code %r" % code)
        new = code not in self._present
        self._present[code] = True
        return new

    def condition_gone(self, code, unplugged):
        """The condition behind `code` went away. Returns True if the fault cleared."""
        if code not in self._present:
            return False
        policy = CLEARS[code]
        if policy == CONDITION or (policy == UNPLUG and unplugged):
            del self._present[code]
            return True
        self._present[code] = False
        return False

    def unplugged(self):
        """The EV left: clear every unplug-latched fault whose condition is gone."""
        cleared = []
        for code in list(self._present):
            if CLEARS[code] == UNPLUG and not self._present[code]:
                del self._present[code]
                cleared.append(code)
        return cleared

    def clear_resolved(self):
        """Operator reset: clear every fault whose condition is gone, whatever its latch
        policy. A fault whose condition is still there stays; resetting cannot make a welded
        contactor or a tripped RCD safe."""
        cleared = sorted(code for code in self._present if not self._present[code])
        for code in cleared:
            del self._present[code]
        return cleared

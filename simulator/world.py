"""The simulated charger hardware and the car: the world the agent lives in (CPython).

`World` holds one `SimConnector` per connector: pilot generator and line, contactor with
feedback, RCD with injectable leakage, PP resistor, lock, thermometer, meter, and at most one
`Ev`. It exposes them to the agent through the HAL interfaces (`hal.interfaces`), and calls
each device's `changed()` when something the agent would sense moved, so the agent reacts to
events, as on a board with interrupt-driven sampling. Reactions with a delay (the EV
following the pilot, a contactor's travel time, an RCD's trip time) are scheduled on the
running event loop, so they happen in virtual time under the simulator's clock.
"""
import asyncio
import json
import os
import random
import sys

from hal import interfaces as hal
from simulator import electrics
from simulator.ev import NOMINAL_VOLTAGE_DV

RCD_AC_TRIP_MA = 30        # type A RCD rated residual current
RCD_DC_TRIP_MA = 6         # IEC 62955 RDC-DD
SUPPLY_OHMS_MILLI = 500    # 0.5 Ohm supply impedance: the voltage sags under load (YetiSimulator)
EV_STEP_MS = 30000         # battery/taper integration step while charging
WMS_PER_WH = 3600000
# The simulated meter's register file holds one JSON record padded with spaces (JSON allows
# them) to this width: rewritten in place, a new record covers the old one whole, and one
# write() this short stays inside the file's first page.
REGISTER_RECORD_BYTES = 96

# which end of the cable `SimConnector.unplug` pulls out (the scenario's `unplug end=...`)
UNPLUG_BOTH = "both"       # out of the car and the socket: the connector is free
UNPLUG_EV = "ev"           # out of the car only: a socket's cable stays in (OCTT TC_005)
UNPLUG_SOCKET = "socket"   # out of the socket (and so away from any car on it)
UNPLUG_ENDS = (UNPLUG_BOTH, UNPLUG_EV, UNPLUG_SOCKET)

# Fault injection: kind -> (part, attribute, injected value, cleared value)
FAULT_INJECTIONS = {
    "diode_short": ("ev", "diode_shorted", True, False),
    "cp_short": ("line", "cp_shorted", True, False),
    "rcd_ac": ("rcd", "leakage_ac_ma", 35, 0),
    "rcd_dc": ("rcd", "leakage_dc_ma", 8, 0),
    "contactor_weld": ("contactor", "welded", True, False),
    "contactor_stuck_open": ("contactor", "stuck_open", True, False),
    "meter_lost": ("meter", "lost", True, False),
    "over_temperature": ("thermometer", "deci_c", 750, 250),
    "pp_open": ("pp", "open", True, False),
    "ventilation": ("ev", "ventilation", True, False),
    "overcurrent": ("ev", "overdraw", True, False),
}


class SimPilot(hal.Pilot):
    def __init__(self, connector):
        self.connector = connector
        self.mode = "x1"
        self.duty = 0

    def set_pwm(self, duty_permille):
        self._output("pwm", duty_permille)

    def set_static(self, level):
        self._output(level, 0)

    def _output(self, mode, duty):
        self.mode, self.duty = mode, duty
        self.connector.pilot_output_changed()

    def read(self):
        return self.connector.plateaus()


class SimContactor(hal.Contactor):
    """Closes after close_ms, opens after open_ms; a weld keeps it closed, stuck_open keeps it
    open. The feedback contact mirrors the main contacts."""

    def __init__(self, connector, close_ms=30, open_ms=20, has_feedback=True):
        self.connector = connector
        self.close_ms, self.open_ms = close_ms, open_ms
        self.has_feedback = has_feedback
        self.commanded = False
        self.closed = False
        self.welded = False
        self.stuck_open = False
        self.cut_by_rcd = False
        self._travel = None
        self.commands = []          # (time_ms, closed): for latency measurements

    def set(self, closed):
        closed = bool(closed)
        self.commands.append((self.connector.world.now_ms(), closed))
        if closed == self.commanded:
            return
        self.commanded = closed
        if self._travel is not None:
            self._travel.cancel()
        delay = self.close_ms if closed else self.open_ms
        self._travel = self.connector.world.later(delay, self._arrive)

    def _arrive(self):
        self._travel = None
        want = self.commanded and not self.cut_by_rcd
        if self.welded and self.closed:
            want = True
        if self.stuck_open:
            want = False
        if want != self.closed:
            self.connector.power_changing()
            self.closed = want
            self.connector.power_changed()
            self.changed()

    def feedback(self):
        return self.closed if self.has_feedback else None


class SimRcd(hal.Rcd):
    def __init__(self, connector, trip_ms=20):
        self.connector = connector
        self.trip_ms = trip_ms
        self.leakage_ac_ma = 0
        self.leakage_dc_ma = 0
        self.tripped = None
        self.selftest_broken = False
        self._pending = None

    def energized_leakage(self):
        if not self.connector.powered():
            return None
        if self.leakage_dc_ma >= RCD_DC_TRIP_MA:
            return "dc"
        if self.leakage_ac_ma >= RCD_AC_TRIP_MA:
            return "ac"
        return None

    def check(self):
        kind = self.energized_leakage()
        if kind and self.tripped is None and self._pending is None:
            self._pending = self.connector.world.later(self.trip_ms, self._trip)

    def _trip(self):
        self._pending = None
        kind = self.energized_leakage()
        if kind and self.tripped is None:
            self.tripped = kind
            self.connector.contactor.cut_by_rcd = True   # the RCD opens the coil in hardware
            self.connector.contactor._arrive()
            self.changed()

    def trip(self):
        return self.tripped

    def reset(self):
        if self.energized_leakage():
            return False
        self.tripped = None
        self.connector.contactor.cut_by_rcd = False
        return True

    def self_test(self):
        return not self.selftest_broken


class SimLock(hal.Lock):
    has_feedback = True

    def __init__(self, connector):
        self.connector = connector
        self.locked = False

    def set(self, locked):
        self.locked = bool(locked)
        self.changed()

    def feedback(self):
        return self.locked


class SimPp(hal.ProximityPilot):
    """The socket's PP input: it reads the coding resistor of whatever cable sits in the
    socket, whether or not a car is on the cable's other end (IEC 61851-1 Annex B)."""

    def __init__(self, connector):
        self.connector = connector
        self.ohms = None            # the resistor of the cable in the socket, None = no cable
        self.open = False           # fault injection: a broken PP wire

    def read_ohms(self):
        if self.open:
            return None
        return self.ohms


class SimThermometer(hal.Thermometer):
    def __init__(self, connector):
        self.connector = connector
        self.deci_c = 250

    def read_dc(self):
        return self.deci_c


class SimMeter(hal.Meter):
    """Integrates energy exactly: W x ms in an integer accumulator, read out in whole Wh.

    With a `register_path` the energy registers survive a restart of the simulator, as a
    real meter's do (non-volatile): saved whenever the whole Wh it reads out change, before
    that reading is handed out, so no reading the agent saw is ever ahead of what a restarted
    meter shows. A damaged file is reported on stderr and the meter starts from 0."""

    def __init__(self, connector, timeout_ms=1000, register_path=None):
        self.connector = connector
        self.timeout_ms = timeout_ms
        self.lost = False
        self.import_wms = 0
        self.export_wms = 0
        self._since = 0
        self.reads = 0
        self.register_path = register_path
        self._saved_wh = None       # the (import, export) Wh the file holds, once written here
        if register_path:
            try:
                saved = read_register(register_path)
            except ValueError as problem:
                print("warning: %s: %s; the simulated meter starts from 0 Wh"
                      % (register_path, problem), file=sys.stderr)
                saved = None
            if saved is not None:
                self.import_wms, self.export_wms = saved

    def _save(self):
        record = json.dumps({"import_wms": self.import_wms, "export_wms": self.export_wms})
        record = (record.ljust(REGISTER_RECORD_BYTES - 1) + "\n").encode()
        if self._saved_wh is None:
            # the first save of a run replaces the file whole: what was there (a damaged or
            # longer file) must not survive past the record
            temporary = self.register_path + ".tmp"
            with open(temporary, "wb") as file:
                file.write(record)
            os.replace(temporary, self.register_path)
        else:
            # No fsync and no rename, once a second for hours: a rename over the file costs
            # ~0.35 ms on ext4 (auto_da_alloc starts writeback), fsync ~1 ms. One short write()
            # into the page cache is enough: a kill -9 lands before or after it, never inside
            # (the kernel checks for a fatal signal between pages), and the kernel keeps the
            # data after the process dies. A simulator need not survive its host's power cut.
            with open(self.register_path, "r+b") as file:
                file.write(record)

    def integrate(self, now):
        power = self.connector.power_w()
        if power > 0:
            self.import_wms += power * (now - self._since)
        elif power < 0:
            self.export_wms -= power * (now - self._since)
        self._since = now

    def sample(self):
        connector = self.connector
        now = connector.world.now_ms()
        self.integrate(now)
        import_wh, export_wh = self.import_wms // WMS_PER_WH, self.export_wms // WMS_PER_WH
        if self.register_path and (import_wh, export_wh) != self._saved_wh:
            self._save()
            self._saved_wh = (import_wh, export_wh)
        currents, voltages, powers, total = connector.electrical()
        return hal.MeterSample(
            energy_import_wh=import_wh, energy_export_wh=export_wh,
            power_w=total, power_w_phases=powers, current_ma=currents,
            voltage_dv=voltages, frequency_mhz=50000, timestamp_ms=now)

    async def read(self):
        self.reads += 1
        if self.lost:
            await asyncio.sleep(self.timeout_ms / 1000)
            raise hal.MeterError("no answer within %d ms" % self.timeout_ms)
        return self.sample()


def read_register(path):
    """(import_wms, export_wms) from a simulated meter's register file, None if there is none;
    ValueError saying what is wrong with a damaged one."""
    try:
        with open(path, "rb") as file:
            saved = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as error:         # UnicodeDecodeError and JSONDecodeError are both
        raise ValueError("not JSON text (%s)" % error) from None
    keys = ("import_wms", "export_wms")
    # bool is an int to Python, and a register counts whole W x ms upwards from 0
    if not isinstance(saved, dict) or \
            any(type(saved.get(key)) is not int or saved[key] < 0 for key in keys):
        raise ValueError("expected {\"import_wms\": N, \"export_wms\": N} with whole numbers "
                         ">= 0, found %.80s" % json.dumps(saved))
    return saved["import_wms"], saved["export_wms"]


class SimConnector:
    def __init__(self, world, connector_id, phases=3, socket=True, ventilation=False,
                 contactor_feedback=True, noise_mv=0, seed=1):
        self.world = world
        self.connector_id = connector_id
        self.phases = phases
        self.socket = socket
        self.ventilation = ventilation
        self.noise_mv = noise_mv
        self.rng = random.Random(seed)
        self.cp_shorted = False
        self.ev = None
        self.pilot = SimPilot(self)
        self.contactor = SimContactor(self, has_feedback=contactor_feedback)
        self.rcd = SimRcd(self)
        self.lock = SimLock(self) if socket else None
        self.pp = SimPp(self) if socket else None
        self.thermometer = SimThermometer(self)
        self.meter = SimMeter(self)
        self._reaction = None
        self._retarget = None
        self._ev_step = None
        self._ev_since = 0
        self._electrical = None
        self._electrical_key = None

    # the "line" part of FAULT_INJECTIONS
    @property
    def line(self):
        return self

    def hardware(self):
        return hal.ConnectorHardware(self.pilot, self.contactor, rcd=self.rcd, lock=self.lock,
                                     pp=self.pp, meter=self.meter,
                                     thermometer=self.thermometer)

    # ------------------------------------------------------------------ electrics
    def plateaus(self):
        ev = self.ev
        load = None if ev is None else electrics.ev_resistance(
            ev.state == "requesting", ev.ventilation)
        return electrics.plateaus(self.pilot.mode, load,
                                  diode_shorted=ev is not None and ev.diode_shorted,
                                  cp_shorted=self.cp_shorted,
                                  noise_mv=self.noise_mv, rng=self.rng)

    def powered(self):
        return self.contactor.closed and self.ev is not None

    def electrical(self):
        """(currents mA, voltages dV, powers W, total W) per phase, cached: a meter poll
        every second of an 8-hour virtual session must not recompute what did not change."""
        ev = self.ev
        key = None if ev is None or not self.contactor.closed or not ev.current_ma else (
            ev.current_ma, min(ev.phases, self.phases))
        if key != self._electrical_key or self._electrical is None:
            if key is None:
                currents = (0, 0, 0)
            else:
                currents = tuple(key[0] if n < key[1] else 0 for n in range(3))
            voltages = tuple(NOMINAL_VOLTAGE_DV - i * SUPPLY_OHMS_MILLI // 100000
                             for i in currents)
            powers = tuple(v * i // 10000 for v, i in zip(voltages, currents))
            self._electrical = (currents, voltages, powers, sum(powers))
            self._electrical_key = key
        return self._electrical

    def phase_currents_ma(self):
        return self.electrical()[0]

    def phase_voltages_dv(self):
        return self.electrical()[1]

    def power_w(self):
        return self.electrical()[3]

    def ev_current_ma(self):
        return max(self.phase_currents_ma())

    # ------------------------------------------------------------------ reactions
    def power_changing(self):
        """Close the books (meter, battery) before the current flowing changes."""
        now = self.world.now_ms()
        self.meter.integrate(now)
        if self.ev is not None:
            self.ev.charge(self.power_w(), now - self._ev_since)
        self._ev_since = now

    def power_changed(self):
        ev = self.ev
        if ev is not None:
            self.set_ev_current(ev.wanted_current_ma(self.contactor.closed), immediate=not
                                self.contactor.closed)
        self.rcd.check()
        self.pilot.changed()

    def set_ev_current(self, target, immediate=False):
        ev = self.ev
        if ev is None:
            return
        if self._retarget is not None:
            self._retarget.cancel()
            self._retarget = None
        ev.target_ma = target
        if immediate or target == ev.current_ma:
            self._apply_current(target)
        else:
            self._retarget = self.world.later(ev.delay_ms, self._apply_current, target)

    def _apply_current(self, target):
        self._retarget = None
        ev = self.ev
        if ev is None or target == ev.current_ma:
            return
        self.power_changing()
        ev.current_ma = target if self.contactor.closed else 0
        self.rcd.check()
        self._schedule_ev_step()

    def _schedule_ev_step(self):
        ev = self.ev
        if self._ev_step is None and ev is not None and ev.current_ma:
            self._ev_step = self.world.later(EV_STEP_MS, self._step_battery)

    def _step_battery(self):
        """Integrate the battery; the taper lowers the current, a full battery opens S2."""
        self._ev_step = None
        ev = self.ev
        if ev is None:
            return
        self.power_changing()
        target = ev.wanted_current_ma(self.contactor.closed)
        if target != ev.current_ma:
            self._apply_current(target)
        self.ev_react()
        self._schedule_ev_step()

    def pilot_output_changed(self):
        ev = self.ev
        if ev is not None and ev.see_pilot(self.pilot.mode, self.pilot.duty):
            self.ev_react()
            self.set_ev_current(ev.wanted_current_ma(self.contactor.closed),
                                immediate=self.pilot.mode != "pwm")
        self.pilot.changed()

    def ev_react(self):
        """The EV reconsiders S2 after its reaction delay."""
        ev = self.ev
        if ev is None:
            return
        want = ev.wants_power()
        if want == (ev.state == "requesting"):
            if self._reaction is not None:
                self._reaction.cancel()
                self._reaction = None
            return
        if self._reaction is None:
            self._reaction = self.world.later(ev.delay_ms, self._switch_s2)

    def _switch_s2(self):
        self._reaction = None
        ev = self.ev
        if ev is None:
            return
        before = ev.state
        if ev.wants_power():
            ev.close_s2()
        else:
            ev.open_s2()
        if ev.state != before:
            self.power_changing()
            if ev.state != "requesting":
                ev.current_ma = 0
            self.set_ev_current(ev.wanted_current_ma(self.contactor.closed))
            self.pilot.changed()

    # ------------------------------------------------------------------ scenario actions
    @property
    def cable_in_socket(self):
        """A socket holds a cable (its PP resistor is in the circuit), with or without a car
        on the other end. A tethered cable has no socket: always False."""
        return self.pp is not None and self.pp.ohms is not None

    def plug(self, ev):
        """The car is connected: on a socket, through a cable that goes into the socket
        first unless one was left there (a 32 A cable, PP 220 ohm, unless told otherwise)."""
        if self.ev is not None:
            raise ValueError("connector %d already has an EV plugged in" % self.connector_id)
        self.ev = ev
        ev.plug_in()
        ev.see_pilot(self.pilot.mode, self.pilot.duty)
        if self.pp is not None and self.pp.ohms is None:
            self.pp.ohms = 220
            self.pp.changed()
        self.ev_react()
        self.pilot.changed()

    def unplug(self, end=UNPLUG_BOTH):
        """Pull the cable out: of the car and of the socket (`both`), of the car only (`ev`:
        a socket's cable stays in, its PP still coded, the pilot sees no EV), or of the
        socket (`socket`: the car, if still on the cable, is no longer connected either).
        The simulated lock does not hold the plug back: a scenario may take a cable out of
        a locked socket, as a driver forcing it would."""
        if end not in UNPLUG_ENDS:
            raise ValueError("unplug end must be one of %s, got %r" % (
                " ".join(UNPLUG_ENDS), end))
        if end == UNPLUG_SOCKET and self.pp is None:
            raise ValueError("connector %d has a tethered cable: it has no socket end"
                             % self.connector_id)
        self._disconnect_ev()
        if end != UNPLUG_EV:
            self._remove_cable()

    def _disconnect_ev(self):
        ev = self.ev
        if ev is None:
            return
        self.power_changing()
        ev.current_ma = 0
        ev.unplug()
        for handle in (self._reaction, self._retarget, self._ev_step):
            if handle is not None:
                handle.cancel()
        self._reaction = self._retarget = self._ev_step = None
        self.ev = None
        ev.retire()
        self.pilot.changed()

    def _remove_cable(self):
        if self.cable_in_socket:
            self.pp.ohms = None
            self.pp.changed()

    def driver(self, wants_charge):
        if self.ev is None:
            raise ValueError("no EV plugged in at connector %d" % self.connector_id)
        self.ev.driver_wants_charge = wants_charge
        self.ev_react()

    def inject(self, kind, active):
        part, attribute, on, off = FAULT_INJECTIONS[kind]
        target = getattr(self, part)
        if target is None:
            raise ValueError("%s needs an EV plugged in" % kind if part == "ev"
                             else "this connector has no %s" % part)
        self.power_changing()
        setattr(target, attribute, on if active else off)
        if part == "contactor":
            self.contactor._arrive()
        self.refresh()

    def refresh(self):
        """Let every part re-evaluate after a change from outside, as physics would."""
        if self.ev is not None:
            self.set_ev_current(self.ev.wanted_current_ma(self.contactor.closed), immediate=True)
            self.ev_react()
        self.rcd.check()
        for device in (self.pilot, self.contactor, self.pp, self.thermometer):
            if device is not None:
                device.changed()


class World:
    """All simulated connectors of one charger, on the running event loop's clock."""

    def __init__(self, connectors=None):
        self.connectors = {}
        self._loop = None
        for connector in connectors or ():
            self.add(connector)

    def add(self, connector):
        self.connectors[connector.connector_id] = connector
        return connector

    def bind(self, loop=None):
        self._loop = loop or asyncio.get_running_loop()

    def now_ms(self):
        loop = self._loop or asyncio.get_running_loop()
        exact = getattr(loop, "time_ms", None)
        return exact() if exact is not None else int(loop.time() * 1000)

    def later(self, delay_ms, fn, *args):
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(delay_ms / 1000, fn, *args)

    def hardware(self):
        return {cid: c.hardware() for cid, c in self.connectors.items()}

"""A scripted charger for the MicroPython unix port (`boards/unix.toml`), portable.

The unix port has no machine.Pin, PWM or ADC, so a full OCPP session on real MicroPython
needs hardware in software: this module is the smallest honest stand-in. The pilot line comes
from the one electrics model (hal/electrics.py); the contactor and lock follow their commands
with their feedback; the meter integrates energy in integer mWh from the current the EV draws
(what the pilot offers, at most the EV's own limit) at a fixed voltage; the RCD never trips.
`drive()` is the scripted EV: plug in, swipe the board's tag, close S2 (ready), charge for the
board's time, open S2, unplug: one session, then it returns.

Kept small on purpose: it is imported on a microcontroller-sized heap next to the agent.
"""
from agent.compat import asyncio, monotonic_ms
from agent.pilot import current_for_duty
from hal import electrics
from hal import interfaces as hal

VOLTAGE_DV = 2300
PP_OHMS = 220                 # a 32 A cable (IEC 61851-1 Table B.2)
EV_REACTION_MS = 300          # the EV follows the pilot this long after a change


class Line:
    """One connector's physical side: the EV's state and the energy through the contactor."""

    def __init__(self, phases, ev_max_ma):
        self.phases = phases
        self.ev_max_ma = ev_max_ma
        self.ev = None                # None (no EV), "B" (S2 open), "C" (S2 closed)
        self.wants_charge = False
        self.mode, self.duty = "x1", 0
        self.closed = False
        self.locked = False
        self.energy_mwh = 0
        self._since = monotonic_ms()
        self.devices = ()

    def current_ma(self):
        if not self.closed or self.ev != "C" or self.mode != "pwm":
            return 0
        return min(current_for_duty(self.duty), self.ev_max_ma)

    def integrate(self):
        now = monotonic_ms()
        # W x ms / 3600 = mWh; dV x mA = 1e-4 W
        self.energy_mwh += VOLTAGE_DV * self.current_ma() * self.phases * (now - self._since) \
            // 36000000
        self._since = now

    def changed(self):
        for device in self.devices:
            device.changed()

    def plateaus(self):
        load = None if self.ev is None else electrics.ev_resistance(self.ev == "C", False)
        return electrics.plateaus(self.mode, load)


class UnixPilot(hal.Pilot):
    def __init__(self, line):
        self.line = line

    def set_pwm(self, duty_permille):
        self._output("pwm", duty_permille)

    def set_static(self, level):
        self._output(level, 0)

    def _output(self, mode, duty):
        self.line.integrate()
        self.line.mode, self.line.duty = mode, duty

    def read(self):
        return self.line.plateaus()


class UnixContactor(hal.Contactor):
    has_feedback = True

    def __init__(self, line):
        self.line = line

    def set(self, closed):
        self.line.integrate()
        self.line.closed = bool(closed)
        self.changed()

    def feedback(self):
        return self.line.closed


class UnixLock(hal.Lock):
    has_feedback = True

    def __init__(self, line):
        self.line = line

    def set(self, locked):
        self.line.locked = bool(locked)
        self.changed()

    def feedback(self):
        return self.line.locked


class UnixPp(hal.ProximityPilot):
    def __init__(self, line):
        self.line = line

    def read_ohms(self):
        return None if self.line.ev is None else PP_OHMS


class UnixMeter(hal.Meter):
    def __init__(self, line):
        self.line = line

    async def read(self):
        line = self.line
        line.integrate()
        current = line.current_ma()
        per_phase = tuple(current if i < line.phases else 0 for i in range(3))
        return hal.MeterSample(
            energy_import_wh=line.energy_mwh // 1000, energy_export_wh=0,
            power_w=VOLTAGE_DV * current * line.phases // 10000,
            current_ma=per_phase, voltage_dv=(VOLTAGE_DV,) * 3, frequency_mhz=50000)


def board_meters(board):
    """A Modbus [meter] on the PC's serial device (a USB-RS485 adapter, or a pty with
    `evse meter serve --pty` behind it), read by the portable RTU master: {connector id:
    RtuMeter}; empty for the scripted charger's own meter ("sim")."""
    meter = board.get("meter") or {}
    if meter.get("model", "sim") in ("sim", "none"):
        return {}
    from hal import modbus_rtu
    from hal.unix_tty import TtyUart

    def open_uart(settings):
        return TtyUart(meter["serial"], **settings), meter["serial"], None
    return modbus_rtu.board_meters(board, open_uart, clock=monotonic_ms)


def board_hardware(board):
    """{connector id: ConnectorHardware} and {connector id: Line} for a unix board."""
    hardware, lines = {}, {}
    meters = board_meters(board)
    ev_max = board.get("unix", {}).get("ev_current", 16000)
    for c in board["connectors"]:
        line = Line(c["phases"], ev_max)
        socket = c["type"] == "socket"
        pilot, contactor = UnixPilot(line), UnixContactor(line)
        lock, pp = (UnixLock(line), UnixPp(line)) if socket else (None, None)
        line.devices = tuple(d for d in (pilot, contactor, lock, pp) if d is not None)
        hardware[c["id"]] = hal.ConnectorHardware(pilot, contactor, rcd=hal.Rcd(), lock=lock,
                                                  pp=pp,
                                                  meter=meters.get(c["id"]) or UnixMeter(line))
        lines[c["id"]] = line
    return hardware, lines


async def _ev_follows(line, letter):
    await _sleep(EV_REACTION_MS)
    line.integrate()
    line.ev = letter
    line.changed()


async def drive(board, agent, line, connector_id=1, log=print):
    """The scripted EV of a unix board's [unix] table: one session, then return."""
    script = board.get("unix", {})
    await _sleep(script.get("plug_after", 1000))
    log("EV: plugged in")
    line.ev = "B"
    line.changed()
    await _sleep(500)
    tag = script.get("tag")
    if tag:
        log("EV: driver swipes %s" % tag)
        agent.act(agent.station.present_token, tag, connector_id)
    await _until(lambda: line.mode == "pwm", 30000)
    log("EV: ready, closes S2")
    await _ev_follows(line, "C")
    await _sleep(script.get("charge", 30000))
    log("EV: full, opens S2 (%d Wh)" % (line.energy_mwh // 1000))
    await _ev_follows(line, "B")
    await _until(lambda: not line.closed, 10000)
    if tag:
        agent.act(agent.station.present_token, tag, connector_id)     # ends the session
    await _sleep(1000)
    log("EV: unplugged")
    line.integrate()
    line.ev = None
    line.changed()


async def _sleep(ms):
    await asyncio.sleep(ms / 1000)


async def _until(condition, timeout_ms):
    waited = 0
    while not condition() and waited < timeout_ms:
        await _sleep(20)
        waited += 20

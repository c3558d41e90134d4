"""The shared harness of the OCPP 1.6J integration tests (test_ocpp16_integration.py,
test_ocpp16_rows.py): the real agent on the simulated board, over real WebSockets on
127.0.0.1, against the local CSMS, in virtual time, with an operator coroutine acting as the
CSMS's user, plus readers of what the CSMS recorded and helpers for physical situations at a
moment the operator chooses (the scenario language has `unplug end=ev` for the first two; a
jammed lock has no verb).

No pytest-asyncio: everything runs inside `simulator.clock.run`. Every run is bounded in
virtual time and in wall-clock time (SIGALRM guard).
"""
import asyncio
import contextlib
import copy
import signal
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

import tools.boardfile
from simulator import clock
from simulator.csms import NO_REPLY, CallError, CallErrorReceived, LocalCsms
from simulator.runner import OcppOptions, Simulation
from simulator.scenario import parse_text
from simulator.timeline import Timeline
from simulator.world import UNPLUG_EV, UNPLUG_SOCKET

CP = "SIM-0001"                 # the sim board's serial: the default charge point id
TAG = "04A1B2C3"
OTHER_TAG = "TAG-001"
BAD_TAG = "BADTAG"
REMOTE_TAG = "REMOTE-01"
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
WALL_LIMIT_S = 30               # per test, real seconds
VIRTUAL_LIMIT_S = 3 * 3600      # per simulation, virtual seconds
AUTH_KEY = "0123456789abcdef0123456789abcdef01234567"   # 40 hex digits: a valid AuthorizationKey

BOARD = tools.boardfile.load(tools.boardfile.find("sim"))

# a charging session, plug first (the EV asks for power as soon as it may)
CHARGE = """
    plug
    wait_for ocpp_status == Preparing timeout=10s
    swipe 04A1B2C3
    ev_ready
    wait_for ocpp_status == Charging timeout=10s
"""


# the same charger with a tethered (fixed) cable: no lock, no PP (TC_017_2 / TC_018_2, E20)
FIXED_CABLE_BOARD = copy.deepcopy(BOARD)
FIXED_CABLE_BOARD["connectors"][0].update(type="cable", cable_max_current=32000)

# a charging session, plug first (the EV asks for power as soon as it may)

# ------------------------------------------------------------------------------ harness

class WallClockExceeded(SystemExit):
    """Raised from SIGALRM: SystemExit passes through asyncio's callback guard."""


@pytest.fixture(autouse=True)
def wall_clock_guard():
    def expired(signum, frame):
        raise WallClockExceeded("test exceeded %d s of wall-clock time" % WALL_LIMIT_S)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, WALL_LIMIT_S, 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def virtual_utc():
    return T0 + timedelta(seconds=asyncio.get_running_loop().time())


class Run:
    """What one simulation left behind."""

    def __init__(self, sim, csms, ok, result):
        self.sim = sim
        self.csms = csms
        self.ok = ok
        self.result = result

    def failed_expectations(self):
        return ["%s:%d %s (actual %r)" % (e.step.file, e.step.line, e.step.text, e.actual)
                for e in self.sim.expectations if not e.held]

    def assert_scenario_held(self):
        assert self.failed_expectations() == [], "\n" + self.transcript()

    def transcript(self):
        return "\n".join(r.line()[:220] for r in self.csms.log)


class HookedSimulation(Simulation):
    """`on_boot(sim)` runs after every (re)boot of the agent, before it connects."""

    on_boot = None

    def boot_agent(self):
        super().boot_agent()
        if self.on_boot is not None:
            self.on_boot(self)


def simulate(scenario, operator=None, on_boot=None, board=BOARD, **csms_options):
    """Run `scenario` (scenario-language text) on `board` against a fresh LocalCsms while
    `operator(sim, csms)` runs concurrently; returns a Run (`result` = the operator's).
    The scenario must outlast the operator: the agent stops when the scenario ends."""
    steps = parse_text(textwrap.dedent(scenario), "<scenario>")

    async def main():
        csms = LocalCsms(clock=virtual_utc, **csms_options)
        await csms.start()
        sim = HookedSimulation(copy.deepcopy(board), timeline=Timeline(quiet=True),
                               ocpp=OcppOptions(url=csms.url))
        sim.on_boot = on_boot
        result = None
        try:
            async with asyncio.timeout(VIRTUAL_LIMIT_S):
                scenario_task = asyncio.ensure_future(sim.run(steps))
                if operator is not None:
                    try:
                        result = await operator(sim, csms)
                    except BaseException:
                        scenario_task.cancel()
                        with contextlib.suppress(BaseException):
                            await scenario_task
                        raise
                ok = await scenario_task
        finally:
            await csms.stop()
        return Run(sim, csms, ok, result)

    return clock.run(main())


# --- reading the CSMS's records

def calls(csms, action=None):
    """CALLs the charge point sent, in order."""
    return csms.records(CP, action, "CALL", "from_cp")


def payloads(csms, action):
    return [r.payload for r in calls(csms, action)]


def answer(csms, record):
    """The CSMS's CALLRESULT/CALLERROR record for one of the charge point's CALLs."""
    for r in csms.log:
        if r.direction == "to_cp" and r.unique_id == record.unique_id and \
                r.kind in ("CALLRESULT", "CALLERROR"):
            return r
    return None


def statuses(csms, connector=1, after=None):
    return [p["status"] for r, p in ((r, r.payload) for r in calls(csms, "StatusNotification"))
            if p["connectorId"] == connector and (after is None or r.time >= after)]


def status_records(csms, connector=1):
    return [r for r in calls(csms, "StatusNotification") if r.payload["connectorId"] == connector]


def last_status(csms, connector=1):
    return csms.station(CP).connectors.get(connector)


def tx_meter_values(csms, transaction_id, context=None):
    """MeterValues CALL records that carry this transaction id (optionally one context)."""
    out = []
    for r in calls(csms, "MeterValues"):
        if r.payload.get("transactionId") != transaction_id:
            continue
        if context is not None and any(s.get("context", "Sample.Periodic") != context
                                       for mv in r.payload["meterValue"]
                                       for s in mv["sampledValue"]):
            continue
        out.append(r)
    return out


def energy_register(meter_value):
    for sampled in meter_value["sampledValue"]:
        if sampled.get("measurand", "Energy.Active.Import.Register") == \
                "Energy.Active.Import.Register":
            assert sampled.get("unit", "Wh") == "Wh"
            return int(sampled["value"])
    return None


def parse_ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def previous_record(csms, record):
    """The last frame (either direction) of this charge point before `record`."""
    before = None
    for r in csms.log:
        if r is record:
            return before
        if r.cp_id == CP:
            before = r
    raise AssertionError("record not in the log")


def index(csms, record):
    return csms.log.index(record)


def connection_times(csms, event):
    return [e.time for e in csms.connection_events if e.cp_id == CP and e.event == event]


# --- operator helpers (all waits are in virtual time)

def now():
    return asyncio.get_running_loop().time()


async def until(csms, predicate, timeout=120):
    return await csms.wait_for(predicate, timeout)


async def booted(csms, boots=1, timeout=120):
    """BootNotification number `boots` (or a later one) Accepted, and connector 1 reported
    after that."""
    def accepted(record):
        reply = answer(csms, record)
        return reply is not None and reply.kind == "CALLRESULT" and \
            reply.payload.get("status") == "Accepted"

    def done():
        boots_sent = calls(csms, "BootNotification")[boots - 1:]
        ok = [r for r in boots_sent if accepted(r)]
        return bool(ok) and any(r.time >= ok[0].time for r in status_records(csms, 1))
    await until(csms, done, timeout)


async def wait_status(csms, status, connector=1, timeout=120):
    await until(csms, lambda: last_status(csms, connector) == status, timeout)


async def started_tx(csms, count=1, timeout=300):
    """Wait until the CSMS answered the count-th StartTransaction; returns its transactionId."""
    def answered():
        starts = calls(csms, "StartTransaction")
        if len(starts) < count:
            return None
        reply = answer(csms, starts[count - 1])
        return reply if reply is not None and reply.kind == "CALLRESULT" else None
    reply = await until(csms, answered, timeout)
    await asyncio.sleep(0.1)            # let the answer reach the charge point
    return reply.payload["transactionId"]


async def wait_calls(csms, action, count=1, timeout=120):
    await until(csms, lambda: len(calls(csms, action)) >= count, timeout)
    return calls(csms, action)[count - 1]


async def configure(csms, **keys):
    """ChangeConfiguration for each key; every one must be Accepted."""
    for key, value in keys.items():
        reply = await csms.change_configuration(CP, key, value)
        assert reply == {"status": "Accepted"}, (key, reply)


# --- physical situations, at a moment the operator chooses

def unplug_at_ev(sim, connector_id=1):
    """The driver pulls the cable out of the car and leaves it in the socket: the pilot sees
    no EV (state A) while the socket's PP still reads the cable's coding resistor (the
    scenario's `unplug end=ev`)."""
    sim.world.connectors[connector_id].unplug(UNPLUG_EV)


def remove_cable(sim, connector_id=1):
    """The cable is then taken out of the socket too: PP open (`unplug end=socket`)."""
    sim.world.connectors[connector_id].unplug(UNPLUG_SOCKET)


def jam_lock(sim, connector_id=1):
    """The lock motor no longer moves: the lock stays where it is, its feedback says so."""
    sim.world.connectors[connector_id].lock.set = lambda locked: None


def lock_locked(sim, connector_id=1):
    return sim.world.connectors[connector_id].lock.locked


def contactor_ever_closed(sim, connector_id=1):
    return any(closed for _, closed in sim.world.connectors[connector_id].contactor.commands)

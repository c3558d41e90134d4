"""The whole agent under `kill -9` at random instants of charging sessions (DESIGN.md decision 6).

The agent runs as a real process, `evse sim --csms URL --id CRASH --state DIR --virtual
--scenario tests/scenarios/crash-sessions.scn` (three charging sessions back to back), against
a LocalCsms that lives in this test process (its own asyncio loop in a thread, 127.0.0.1),
which takes 0-12 ms to answer a transaction message (so round trips are long enough for kills
to land inside them). One full run first measures how long a run takes (T); then the agent
is SIGKILLed KILLS times (default 50) and restarted each time on the same --state folder
(journal, open_tx, boot counter, the simulated meter's register). All randomness is seeded:
- one kill in three is timed: a random real delay in [0.05 s, 0.95 T] after the launch, so
  kills land while Python starts, during boot and the journal's replay, and in sessions;
- one in three comes 0-15 ms after the CSMS received the n-th StartTransaction /
  StopTransaction / MeterValues of that run (inside the round trip: the CSMS may or may not
  have acted on it);
- one in three comes 0-3 ms after the CSMS sent the n-th answer to one of those (while the
  agent makes the answer durable).
After each kill, while the process is dead, the state folder is copied: its journal (pending
records) and open_tx are what was durable at that instant. A last run is allowed to finish.

Then the CSMS's records must show:
1. every StartTransaction the CSMS accepted has exactly one StopTransaction; the sessions a
   kill cut (open in open_tx at the kill, no Stop journaled) end with PowerLoss, every other
   one with Local; no Stop names a transaction the CSMS never started;
2. no duplicates: no two StartTransactions with the same (connectorId, idTag, meterStart,
   timestamp), no two StopTransactions for one transactionId, no MeterValues twice, among the
   messages the CSMS processed (= answered: LocalCsms answers as it handles; a CALL cut by
   the kill before it was handled is not processed, and its resending is only counted).
   At-least-once delivery has one unavoidable window: the CSMS processed a message and the
   kill came before the agent made the answer durable (journal D line), or before the answer
   even arrived. Such a duplicate is counted and printed, and must prove it was that window:
   the first copy is the last CALL the killed process ever sent (had it processed the answer,
   it would have sent its next message only after the D line was fsynced), the kill came at
   most DUPLICATE_WINDOW_MS after the CSMS answered (or before), and the copy came from a
   later run. A replayed StartTransaction gets a new transactionId: the first one is then
   orphaned (no Stop ever), which is counted and printed too;
3. energy is continuous: in CSMS order meterStart >= the previous meterStop; meterStop >=
   meterStart; Energy.Active.Import.Register in a transaction's MeterValues (and
   transactionData) is non-decreasing and within [meterStart, meterStop]; and no periodic
   MeterValues is missing (no gap over 1.5 sample intervals from Start to Stop);
4. every MeterValues with a transactionId names a transaction the CSMS started;
and no loss: every record pending in any post-kill journal reached the CSMS (same action and
payload, the right transactionId), except the Stop/MeterValues of a session whose Start was
never journaled (a kill between open_tx and the Start: nothing to attach them to); after the
final run the journal is empty and no transaction is open.

A failure names the kill, what the CSMS saw last before it, and the journal and open_tx the
dead process left. Knobs (environment): EVSE_CRASH_KILLS (default 50), EVSE_CRASH_SEED.
"""
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from agent.config import Config
from agent.journal import Journal
from hal.storage_fs import FileStorage
from simulator.csms import ConnectionEvent, LocalCsms

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO = os.path.join(ROOT, "tests", "scenarios", "crash-sessions.scn")
KILLS = int(os.environ.get("EVSE_CRASH_KILLS", "50"))
SEED = int(os.environ.get("EVSE_CRASH_SEED", "1961"))
CP_ID = "CRASH"
MIN_DELAY_S = 0.05
MAX_DELAY_SHARE = 0.95          # kills spread over [MIN_DELAY_S, this x a full run]
ANSWER_DELAY_MS = (0.0, 12.0)   # the CSMS takes this long (uniform) to answer a transaction
                                # message: round trips long enough for kills to land inside
DUPLICATE_WINDOW_MS = 20.0      # a duplicate's kill came at most this long after the answer
# Two kills in three are aimed at a transaction message: the n-th CALL of an action in that
# run, TRIGGER_DELAY_MS (uniform) after the CSMS received it (the kill lands inside the round
# trip: the CSMS may or may not act on it), or after the CSMS sent its answer (the kill lands
# while the agent makes the answer durable). If that frame never comes, the run goes on.
TRIGGER_DELAY_MS = {"CALL": (0.0, 15.0), "CALLRESULT": (0.0, 3.0)}
TRIGGERS = {"StartTransaction": 3, "StopTransaction": 3, "MeterValues": 12}   # action: max n
RUN_TIMEOUT_S = 60
TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues")
ENERGY = "Energy.Active.Import.Register"
SAMPLE_INTERVAL_S = Config().get("MeterValueSampleInterval")    # the test keeps the default


# ------------------------------------------------------------------------------ the CSMS

class CsmsThread:
    """A LocalCsms on its own asyncio loop in a thread. Every frame and connection event is
    tagged with the number of the connection it belongs to (connections never overlap here:
    a killed agent's socket is closed by the kernel long before its successor starts)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="csms", daemon=True)
        self.trail = []             # (connection number, Record | ConnectionEvent)
        self.connects = []          # (connection number, loop time)
        self._conn = 0
        self._trigger = None        # [action, n, seen, threading.Event, time]
        self.csms = None

    def __enter__(self):
        self.thread.start()

        async def start():
            return await LocalCsms(port=0).start()
        self.csms = self.run(start())
        self.csms.listeners.append(self._listen)
        for action in TX_ACTIONS:
            self.csms.overrides[action] = self._slow
        return self

    async def _slow(self, cp_id, payload):
        await asyncio.sleep(self.rng.uniform(*ANSWER_DELAY_MS) / 1000)
        return None                 # then the built-in answer

    def __exit__(self, *exc):
        try:
            if self.csms is not None:
                self.run(self.csms.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def arm(self, kind, action, n):
        """An Event set when the n-th `kind` frame ("CALL" received, "CALLRESULT" sent) of
        `action` has been recorded from now on; its time is then `trigger[4]`."""
        self._trigger = [(kind, action), n, 0, threading.Event(), None]
        return self._trigger

    def disarm(self):
        self._trigger = None

    def _listen(self, item):         # in the CSMS thread, synchronously
        if isinstance(item, ConnectionEvent) and item.event == "connected":
            self._conn += 1
            self.connects.append((self._conn, item.time))
        self.trail.append((self._conn, item))
        trigger = self._trigger
        if trigger is not None and not isinstance(item, ConnectionEvent) and \
                (item.kind, item.action) == trigger[0] and \
                item.direction == ("from_cp" if item.kind == "CALL" else "to_cp"):
            trigger[2] += 1
            if trigger[2] == trigger[1]:
                trigger[4] = item.time
                trigger[3].set()


# ------------------------------------------------------------------------------ the agent

class Run:
    def __init__(self, number, log_path):
        self.number = number
        self.log_path = log_path
        self.launch = None          # time.monotonic() (the CSMS loop's clock)
        self.end = None             # kill instant, or when it exited
        self.delay = None           # planned kill delay (s), None = let it finish
        self.aim = None             # (what, n, ms after the CSMS recorded it) if aimed
        self.killed = False
        self.returncode = None
        self.trail_len = 0          # len(csms trail) just after the kill
        self.pending = []           # journal records durable at the kill
        self.open_tx = {}           # open_tx durable at the kill
        self.recovered = 0          # torn/bad journal lines at the kill

    def label(self):
        if not self.killed:
            return "run %d (ran to the end)" % self.number
        if self.aim is not None:
            return ("run %d (killed %.3f s after launch, %.2f ms after the CSMS recorded %s "
                    "#%d)" % (self.number, self.end - self.launch, self.aim[2], self.aim[0],
                              self.aim[1]))
        return "run %d (killed %.3f s after launch)" % (self.number, self.end - self.launch)


def _launch(url, state, run):
    log = open(run.log_path, "wb")
    run.launch = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "sim", "--csms", url, "--id", CP_ID,
         "--state", state, "--virtual", "--scenario", SCENARIO],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return process


def _finish(process, run):
    try:
        run.returncode = process.wait(RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    run.end = time.monotonic()


def _snapshot(state, folder, run):
    """What the dead agent left durable: a copy of its state, read back (loading a journal may
    rewrite the file, so it reads the copy)."""
    shutil.copytree(state, folder)
    journal = Journal(FileStorage(folder))
    run.recovered = journal.recovered
    run.pending = [record for _, record in journal.pending()]
    raw = FileStorage(folder).read("open_tx")
    run.open_tx = json.loads(raw) if raw else {}


# ------------------------------------------------------------------------------ analysis

class Call:
    """A CALL the CSMS received, with the answer it gave (if any)."""
    __slots__ = ("order", "conn", "run", "rec", "answer", "last_of_run")

    def __init__(self, order, conn, rec):
        self.order, self.conn, self.rec = order, conn, rec
        self.run = None
        self.answer = None
        self.last_of_run = False

    @property
    def action(self):
        return self.rec.action

    @property
    def payload(self):
        return self.rec.payload


def _processed(call):
    """The CSMS acted on it: LocalCsms answers a CALL as it handles it, and a handler cut by
    the end of the connection neither acts nor answers."""
    return call.answer is not None and call.answer.kind == "CALLRESULT"


def _start_key(payload):
    return (payload.get("connectorId"), payload.get("idTag"), payload.get("meterStart"),
            payload.get("timestamp"))


def _canon(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _without_tid(payload):
    return {k: v for k, v in payload.items() if k != "transactionId"}


def _when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _energies(meter_values):
    out = []
    for value in meter_values or ():
        for sampled in value.get("sampledValue", ()):
            if sampled.get("measurand", ENERGY) == ENERGY and \
                    sampled.get("unit", "Wh") == "Wh":
                out.append(float(sampled["value"]))
    return out


class Analysis:
    def __init__(self, trail, runs):
        self.runs = runs
        self.problems = []
        self.stats = {}
        self.duplicates = []        # (action, copies, explanation lines)
        self.orphans = []           # transactionIds orphaned by a replayed Start
        self.calls = []
        self._collect(trail)

    def problem(self, text, run=None):
        self.problems.append((text, run))

    # -- building ------------------------------------------------------------------------
    def _run_of_time(self, t):
        """The run a connection that opened at t belongs to: the last one launched before
        (runs never overlap; the CSMS may finish a handshake just after the kill)."""
        found = None
        for run in self.runs:
            if run.launch <= t:
                found = run
        return found

    def _collect(self, trail):
        conn_run = {}
        open_calls = {}
        for order, (conn, item) in enumerate(trail):
            if isinstance(item, ConnectionEvent):
                if item.event == "connected" and item.cp_id == CP_ID:
                    conn_run[conn] = self._run_of_time(item.time)
                    if conn_run[conn] is None:
                        self.problem("connection %d at %.3f belongs to no run" % (conn, item.time))
                continue
            if item.cp_id != CP_ID:
                continue
            if item.direction == "from_cp" and item.kind == "CALL":
                call = Call(order, conn, item)
                call.run = conn_run.get(conn)
                self.calls.append(call)
                open_calls[(conn, item.unique_id)] = call
            elif item.direction == "to_cp" and item.kind in ("CALLRESULT", "CALLERROR"):
                call = open_calls.pop((conn, item.unique_id), None)
                if call is not None:
                    call.answer = item
        last = {}
        for call in self.calls:
            last[call.conn] = call
        for call in last.values():
            call.last_of_run = True
        self.tx_calls = [c for c in self.calls if c.action in TX_ACTIONS]
        for call in self.tx_calls:
            if call.answer is None and not (call.last_of_run and call.run is not None
                                            and call.run.killed):
                self.problem("%s never answered (and not cut by a kill): %s"
                             % (call.action, call.rec.line()), call.run)
            elif call.answer is not None and call.answer.kind == "CALLERROR":
                self.problem("%s answered with CALLERROR %s" % (call.rec.line(),
                                                                call.answer.payload), call.run)

    # -- checks --------------------------------------------------------------------------
    def check(self):
        self._duplicates()
        self._transactions()
        self._reasons()
        self._energy()
        self._sampling()
        self._meter_values_known()
        self._nothing_lost()
        return self

    def _explain_pair(self, first, second):
        """Why the CSMS processed `second` after `first` (both answered): a list of notes if
        it is the unavoidable window, else the problem (a str)."""
        run = first.run
        if run is None or not run.killed:
            return "the first copy was sent by %s, which was not killed" % (
                run.label() if run else "no known run")
        if second.run is None or second.run.number <= run.number:
            return "the copy came from the same run (%s)" % run.label()
        if not first.last_of_run:
            return ("%s sent more CALLs after the first copy: it had processed the answer, "
                    "so it must have made it durable" % run.label())
        after_receipt = (run.end - first.rec.time) * 1000
        after_answer = (run.end - first.answer.time) * 1000
        if after_answer > DUPLICATE_WINDOW_MS:
            return "the kill came %.2f ms after the CSMS answered the first copy (> %g ms)" % (
                after_answer, DUPLICATE_WINDOW_MS)
        return ["kill %.2f ms after the CSMS received it, %.2f ms after it answered" % (
            after_receipt, after_answer)]

    def _duplicates(self):
        """Copies the CSMS processed (_processed) are deliveries; an unanswered copy was cut
        by a kill (checked in _collect) and its resending is no duplicate, only counted."""
        groups = {}
        for call in self.tx_calls:
            p = call.payload
            if call.action == "StartTransaction":
                key = (call.action, _start_key(p))
            elif call.action == "StopTransaction":
                key = (call.action, p.get("transactionId"))
            else:
                key = (call.action, p.get("transactionId"), _canon(p.get("meterValue")))
            groups.setdefault(key, []).append(call)
        self.start_groups = {}
        counts = {a: 0 for a in TX_ACTIONS}
        explained = {a: 0 for a in TX_ACTIONS}
        resent = {a: 0 for a in TX_ACTIONS}
        for key, copies in groups.items():
            if key[0] == "StartTransaction":
                self.start_groups[key[1]] = copies
            resent[key[0]] += len(copies) - 1
            copies = [c for c in copies if _processed(c)]
            if len(copies) < 2:
                continue
            resent[key[0]] -= len(copies) - 1
            counts[key[0]] += len(copies) - 1
            notes = []
            ok = True
            for first, second in zip(copies, copies[1:]):
                why = self._explain_pair(first, second)
                if isinstance(why, str):
                    ok = False
                    self.problem("DUPLICATE %s: %s\n      first:  %s  [%s]\n      second: %s "
                                 " [%s]" % (key[0], why, first.rec.line(),
                                            first.run.label() if first.run else "?",
                                            second.rec.line(),
                                            second.run.label() if second.run else "?"),
                                 first.run)
                else:
                    notes.extend(why)
            if ok:
                explained[key[0]] += len(copies) - 1
            self.duplicates.append((key[0], copies, notes, ok))
        self.stats["duplicates"] = counts
        self.stats["duplicates_in_window"] = explained
        self.stats["resent_unanswered"] = resent
        self.stats["round_trips_cut"] = sum(1 for c in self.tx_calls if c.answer is None)

    def _transactions(self):
        """Accepted Starts (one per group of copies: the last accepted copy; earlier accepted
        copies are orphans) and their Stops."""
        self.tx = {}                # transactionId -> start payload
        self.tid_of_start = {}      # start key -> transactionId that counts
        for key, copies in self.start_groups.items():
            accepted = [c for c in copies if _processed(c)]
            if not accepted:
                self.problem("StartTransaction never accepted: %s" % copies[-1].rec.line(),
                             copies[-1].run)
                continue
            for c in accepted:
                self.tx[c.answer.payload["transactionId"]] = c.payload
            self.tid_of_start[key] = accepted[-1].answer.payload["transactionId"]
            # the local CSMS recognises a replayed Start and answers with the same id: a copy
            # with another id would be a transaction left open at the CSMS for ever
            last_tid = accepted[-1].answer.payload["transactionId"]
            self.orphans.extend(c.answer.payload["transactionId"] for c in accepted[:-1]
                                if c.answer.payload["transactionId"] != last_tid)
        self.stops = {}             # transactionId -> stop payload (the first one processed)
        last_seen = {}              # transactionId -> the last CALL about it
        for call in self.tx_calls:
            tid = call.payload.get("transactionId")
            if call.action == "StartTransaction" and _processed(call):
                tid = call.answer.payload.get("transactionId")
            if tid is not None:
                last_seen[tid] = call
            if call.action != "StopTransaction":
                continue
            if tid not in self.tx:
                self.problem("StopTransaction for a transaction the CSMS never started: %s"
                             % call.rec.line(), call.run)
            if _processed(call):
                self.stops.setdefault(tid, call.payload)
        for tid in sorted(self.tx):
            if tid in self.orphans:
                if tid in self.stops:
                    self.problem("orphaned transaction %d (its Start was replayed) was stopped"
                                 % tid)
            elif tid not in self.stops:
                last = last_seen.get(tid)
                self.problem("LOST: transaction %d has no StopTransaction (start %s); the last "
                             "CALL about it: %s [%s]" % (
                                 tid, _canon(self.tx[tid]), last.rec.line()[:160],
                                 last.run.label() if last.run else "?"),
                             last.run)
        self.stats["transactions"] = len(self.tx)
        self.stats["orphans"] = len(self.orphans)

    def _tid_for(self, run, key):
        """The CSMS transactionId of the agent's transaction `key` as run's snapshot shows it
        (None if its Start was never journaled)."""
        for record in run.pending:
            if record.get("tx") == key and record["action"] == "StartTransaction":
                return self.tid_of_start.get(_start_key(record["payload"]), "unknown start")
        for record in run.pending:
            if record.get("tx") == key and record.get("transaction_id") is not None:
                return record["transaction_id"]
        entry = run.open_tx.get(key)
        if entry is not None and entry.get("transaction_id") is not None:
            return entry["transaction_id"]
        return None

    def _reasons(self):
        expected = {}               # transactionId -> (reason, run)
        cut = never_started = stop_journaled = 0
        for run in self.runs:
            if not run.killed:
                continue
            for key in sorted(run.open_tx):
                tid = self._tid_for(run, key)
                stop = [r for r in run.pending if r.get("tx") == key and
                        r["action"] == "StopTransaction"]
                reason = stop[0]["payload"]["reason"] if stop else "PowerLoss"
                if tid is None:
                    never_started += 1
                    continue
                if tid == "unknown start":
                    self.problem("LOST: %s left a StartTransaction for %s pending that the "
                                 "CSMS never accepted" % (run.label(), key), run)
                    continue
                if stop:
                    stop_journaled += 1
                else:
                    cut += 1
                if tid in expected and expected[tid][0] != reason:
                    self.problem("transaction %d: %s expects reason %s, %s expects %s" % (
                        tid, expected[tid][1].label(), expected[tid][0], run.label(), reason),
                        run)
                expected.setdefault(tid, (reason, run))
        counts = {}
        for tid, stop in self.stops.items():
            if tid not in self.tx or tid in self.orphans:
                continue
            reason = stop.get("reason")
            counts[reason] = counts.get(reason, 0) + 1
            want, run = expected.get(tid, ("Local", None))
            if reason != want:
                self.problem("transaction %d ended with reason %s, expected %s (%s)" % (
                    tid, reason, want, run.label() if run else "open at no kill"), run)
        self.stats["stop_reasons"] = counts
        self.stats["kills_with_open_session"] = cut
        self.stats["kills_after_stop_journaled"] = stop_journaled
        self.stats["sessions_cut"] = sum(1 for r, _ in expected.values() if r == "PowerLoss")
        self.stats["kills_before_start_journaled"] = never_started

    def _energy(self):
        self.mv = {}                # transactionId -> [energy values], in CSMS order
        for call in self.tx_calls:
            if call.action == "MeterValues" and "transactionId" in call.payload:
                self.mv.setdefault(call.payload["transactionId"], []).extend(
                    _energies(call.payload.get("meterValue")))
        previous = None             # (transactionId, meterStop)
        for tid in sorted(self.tx):
            start = self.tx[tid]["meterStart"]
            stop = self.stops.get(tid, {}).get("meterStop")
            if previous is not None and start < previous[1]:
                self.problem("ENERGY: transaction %d meterStart %s < meterStop %s of "
                             "transaction %d" % (tid, start, previous[1], previous[0]))
            values = self.mv.get(tid, []) + _energies(
                self.stops.get(tid, {}).get("transactionData"))
            for a, b in zip(values, values[1:]):
                if b < a:
                    self.problem("ENERGY: transaction %d meter values go back: %s then %s"
                                 % (tid, a, b))
            for v in values:
                if v < start or (stop is not None and v > stop):
                    self.problem("ENERGY: transaction %d meter value %s outside [%s, %s]"
                                 % (tid, v, start, stop))
            if stop is not None:
                if stop < start:
                    self.problem("ENERGY: transaction %d meterStop %s < meterStart %s"
                                 % (tid, stop, start))
                previous = (tid, stop)

    def _sampling(self):
        """No periodic MeterValues missing: from Start to Stop, one every sample interval (a
        gap of at most 1.5 intervals; a kill may take the one being journaled)."""
        periodic = {}
        for call in self.tx_calls:
            if call.action == "MeterValues" and "transactionId" in call.payload and \
                    _processed(call):
                for value in call.payload.get("meterValue") or ():
                    if any(v.get("context") == "Sample.Periodic" for v in
                           value.get("sampledValue", ())):
                        periodic.setdefault(call.payload["transactionId"], set()).add(
                            _when(value["timestamp"]))
        limit = 1.5 * SAMPLE_INTERVAL_S
        for tid in sorted(self.tx):
            stop = self.stops.get(tid)
            if stop is None or not SAMPLE_INTERVAL_S:
                continue
            begin, end = _when(self.tx[tid]["timestamp"]), _when(stop["timestamp"])
            points = sorted(periodic.get(tid, ()))
            if points and (points[0] < begin or points[-1] > end):
                self.problem("MeterValues of transaction %d outside its Start..Stop" % tid)
                continue
            points = [begin] + points + [end]
            gaps = [(a, b) for a, b in zip(points, points[1:]) if b - a > limit]
            if gaps:
                self.problem("LOST: transaction %d has no periodic MeterValues for %.0f s "
                             "(interval %d s), %d gap(s)" % (
                                 tid, max(b - a for a, b in gaps), SAMPLE_INTERVAL_S,
                                 len(gaps)))

    def _meter_values_known(self):
        for call in self.tx_calls:
            if call.action == "MeterValues" and "transactionId" in call.payload and \
                    call.payload["transactionId"] not in self.tx:
                self.problem("MeterValues for a transaction the CSMS never started: %s"
                             % call.rec.line(), call.run)

    def _nothing_lost(self):
        """Every record durable in a post-kill journal reached the CSMS (was processed)."""
        delivered = {}
        for call in [c for c in self.tx_calls if _processed(c)]:
            delivered.setdefault((call.action, _canon(_without_tid(call.payload))), []).append(
                call.payload.get("transactionId"))
        checked = dropped = 0
        for run in self.runs:
            if not run.killed:
                continue
            starts = set(r["tx"] for r in run.pending if r["action"] == "StartTransaction")
            for record in run.pending:
                action, payload = record["action"], record["payload"]
                got = delivered.get((action, _canon(payload)))
                if action == "StartTransaction":
                    checked += 1
                    if not got:
                        self.problem("LOST: %s held StartTransaction %s; the CSMS never got it"
                                     % (run.label(), _canon(payload)), run)
                    continue
                tid = record.get("transaction_id")
                if tid is None and record["tx"] in starts:
                    tid = self.tid_of_start.get(_start_key(
                        [r for r in run.pending if r["tx"] == record["tx"] and
                         r["action"] == "StartTransaction"][0]["payload"]))
                if tid is None:
                    dropped += 1    # its Start was never journaled: nothing to attach it to
                    continue
                checked += 1
                if not got:
                    self.problem("LOST: %s held %s of %s (transaction %s) %s; the CSMS never "
                                 "got it" % (run.label(), action, record["tx"], tid,
                                             _canon(payload)), run)
                elif tid not in got and tid not in self.orphans:
                    self.problem("%s held %s for transaction %s, the CSMS got it for %s: %s"
                                 % (run.label(), action, tid, got, _canon(payload)), run)
        self.stats["journal_records_checked"] = checked
        self.stats["journal_records_without_start"] = dropped


def _describe(run, trail, before=8):
    """The failing sequence: what the CSMS saw last before the kill, what was durable."""
    out = ["    %s, launched at %.3f, ended at %.3f" % (run.label(), run.launch, run.end)]
    recent = [item for _, item in trail[:run.trail_len] if item.cp_id == CP_ID][-before:]
    out.append("    last CSMS records before the kill:")
    out.extend("      " + item.line() for item in recent)
    out.append("    open_tx at the kill: %s" % _canon(run.open_tx))
    out.append("    journal at the kill (%d pending, %d torn lines dropped):"
               % (len(run.pending), run.recovered))
    for record in run.pending:
        out.append("      %s tx=%s transaction_id=%s %s" % (
            record["action"], record.get("tx"), record.get("transaction_id"),
            _canon(record["payload"])[:160]))
    return "\n".join(out)


# ------------------------------------------------------------------------------ the test

def test_kill9_never_loses_or_duplicates_transaction_messages(tmp_path):
    started = time.monotonic()
    rng = random.Random(SEED)
    state = str(tmp_path / "state")
    runs = []
    with CsmsThread(SEED + 1) as server:
        url = server.csms.url
        process = None
        try:
            # calibration: one full run, on the same state (its sessions count too)
            run = Run(0, str(tmp_path / "run-00.log"))
            process = _launch(url, state, run)
            _finish(process, run)
            runs.append(run)
            assert run.returncode == 0, open(run.log_path).read()[-3000:]
            full = run.end - run.launch
            kills = finished = 0
            while kills < KILLS:
                assert len(runs) < KILLS * 2, "too many runs ended before their kill"
                run = Run(len(runs), str(tmp_path / ("run-%02d.log" % len(runs))))
                run.delay = rng.uniform(MIN_DELAY_S, full * MAX_DELAY_SHARE)
                trigger = None
                if kills % 3:
                    kind = "CALL" if kills % 3 == 1 else "CALLRESULT"
                    action = rng.choice(sorted(TRIGGERS))
                    n = rng.randint(1, TRIGGERS[action])
                    extra = rng.uniform(*TRIGGER_DELAY_MS[kind]) / 1000
                    trigger = server.arm(kind, action, n)
                process = _launch(url, state, run)
                if trigger is not None:
                    # aimed: wait for that CALL as long as the run lasts
                    while not trigger[3].wait(0.005) and process.poll() is None:
                        pass
                    if trigger[3].is_set():
                        time.sleep(max(0.0, trigger[4] + extra - time.monotonic()))
                else:
                    time.sleep(max(0.0, run.launch + run.delay - time.monotonic()))
                server.disarm()
                if process.poll() is None:
                    run.end = time.monotonic()
                    os.kill(process.pid, signal.SIGKILL)
                    run.killed = True
                    kills += 1
                    if trigger is not None and trigger[3].is_set():
                        run.aim = (trigger[0][1] + (" answer" if trigger[0][0] == "CALLRESULT"
                                                    else ""),
                                   trigger[1], (run.end - trigger[4]) * 1000)
                process.wait(RUN_TIMEOUT_S)
                run.returncode = process.returncode
                if not run.killed:
                    run.end = time.monotonic()
                    finished += 1
                    assert run.returncode == 0, open(run.log_path).read()[-3000:]
                runs.append(run)
                time.sleep(0.02)            # let the CSMS see the socket close
                run.trail_len = len(server.trail)
                if run.killed:
                    _snapshot(state, str(tmp_path / ("snap-%02d" % run.number)), run)
            # the last run goes to the end: it replays what is left and closes every session
            run = Run(len(runs), str(tmp_path / ("run-%02d.log" % len(runs))))
            process = _launch(url, state, run)
            _finish(process, run)
            runs.append(run)
            assert run.returncode == 0, open(run.log_path).read()[-3000:]
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        time.sleep(0.1)
        trail = list(server.trail)
    final = FileStorage(state)
    left = Journal(final).pending()
    open_left = json.loads(final.read("open_tx") or b"{}")

    analysis = Analysis(trail, runs).check()
    if left:
        analysis.problem("LOST: the journal still holds %d records after the final run: %s"
                         % (len(left), [_canon(r) for _, r in left][:5]))
    if open_left:
        analysis.problem("a transaction is still open after the final run: %s"
                         % _canon(open_left))
    stats = analysis.stats
    elapsed = time.monotonic() - started
    killed = [r for r in runs if r.killed]
    in_flight = sum(1 for c in analysis.tx_calls
                    if c.last_of_run and c.run is not None and c.run.killed and
                    (c.answer is None or (c.run.end - c.answer.time) < 0.05))

    print()
    aimed = [r for r in killed if r.aim is not None]
    timed = [r.end - r.launch for r in killed if r.aim is None]
    print("kill -9 crash test: seed %d, full run %.2f s, %d kills, %d runs ended before their "
          "kill, %d runs in all" % (SEED, full, len(killed), finished, len(runs)))
    print("  %d timed kills, %.2f-%.2f s after launch" % (
        len(timed), min(timed, default=0), max(timed, default=0)))
    for kind in ("", " answer"):
        these = [r for r in aimed if r.aim[0].endswith(kind) and
                 (kind or not r.aim[0].endswith(" answer"))]
        print("  %d kills aimed at a transaction %s (%s), %.1f-%.1f ms after it" % (
            len(these), "CALL the CSMS received" if not kind else "answer the CSMS sent",
            ", ".join("%s %d" % (a, sum(1 for r in these if r.aim[0] == a + kind))
                      for a in sorted(TRIGGERS)),
            min((r.aim[2] for r in these), default=0),
            max((r.aim[2] for r in these), default=0)))
    connected = set(c.run.number for c in analysis.calls if c.run is not None)
    print("  kills before the agent reached the CSMS: %d; with a session open: %d (sessions "
          "cut: %d); with its Stop journaled, the session still in open_tx: %d; before its "
          "Start was journaled: %d; with a transaction message in flight (or answered "
          "< 50 ms before): %d; torn journal lines found: %d"
          % (sum(1 for r in killed if r.number not in connected),
             stats["kills_with_open_session"], stats["sessions_cut"],
             stats["kills_after_stop_journaled"], stats["kills_before_start_journaled"],
             in_flight, sum(r.recovered for r in killed)))
    print("  CSMS: %d transactions, stop reasons %s, %d StartTransaction / %d "
          "StopTransaction / %d MeterValues CALLs"
          % (stats["transactions"], stats["stop_reasons"],
             *[sum(1 for c in analysis.tx_calls if c.action == a) for a in TX_ACTIONS]))
    print("  transaction round trips cut by a kill (CSMS had not answered): %d; resent "
          "afterwards: %s" % (stats["round_trips_cut"], stats["resent_unanswered"]))
    print("  duplicates %s (in the kill window: %s); orphaned by a replayed Start: %s"
          % (stats["duplicates"], stats["duplicates_in_window"], analysis.orphans or "none"))
    for action, copies, notes, ok in analysis.duplicates:
        print("    %s %s x%d: %s" % ("window" if ok else "BAD", action, len(copies),
                                     "; ".join(notes) or "-"))
        for copy in copies:
            print("      %s  [%s]" % (copy.rec.line()[:200],
                                      copy.run.label() if copy.run else "?"))
            if copy.run is not None and copy.run.killed and copy is not copies[-1]:
                print("        durable at that kill: journal %s; open_tx %s" % (
                    ", ".join("%s(tx %s, transactionId %s)" % (
                        r["action"], r.get("tx"), r.get("transaction_id"))
                        for r in copy.run.pending) or "empty",
                    _canon(copy.run.open_tx)))
    print("  journal records durable at kills, checked delivered: %d (of sessions never "
          "started: %d)" % (stats["journal_records_checked"],
                            stats["journal_records_without_start"]))
    print("  runtime %.1f s" % elapsed)

    if analysis.problems:
        report = []
        for text, run in analysis.problems:
            report.append("- " + text)
            if run is not None and run.killed:
                report.append(_describe(run, trail))
        pytest.fail("%d problem(s):\n%s" % (len(analysis.problems), "\n".join(report)),
                    pytrace=False)
    assert len(killed) >= KILLS
    assert stats["stop_reasons"].get("PowerLoss", 0) >= 1, "no kill cut a session"
    # a replayed Start (kill between the CSMS's answer and the agent's fsync) is recognised
    # by the CSMS: no transaction is ever left open at the CSMS
    assert stats["orphans"] == 0, analysis.orphans

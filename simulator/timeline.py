"""The readable timeline of a simulated session (and its JSON form for scripts).

One row per moment something happened on a connector: the events of one agent step are
merged, and every row shows the state after them: pilot, PWM, contactor, current, energy,
session. Scenario steps and expectation results are rows of their own.
"""
import os
import sys
import time

from agent import evse as evse_mod
from agent.describe import describe, describe_ocpp
from agent.timeutil import iso_utc

CHECKS = ("expect", "wait_for")
HEADER = "%-12s  %-3s %-6s %-6s %7s %9s  %-14s  %s" % (
    "time", "cp", "pwm", "relay", "I/phase", "energy", "session", "what happened")


class Timeline:
    def __init__(self, out=None, realtime=False, quiet=False):
        self.out = out if out is not None else sys.stdout
        self.realtime = realtime
        self.quiet = quiet
        self.rows = []
        self.sim = None
        self._pending = {}
        self._started_ms = 0                # the loop's clock when the run started
        self._started_unix_ms = int(time.time() * 1000)

    def attach(self, simulation):
        self.sim = simulation
        simulation.agent.hooks.append(self.flush)
        self._started_unix_ms = int(time.time() * 1000)
        # in real time the loop clock counts from the host's boot; virtual time from 0
        self._started_ms = simulation.world.now_ms() if self.realtime else 0
        self._print(HEADER)

    def _moment(self, now):
        """A row's time keys for the loop time `now`: `time_ms` since the run started and,
        in real time, `utc` (the form OCPP timestamps take)."""
        moment = {"time_ms": now - self._started_ms}
        if self.realtime:
            moment["utc"] = iso_utc(self._started_unix_ms + moment["time_ms"])
        return moment

    def _now(self):
        # a note can come before attach (a meter served on Modbus): the run starts then
        sim = self.sim
        return sim.now_ms() if sim is not None and sim.world else self._started_ms

    def stamp(self, ms):
        """How the timeline prints `ms` since the run started: the time of day in UTC in
        real time, hh:mm:ss.mmm of virtual time otherwise."""
        if self.realtime:
            return iso_utc(self._started_unix_ms + ms)[11:23]
        seconds, millis = divmod(ms, 1000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return "%02d:%02d:%02d.%03d" % (hours, minutes, seconds, millis)

    def _print(self, line):
        if not self.quiet:
            print(line, file=self.out)

    def snapshot(self, connector_id):
        sim = self.sim
        evse = sim.evse(connector_id)
        connector = sim.world.connectors[connector_id]
        return {
            "connector": connector_id,
            "cp_state": evse.cp_state,
            "pwm_permille": evse.duty if evse.pilot_mode == evse_mod.PWM else None,
            "contactor": "closed" if connector.contactor.closed else "open",
            "ev_current_ma": connector.ev_current_ma(),
            "energy_wh": evse.session_energy_wh(),
            "session": evse.state,
            "fault": evse.faults.first(),
        }

    def _row(self, time_ms, connector_id, texts):
        row = self.snapshot(connector_id)
        row.update(self._moment(time_ms))
        row["events"] = texts
        self.rows.append(row)
        pwm = row["pwm_permille"]
        pwm_text = "-" if pwm is None else "%d.%d%%" % (pwm // 10, pwm % 10)
        many = len(self.sim.world.connectors) > 1
        self._print("%-12s  %-3s %-6s %-6s %6.1fA %7d Wh  %-14s  %s%s" % (
            self.stamp(row["time_ms"]), row["cp_state"], pwm_text, row["contactor"],
            row["ev_current_ma"] / 1000, row["energy_wh"], row["session"],
            "[%d] " % connector_id if many else "", "; ".join(texts)))

    # -------------------------------------------------------------- feeds
    def agent_event(self, evse, event):
        connector_id = evse.connector_id if evse is not None else event[4] or 1
        key = (event[0], connector_id)
        self._pending.setdefault(key, []).append(describe(event))

    def flush(self):
        pending, self._pending = self._pending, {}
        for (time_ms, connector_id) in sorted(pending):
            self._row(time_ms, connector_id, pending[(time_ms, connector_id)])

    def step(self, step):
        """An action step gets a row; a check (expect, wait_for) only its verdict row."""
        self.flush()
        if step.verb in CHECKS:
            return
        row = self._moment(self.sim.now_ms())
        row.update(step=step.text, line=step.line)
        self.rows.append(row)
        self._print("%-12s  > %s" % (self.stamp(row["time_ms"]), step.text))

    def expectation(self, expectation):
        step = expectation.step
        row = self._moment(expectation.time_ms)
        row.update(expect=step.text, line=step.line, held=expectation.held,
                   actual=expectation.actual)
        self.rows.append(row)
        self.flush()
        verdict = "ok  " if expectation.held else "FAIL"
        detail = "" if expectation.held else "  (actual: %s)" % (expectation.actual,)
        self._print("%-12s  %s %s:%d %s%s" % (
            self.stamp(row["time_ms"]), verdict, os.path.basename(step.file), step.line,
            step.text, detail))

    def note(self, text):
        """A line about the simulation itself (connection, reboot)."""
        self.flush()
        row = self._moment(self._now())
        row["note"] = text
        self.rows.append(row)
        self._print("%-12s  ~ %s" % (self.stamp(row["time_ms"]), text))

    def ocpp_event(self, now, event):
        """One OCPP message (an RPC event): -> to the CSMS, <- from it."""
        kind = event[0]
        if kind in ("sent", "received"):
            message_type, action, payload = event[1], event[2], event[3]
            row = self._moment(now)
            row.update(ocpp=kind, message_type=message_type, action=action, payload=payload)
            self.rows.append(row)
            self.flush()
            self._print("%-12s  %s" % (self.stamp(row["time_ms"]), describe_ocpp(event)))
        else:
            self.note(describe_ocpp(event))

    def summary(self, expectations):
        self.flush()
        failed = [e for e in expectations if not e.held]
        self._print("%d expectations: %d held, %d failed" % (
            len(expectations), len(expectations) - len(failed), len(failed)))

"""Times in the timeline rows `evse sim --json` prints (simulator/timeline.py).

`time_ms` is the milliseconds since the run started, in virtual and in real time alike; a
real-time run adds `utc`, the wall-clock time in the form OCPP timestamps take.
"""
import json
import os
import re
import subprocess
import sys
import time

from agent.timeutil import parse_iso

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARGE_BRIEFLY = """plug
swipe 04A1B2C3
ev_ready
wait_for contactor == closed timeout=3s
wait 1s
expect contactor == closed
"""


def sim_json(tmp_path, scenario, *options):
    path = tmp_path / "run.scn"
    path.write_text(scenario)
    started_ms = int(time.time() * 1000)
    result = subprocess.run([sys.executable, "-m", "tools.cli", "sim", "--json", "--scenario",
                             str(path), *options], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    ended_ms = int(time.time() * 1000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return json.loads(result.stdout)["timeline"], started_ms, ended_ms


def test_realtime_rows_count_from_the_run_start_and_say_utc(tmp_path):
    """The user's report: in real time every row's time_ms was the host's monotonic clock
    (e.g. 26733833), neither time since the start nor UTC."""
    rows, started_ms, ended_ms = sim_json(tmp_path, CHARGE_BRIEFLY, "--realtime")
    times = [row["time_ms"] for row in rows]
    assert times == sorted(times)
    assert 0 <= times[0] < 1000
    assert 1500 <= times[-1] <= ended_ms - started_ms     # the EV's 500 ms, then 1 s
    closed = next(row for row in rows if row.get("expect", "").startswith("wait_for"))
    assert 500 <= closed["time_ms"] <= 3000
    # utc is the wall clock of the same moment: one offset for every row, inside the run
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["utc"])
               for row in rows)
    run_started = {parse_iso(row["utc"]) - row["time_ms"] for row in rows}
    assert len(run_started) == 1
    assert started_ms <= run_started.pop() <= ended_ms


def test_virtual_rows_keep_virtual_milliseconds_without_utc(tmp_path):
    rows, _, _ = sim_json(tmp_path, CHARGE_BRIEFLY + "wait 1h\nexpect energy > 1kWh\n")
    assert not any("utc" in row for row in rows)
    assert rows[0]["time_ms"] == 0
    (expect,) = [row for row in rows if row.get("expect") == "expect energy > 1kWh"]
    assert 3_601_000 <= expect["time_ms"] < 3_605_000    # virtual, not the host's clock


def test_realtime_run_with_a_modbus_meter_board(tmp_path):
    """The note that a meter is served on Modbus comes before the timeline is attached to
    the run: in real time it crashed the run (AttributeError in Timeline.stamp)."""
    with open(os.path.join(ROOT, "boards", "sim.toml")) as file:
        board = file.read()
    board_path = tmp_path / "sdm630.toml"
    board_path.write_text(re.sub(r'(?m)^model = "sim".*$', 'model = "sdm630"', board))
    rows, started_ms, ended_ms = sim_json(tmp_path, CHARGE_BRIEFLY, "--realtime",
                                          "--board", str(board_path))
    served = rows[0]
    assert served["note"].startswith("meter sdm630 served on Modbus TCP")
    assert served["time_ms"] == 0
    assert started_ms <= parse_iso(served["utc"]) <= ended_ms
    assert [row["time_ms"] for row in rows] == sorted(row["time_ms"] for row in rows)

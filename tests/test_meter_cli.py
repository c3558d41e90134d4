"""`evse meter` (tools/meter_cli.py) against simulated meters (simulator/meter_server.py) on
Modbus/TCP at 127.0.0.1 and Modbus RTU on a pty pair. The meter server runs in its own
thread and event loop, as a separate device would; the command runs as `main(argv)`."""
import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from hal.interfaces import MeterSample
from hal.meter_profiles import PROFILES
from simulator.meter_server import SimulatedMeter, start_rtu, start_tcp
from tools import meter_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN_KEYS = {"energy_import_wh", "energy_export_wh", "power_w", "voltage_v", "current_a",
               "frequency_hz"}
READING = dict(energy_import_wh=1234567, energy_export_wh=4321, power_w=7245,
               power_w_phases=(3680, 3565, 0), current_ma=(16012, 15990, 0),
               voltage_dv=(2301, 2302, 2299), frequency_mhz=50010, power_factor_permille=987)


def fixed(**values):
    return lambda: MeterSample(**values)


class Served:
    """Simulated meters served from a thread of their own until stop()."""

    def __init__(self, kind, meters, **options):
        self.kind, self.meters, self.options = kind, meters, options
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        start = start_tcp if self.kind == "tcp" else start_rtu
        self.server = self.loop.run_until_complete(start(self.meters, **self.options))
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def link(self):
        if self.kind == "tcp":
            return ["--tcp", "127.0.0.1:%d" % self.server.port]
        return ["--serial", self.server.client_path]


def served(kind, *meters, **options):
    if kind == "rtu":
        options.setdefault("pace", False)
    return Served(kind, list(meters), **options)


def evse_meter(capsys, *argv):
    code = meter_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------- read

@pytest.mark.parametrize("kind", ("tcp", "rtu"))
def test_read_json_has_the_design_keys(capsys, kind):
    meter = SimulatedMeter("sdm630", unit_id=5, source=fixed(**READING))
    with served(kind, meter) as line:
        code, out, err = evse_meter(capsys, "read", "--model", "sdm630", *line.link(),
                                    "--id", "5", "--json")
    assert (code, err) == (0, "")
    reading = json.loads(out)
    assert DESIGN_KEYS <= set(reading)
    assert {k: reading[k] for k in DESIGN_KEYS} == {
        "energy_import_wh": 1234567, "energy_export_wh": 4321, "power_w": 7245,
        "voltage_v": [230.1, 230.2, 229.9], "current_a": [16.012, 15.99, 0.0],
        "frequency_hz": 50.01}
    assert isinstance(reading["energy_import_wh"], int)
    assert all(isinstance(v, float) for v in reading["voltage_v"] + reading["current_a"])
    assert reading["power_w_phases"] == [3680, 3565, 0]
    assert reading["power_factor"] == 0.987
    assert (reading["model"], reading["id"]) == ("sdm630", 5)


def test_read_json_null_where_the_meter_has_no_value(capsys):
    missing = dict(READING, energy_export_wh=None, frequency_mhz=None,
                   voltage_dv=(2301, None, None))
    meters = [SimulatedMeter("sdm630", unit_id=1, source=fixed(**missing))]
    if "sdm72d-m" in PROFILES:          # power and energy only: no volts, amps, hertz
        meters.append(SimulatedMeter("sdm72d-m", unit_id=2, source=fixed(**READING)))
    with served("tcp", *meters) as line:
        code, out, _ = evse_meter(capsys, "read", "--model", "sdm630", *line.link(), "--json")
        assert code == 0
        reading = json.loads(out)
        assert reading["energy_export_wh"] is None and reading["frequency_hz"] is None
        assert reading["voltage_v"] == [230.1, None, None]
        if len(meters) == 2:
            code, out, _ = evse_meter(capsys, "read", "--model", "sdm72d-m", *line.link(),
                                      "--id", "2", "--json")
            assert code == 0
            bare = json.loads(out)
            assert DESIGN_KEYS <= set(bare)
            assert bare["voltage_v"] == bare["current_a"] == [None, None, None]
            assert bare["frequency_hz"] is None
            assert bare["energy_import_wh"] == READING["energy_import_wh"]


def test_read_prints_a_table_with_units(capsys):
    meter = SimulatedMeter("sdm630", unit_id=1, source=fixed(**READING))
    with served("tcp", meter) as line:
        code, out, err = evse_meter(capsys, "read", "--model", "sdm630", *line.link())
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Eastron SDM630")
    assert lines[1].split() == ["L1", "L2", "L3", "total"]
    table = {line[:20].strip(): line[20:].split() for line in lines[2:]}
    assert table["voltage (V)"] == ["230.1", "230.2", "229.9"]
    assert table["current (A)"] == ["16.012", "15.990", "0.000"]
    assert table["power (W)"] == ["3680", "3565", "0", "7245"]
    assert table["frequency (Hz)"] == ["50.01"]
    assert table["energy import (kWh)"] == ["1234.567"]
    assert table["energy export (kWh)"] == ["4.321"]


def test_read_a_paced_rtu_line_at_the_models_defaults(capsys):
    meter = SimulatedMeter("sdm630", source=fixed(**READING))
    with served("rtu", meter, baud=9600, pace=True) as line:
        code, out, err = evse_meter(capsys, "read", "--model", "sdm630", *line.link(),
                                    "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["energy_import_wh"] == 1234567


def test_meter_errors_exit_1_with_the_reason(capsys):
    meter = SimulatedMeter("sdm630", unit_id=1, source=fixed(**READING))
    with served("tcp", meter) as line:
        code, out, err = evse_meter(capsys, "read", "--model", "sdm630", *line.link(),
                                    "--id", "9", "--timeout", "0.1", "--retries", "0")
        assert (code, out) == (1, "")
        assert err.startswith("evse meter read: sdm630: tcp 127.0.0.1:")
        assert "id 9: timeout: no answer to function 04 at 0x0000" in err
        code, out, err = evse_meter(capsys, "read", "--model", "em340", *line.link())
        assert code == 1
        assert "exception 02 illegal data address at 0x" in err
        meter.inject("exception", code=6)
        code, _, err = evse_meter(capsys, "read", "--model", "sdm630", *line.link(),
                                  "--retries", "1")
        assert code == 1 and "exception 06 server device busy" in err
        assert "(2 attempts)" in err
    code, _, err = evse_meter(capsys, "read", "--model", "sdm630", "--serial",
                              "/dev/evse-no-such-tty", "--retries", "0")
    assert code == 1 and "/dev/evse-no-such-tty 9600 8N1: no such device" in err


@pytest.mark.parametrize("argv, message", [
    (["read", "--tcp", "127.0.0.1:502"], "the following arguments are required: --model"),
    (["read", "--model", "sdm630"], "one of the arguments --tcp --serial is required"),
    (["read", "--model", "sdm999", "--tcp", "h:502"], "argument --model: invalid choice"),
    (["read", "--model", "sdm630", "--tcp", "h:x"], "argument --tcp: 'h:x': the port"),
    (["read", "--model", "sdm630", "--tcp", "h:502", "--serial", "/dev/ttyS0"],
     "not allowed with argument"),
    (["read", "--model", "sdm630", "--tcp", "h:502", "--baud", "9600"],
     "--baud, --parity and --stopbits are for --serial"),
    (["read", "--model", "sdm630", "--serial", "/dev/ttyS0", "--parity", "X"],
     "parity is N (none), E (even) or O (odd)"),
    (["read", "--model", "sdm630", "--serial", "/dev/ttyS0", "--baud", "fast"],
     "expected a positive whole number"),
    (["read", "--model", "sdm630", "--serial", "/dev/ttyS0", "--id", "248"],
     "on a serial line a unit id is 1..247"),
    (["read", "--model", "sdm630", "--serial", "/dev/ttyS0", "--id", "300"],
     "a unit id is 1..247"),
    (["read", "--model", "sdm630", "--serial", "/dev/ttyS0", "--timeout", "0"],
     "expected seconds"),
    (["watch", "--model", "sdm630", "--serial", "/dev/ttyS0", "--count", "0"],
     "expected a positive whole number"),
    (["probe", "--serial", "/dev/ttyS0", "--ids", "5-1"], "ids run 1..247"),
    (["probe", "--serial", "/dev/ttyS0", "--ids", "0-3"], "on a serial line unit ids"),
    (["probe", "--tcp", "h:502", "--bauds", "9600"], "are for --serial"),
    (["probe", "--serial", "/dev/ttyS0", "--bauds", "fast"], "expected baud rates"),
    (["serve", "--model", "sdm630"], "one of the arguments --tcp --pty is required"),
    (["serve", "--model", "sdm630", "--tcp", "127.0.0.1:0", "--baud", "9600"],
     "are for --pty"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "ACTION"),
])
def test_bad_arguments_exit_2_with_a_clear_message(capsys, argv, message):
    code, out, err = evse_meter(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err


def test_help_teaches(capsys):
    code, out, _ = evse_meter(capsys, "read", "--help")
    assert code == 0
    for words in ("--model MODEL", "--tcp HOST[:PORT]", "--serial DEVICE", "--baud N",
                  "--parity N|E|O", "--stopbits", "--id N", "--timeout SECONDS", "--json",
                  "examples:", "evse meter read --model sdm630 --serial /dev/ttyUSB0",
                  "energy_import_wh", "A/B"):
        assert words in out
    code, out, _ = evse_meter(capsys, "--help")
    assert code == 0 and "probe" in out and "serve" in out


def test_add_parser_plugs_into_the_evse_command(capsys):
    """What tools/cli.py does: its subparsers, then args.func(args) -> exit status."""
    top = argparse.ArgumentParser(prog="evse")
    meter_cli.add_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["meter", "models", "--json"])
    assert args.func(args) == 0
    assert {m["model"] for m in json.loads(capsys.readouterr().out)} == set(PROFILES)


# ------------------------------------------------------------------------------ models

def test_models_lists_every_profile_with_its_defaults(capsys):
    code, out, _ = evse_meter(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "METER", "DEFAULTS"]
    assert len(lines) == 1 + len(PROFILES)
    sdm = next(line for line in lines if line.startswith("sdm630 "))
    d = PROFILES["sdm630"]["defaults"]
    assert sdm.endswith("id %d, %d 8%s%d" % (d["id"], d["baud"], d["parity"], d["stopbits"]))
    code, out, _ = evse_meter(capsys, "models", "--json")
    models = json.loads(out)
    assert [m["model"] for m in models] == sorted(PROFILES)
    first = models[0]
    assert set(first) >= {"model", "title", "id", "baud", "parity", "stopbits", "quantities"}


# ------------------------------------------------------------------------------- watch

def test_watch_prints_a_line_per_reading(capsys):
    meter = SimulatedMeter("sdm630", unit_id=1, source=fixed(**READING))
    with served("tcp", meter) as line:
        code, out, err = evse_meter(capsys, "watch", "--model", "sdm630", *line.link(),
                                    "--count", "3", "--interval", "0.05")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == meter_cli.WATCH_HEADER and len(lines) == 4
        assert re.match(r"^\d\d:\d\d:\d\d +230\.1 +230\.2 +229\.9 +16\.012 +15\.990 +0\.000 "
                        r"+7245 +1234\.567 +50\.01$", lines[1]), lines[1]
        code, out, _ = evse_meter(capsys, "watch", "--model", "sdm630", *line.link(),
                                  "--count", "2", "--interval", "0.05", "--json")
        assert code == 0
        rows = [json.loads(text) for text in out.splitlines()]
        assert len(rows) == 2 and all(DESIGN_KEYS <= set(row) for row in rows)
        meter.inject("no_answer", count=1)
        code, out, err = evse_meter(capsys, "watch", "--model", "sdm630", *line.link(),
                                    "--count", "2", "--interval", "0.05", "--timeout", "0.1",
                                    "--retries", "0")
        assert code == 1                 # one reading failed ...
        assert len(out.splitlines()) == 2 and "timeout" in err   # ... and the next came


def test_watch_stops_on_ctrl_c_with_exit_0():
    with served("tcp", SimulatedMeter("sdm630", unit_id=1)) as line:
        watch = subprocess.Popen(
            [sys.executable, "-m", "tools.meter_cli", "watch", "--model", "sdm630",
             *line.link(), "--interval", "0.05"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert watch.stdout.readline() == meter_cli.WATCH_HEADER + "\n"
            assert "230.0" in watch.stdout.readline()
            watch.send_signal(signal.SIGINT)
            out, err = watch.communicate(timeout=10)
        finally:
            watch.kill()
    assert watch.returncode == 0, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- probe

@pytest.mark.parametrize("kind", ("tcp", "rtu"))
def test_probe_finds_the_meters_id_and_model(capsys, kind):
    meter = SimulatedMeter("sdm630", unit_id=3, source=fixed(**READING))
    with served(kind, meter) as line:
        code, out, err = evse_meter(capsys, "probe", *line.link(), "--ids", "1-4",
                                    "--timeout", "0.1", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [r["id"] for r in report["found"]] == [3]
    best = report["found"][0]["models"][0]
    assert best["model"] == "sdm630" and best["realistic"]
    assert best["values"] == best["of"] == len(PROFILES["sdm630"]["rows"])
    rejected = report["found"][0]["rejected"]
    if "em340" in PROFILES:
        assert "em340" in rejected


def test_probe_human_output_and_nothing_found(capsys):
    meter = SimulatedMeter("em340", unit_id=2, source=fixed(**READING))
    with served("rtu", meter) as line:
        code, out, _ = evse_meter(capsys, "probe", *line.link(), "--ids", "1-3",
                                  "--bauds", "9600,19200", "--timeout", "0.1")
        assert code == 0
        assert "  id 2 at 9600 8N1: answers; em340 (" in out
        assert "  id 2 at 19200 8N1: answers; em340 (" in out
        assert out.splitlines()[-1].startswith("2 units answered: id 2 at 9600 8N1 = em340")
        code, out, _ = evse_meter(capsys, "probe", *line.link(), "--ids", "4-5",
                                  "--timeout", "0.1", "-v")
    assert code == 1
    assert "  id 4: no answer" in out and out.splitlines()[-1] == "0 units answered"


# ------------------------------------------------------------------------------- serve

def test_serve_runs_a_simulated_meter_until_ctrl_c(capsys):
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.meter_cli", "serve", "--model", "sdm630", "--tcp",
         "127.0.0.1:0", "--id", "4", "--current", "10", "--phases", "1"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        where = re.search(r"serving Modbus TCP on (127\.0\.0\.1:\d+)", first)
        assert where, first + server.stderr.read()
        code, out, err = evse_meter(capsys, "read", "--model", "sdm630", "--tcp",
                                    where.group(1), "--id", "4", "--json")
        assert (code, err) == (0, "")
        assert json.loads(out)["current_a"] == [10.0, 0.0, 0.0]
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=10)
    finally:
        server.kill()
    assert server.returncode == 0, err

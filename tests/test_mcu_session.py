"""The bundle for boards/unix.toml on real MicroPython (the unix port, `-X heapsize`), against
the local CSMS on 127.0.0.1: a whole OCPP session (boot, authorize, start, meter values, stop),
and again with the CSMS going away in the middle of the transaction (nothing lost). The
bytes that run here are the bytes `evse flash` puts on a board (tools/bundle.py).
"""
import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from simulator.csms import LocalCsms
from tools import boardfile
from tools.bundle import bundle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CP = "UNIX-0001"
# the smallest -X heapsize the whole session passes with (python -m tools.bench_mcu), plus
# headroom; a change that needs more fails here and has to say why
SESSION_HEAP = "384k"


def _micropython():
    return os.path.join(os.path.dirname(sys.executable), "micropython")


@pytest.fixture(scope="module")
def unix_bundle(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("unix-bundle"))
    bundle(boardfile.load(os.path.join(ROOT, "boards", "unix.toml")), out)
    return out


async def run_session(out, operator=None, heap=SESSION_HEAP):
    """The bundle's main.py under MicroPython against a fresh local CSMS; returns
    (exit status, output lines, csms). Each run starts as a fresh board (no state)."""
    shutil.rmtree(os.path.join(out, "state"), ignore_errors=True)
    csms = await LocalCsms().start()
    process = await asyncio.create_subprocess_exec(
        _micropython(), "-X", "heapsize=" + heap, os.path.join(out, "main.py"),
        csms.url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=out, env=dict(os.environ, MICROPYPATH=".frozen:" + out))
    lines = []

    async def collect():
        async for line in process.stdout:
            lines.append(line.decode(errors="replace").rstrip())
    reader = asyncio.ensure_future(collect())
    try:
        await csms.wait_received(CP, "BootNotification", timeout=30)
        await csms.change_configuration(CP, "MeterValueSampleInterval", "5")
        if operator is not None:
            await operator(csms)
        code = await asyncio.wait_for(process.wait(), 120)
        await reader
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await csms.stop()
    return code, lines, csms


def calls(csms, action):
    return [r.payload for r in csms.records(CP, action, "CALL", "from_cp")]


def test_a_whole_session_on_micropython(unix_bundle, tmp_path):
    code, lines, csms = asyncio.run(run_session(unix_bundle))
    output = "\n".join(lines[-40:])
    assert code == 0, output
    assert lines[-1] == "session done: every message delivered", output
    assert lines[-2].startswith("heap: peak "), output
    starts, stops = calls(csms, "StartTransaction"), calls(csms, "StopTransaction")
    assert [s["idTag"] for s in starts] == ["04A1B2C3"] and len(stops) == 1, output
    assert calls(csms, "Authorize") == [{"idTag": "04A1B2C3"}]
    values = calls(csms, "MeterValues")
    assert len(values) >= 2, output
    # 16 A on one phase at 230 V for about 20 s: about 20 Wh, counted in integer mWh
    assert 15 <= stops[0]["meterStop"] - starts[0]["meterStart"] <= 25
    assert stops[0]["reason"] == "Local"
    statuses = [p["status"] for p in calls(csms, "StatusNotification") if p["connectorId"] == 1]
    assert statuses[0] == "Available" and "Charging" in statuses and statuses[-1] == "Available"


def test_a_whole_session_from_a_romfs_image(tmp_path):
    """`evse bundle --romfs`: the modules run from one ROMFS image (on the unix port a file
    that main.py mounts at /rom), the same session as from module folders."""
    out = str(tmp_path / "romfs-bundle")
    bundle(boardfile.load(os.path.join(ROOT, "boards", "unix.toml")), out, romfs=True)
    assert not os.path.exists(os.path.join(out, "agent"))
    code, lines, csms = asyncio.run(run_session(out))
    output = "\n".join(lines[-40:])
    assert code == 0 and lines[-1] == "session done: every message delivered", output
    assert len(calls(csms, "StartTransaction")) == 1 and len(calls(csms, "StopTransaction")) == 1


def test_a_session_reading_a_modbus_meter_on_a_serial_line(tmp_path):
    """boards/unix.toml with a Modbus RTU meter (an SDM630 in front of a steady 16 A load,
    served by simulator/meter_server.py on a pty paced at 9600 Bd): the agent on MicroPython
    reads it with the portable RTU master through hal/unix_tty.py, and the transaction's
    energy is the meter's."""
    from simulator.meter_server import SimulatedMeter, SteadyLoad, profile_named, start_rtu

    async def main():
        meter = SimulatedMeter(profile_named("sdm630"), 1,
                               source=SteadyLoad(16, 230, phases=1, energy_wh=1000).sample)
        server = await start_rtu([meter], baud=9600)
        try:
            with open(os.path.join(ROOT, "boards", "unix.toml")) as file:
                text = file.read().replace('model = "sim"', 'model = "sdm630"\nserial = "%s"'
                                           % server.client_path)
            board_path = tmp_path / "unix-sdm630.toml"
            board_path.write_text(text)
            out = str(tmp_path / "bundle")
            bundle(boardfile.load(str(board_path)), out)
            return await run_session(out)
        finally:
            await server.stop()

    code, lines, csms = asyncio.run(main())
    output = "\n".join(lines[-40:])
    assert code == 0 and lines[-1] == "session done: every message delivered", output
    starts, stops = calls(csms, "StartTransaction"), calls(csms, "StopTransaction")
    assert len(starts) == 1 and len(stops) == 1, output
    # the meter's register, not the scripted charger's: it began at 1 kWh
    assert starts[0]["meterStart"] >= 1000
    # 3680 W for the seconds between the two messages' timestamps
    seconds = (_epoch_s(stops[0]["timestamp"]) - _epoch_s(starts[0]["timestamp"]))
    expected = 3680 * seconds / 3600
    assert abs(stops[0]["meterStop"] - starts[0]["meterStart"] - expected) <= 3 + expected / 10


def _epoch_s(timestamp):
    import datetime
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_the_csms_going_away_mid_transaction_loses_nothing(unix_bundle):
    async def operator(csms):
        await csms.wait_received(CP, "StartTransaction", timeout=30)
        await asyncio.sleep(3)
        await csms.go_away(8, CP)          # drop the connection, refuse it for 8 s

    code, lines, csms = asyncio.run(run_session(unix_bundle, operator))
    output = "\n".join(lines[-40:])
    assert code == 0, output
    assert lines[-1] == "session done: every message delivered", output
    assert lines[-2].startswith("heap: peak "), output
    assert len(calls(csms, "StartTransaction")) == 1 and len(calls(csms, "StopTransaction")) == 1
    transaction_id = csms.records(CP, "StartTransaction", "CALLRESULT", "to_cp")[0].payload[
        "transactionId"]
    values = [p for p in calls(csms, "MeterValues") if p.get("transactionId") == transaction_id]
    energies = [int(s["value"]) for p in values for mv in p["meterValue"]
                for s in mv["sampledValue"]
                if s.get("measurand", "Energy.Active.Import.Register") ==
                "Energy.Active.Import.Register"]
    # the samples taken while the CSMS was away arrive afterwards, in order
    assert len(energies) >= 3 and energies == sorted(energies), output
    assert len(csms.connection_events) >= 3           # connect, lose, reconnect


def test_a_reset_mid_transaction_ends_it_with_power_loss_after_the_reboot(unix_bundle):
    """The board loses power while charging (SIGKILL: nothing runs on the way down) and
    starts again on the same filesystem: the open transaction is stopped with reason
    PowerLoss from the journal, exactly once, and the next session works."""
    async def main():
        csms = await LocalCsms().start()
        env = dict(os.environ, MICROPYPATH=".frozen:" + unix_bundle)
        command = [_micropython(), "-X", "heapsize=" + SESSION_HEAP,
                   os.path.join(unix_bundle, "main.py"), csms.url]
        try:
            first = await asyncio.create_subprocess_exec(
                *command, cwd=unix_bundle, env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await csms.wait_received(CP, "StartTransaction", timeout=60)
            await asyncio.sleep(3)
            first.kill()
            await first.wait()
            second = await asyncio.create_subprocess_exec(
                *command, cwd=unix_bundle, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            output = (await asyncio.wait_for(second.communicate(), 120))[0].decode()
            return second.returncode, output, csms
        finally:
            await csms.stop()

    shutil.rmtree(os.path.join(unix_bundle, "state"), ignore_errors=True)
    code, output, csms = asyncio.run(main())
    assert code == 0, output[-3000:]
    starts = csms.records(CP, "StartTransaction", "CALLRESULT", "to_cp")
    ids = [r.payload["transactionId"] for r in starts]
    stops = calls(csms, "StopTransaction")
    assert len(ids) == 2 and len(calls(csms, "BootNotification")) == 2
    assert [(s["transactionId"], s["reason"]) for s in stops] == \
        [(ids[0], "PowerLoss"), (ids[1], "Local")]


def refused_in_one_line(out, url):
    """main.py of the bundle in `out` with `url`: its one line of output, once it has ended
    with exit 2 and no traceback."""
    done = subprocess.run([_micropython(), "-X", "heapsize=" + SESSION_HEAP,
                           os.path.join(out, "main.py"), url],
                          cwd=out, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MICROPYPATH=".frozen:" + out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


def test_a_serial_device_that_is_not_there_ends_the_run_with_one_line(tmp_path):
    """A unix board whose meter's serial device does not exist (an adapter left unplugged):
    main.py says which device and why in one line and exits 2, no traceback."""
    with open(os.path.join(ROOT, "boards", "unix.toml")) as file:
        text = file.read().replace('model = "sim"',
                                   'model = "sdm630"\nserial = "/dev/evse-no-such-tty"')
    board_path = tmp_path / "unix-unplugged.toml"
    board_path.write_text(text)
    out = str(tmp_path / "bundle")
    bundle(boardfile.load(str(board_path)), out)
    assert refused_in_one_line(out, "ws://127.0.0.1:9/ocpp") == [
        "board unix: meter serial device /dev/evse-no-such-tty: [Errno 2] ENOENT"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/ocpp", "garbage"])
def test_a_csms_url_that_can_never_work_ends_the_run_with_one_line(unix_bundle, url):
    """main.py [CSMS URL]: a URL no retry can mend is one line and exit 2, not a back-off
    loop for ever."""
    assert refused_in_one_line(unix_bundle, url) == [
        "CSMS URL: not a ws:// or wss:// URL: %s" % url]


def test_wss_without_a_ca_certificate_is_one_line_not_a_dead_connection(unix_bundle):
    """A microcontroller has no trust store: wss:// without [ocpp] ca cannot check the CSMS,
    so main.py says so (the connection task used to die on it, leaving the charger offline
    for good)."""
    assert refused_in_one_line(unix_bundle, "wss://127.0.0.1:9/ocpp") == [
        "CSMS URL: wss:// needs the CSMS's CA certificate ([ocpp] ca): a microcontroller has "
        "no trust store"]

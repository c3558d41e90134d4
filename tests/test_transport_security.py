"""Security profiles over real sockets on 127.0.0.1: HTTP Basic auth (profile 1), TLS with a
CA file plus Basic auth (profile 2), a CSMS whose certificate the CA did not sign, and a
clean shutdown on SIGTERM."""
import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time

import pytest

from simulator import clock
from simulator.csms import LocalCsms
from simulator.runner import OcppOptions, Simulation
from simulator.scenario import parse_text
from simulator.timeline import Timeline
from tools import boardfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "00112233445566778899AABBCCDDEEFF"          # 16 bytes as hex (OCPP 1.6 security)


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key",
                "-out", ca + ".pem", "-days", "2", "-subj", "/CN=%s test root" % ca, cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "csms.key", "-out", "csms.csr",
            "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "csms.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "csms.pem", "-days", "2", "-extfile", "san.ext",
            cwd=folder)
    return folder


def run_agent(csms_factory, options, steps="wait 5s\n"):
    board = boardfile.load(boardfile.find("sim"))

    async def main():
        csms = await csms_factory().start()
        options.url = csms.url
        simulation = Simulation(board, timeline=Timeline(quiet=True), ocpp=options)
        try:
            await simulation.run(parse_text(steps, "t.scn"))
        finally:
            await csms.stop()
        return simulation, csms
    return clock.run(main())


def server_context(folder):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(folder / "csms.pem"), str(folder / "csms.key"))
    return context


def test_profile_1_basic_auth_is_accepted():
    simulation, csms = run_agent(lambda: LocalCsms(auth_keys={"SP1": KEY}),
                                 OcppOptions(charge_point_id="SP1", auth_key=KEY))
    assert simulation.cp.boot == "accepted"
    assert csms.station("SP1").username == "SP1"
    assert csms.received("SP1", "BootNotification") == 1


def test_profile_1_wrong_key_never_boots():
    simulation, csms = run_agent(lambda: LocalCsms(auth_keys={"SP1": KEY}),
                                 OcppOptions(charge_point_id="SP1", auth_key="00" * 16))
    assert simulation.cp.boot != "accepted"
    assert csms.received("SP1", "BootNotification") == 0
    assert any(e.event == "rejected" for e in csms.connection_events)


def test_profile_2_tls_with_the_csms_ca(certificates):
    simulation, csms = run_agent(
        lambda: LocalCsms(auth_keys={"SP2": KEY}, ssl_context=server_context(certificates)),
        OcppOptions(charge_point_id="SP2", auth_key=KEY, cafile=str(certificates / "ca.pem")))
    assert csms.url.startswith("wss://")
    assert simulation.cp.boot == "accepted"
    assert csms.station("SP2").username == "SP2"


def test_profile_2_refuses_a_csms_the_ca_did_not_sign(certificates):
    simulation, csms = run_agent(
        lambda: LocalCsms(auth_keys={"SP2": KEY}, ssl_context=server_context(certificates)),
        OcppOptions(charge_point_id="SP2", auth_key=KEY,
                    cafile=str(certificates / "other-ca.pem")))
    assert simulation.cp.boot != "accepted"
    assert csms.received("SP2", "BootNotification") == 0


def test_sigterm_closes_the_connection_cleanly(tmp_path):
    scenario = tmp_path / "long.scn"
    scenario.write_text("wait 1h\n")

    async def main():
        csms = await LocalCsms().start()
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "sim", "--csms", csms.url, "--id", "TERM-1",
            "--scenario", str(scenario), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        try:
            await csms.wait_received("TERM-1", "BootNotification", timeout=20)
            started = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(agent.wait(), 20)
            await csms.wait_disconnected("TERM-1", timeout=10)
            return code, time.monotonic() - started, csms.connection_events
        finally:
            if agent.returncode is None:
                agent.kill()
            await csms.stop()
    code, seconds, events = asyncio.run(main())
    assert code == 0
    assert seconds < 5
    closes = [e for e in events if e.cp_id == "TERM-1" and e.event == "disconnected"]
    assert [e.detail.get("code") for e in closes] == [1000]      # a normal closure

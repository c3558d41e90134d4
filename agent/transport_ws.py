"""OCPP-J over WebSocket on CPython (`websockets`): the I/O shell around ChargePoint16.

CPython only (agent/transport_mp.py is the portable one, on agent/wsclient.py). Everything
but the WebSocket itself (URL, credentials, security profiles, back-off, reconnecting for new
credentials, the timer loop) is agent/transport.py's, shared with it; this file opens a
`websockets` connection (compression off, the subprotocol required, WebSocketPingInterval
as the keepalive) and moves frames over it.
"""
import asyncio
import ssl

from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI,
)

from agent.transport import (
    OPEN_TIMEOUT_S, PING_TIMEOUT_S, SEND_WAIT_S, SUBPROTOCOL, USER_AGENT, Transport,
)


class Connection(Transport):
    """Keeps one charge point connected; `pump()` after anything that may have produced
    frames (station events, timers)."""

    ERRORS = (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError, ConnectionClosed)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sending = set()          # frames on their way out

    def _tls(self):
        context = ssl.create_default_context(cafile=self.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2   # A00.FR.312: TLS 1.2 or higher
        return context

    def _http_status(self, error):
        return error.response.status_code if isinstance(error, InvalidStatus) else None

    async def _open(self, url, headers, context, ping):
        subprotocol = SUBPROTOCOL[self.version]
        ws = await connect(url, subprotocols=[subprotocol], compression=None,
                           additional_headers=headers, ssl=context, proxy=None,
                           open_timeout=OPEN_TIMEOUT_S, ping_interval=ping,
                           ping_timeout=PING_TIMEOUT_S, max_size=2 ** 20,
                           user_agent_header=USER_AGENT)
        if ws.subprotocol != subprotocol:
            await ws.close(1002, "subprotocol %s required" % subprotocol)
            raise InvalidHandshake("CSMS did not accept subprotocol %s" % subprotocol)
        return ws

    def _transmit(self, ws, frames):
        for frame in frames:
            sending = asyncio.ensure_future(self._send(ws, frame))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, ws, frame):
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass

    async def _sent(self, ws):
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=SEND_WAIT_S)

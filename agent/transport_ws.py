"""OCPP-J over WebSocket on CPython (`websockets`): the I/O shell around ChargePoint16.

CPython only (MicroPython gets its own small RFC 6455 client behind the same `Connection`
shape). Connects to URL + "/" + charge point id (or a template holding "{id}"), requires the
`ocpp1.6` subprotocol in the answer, compression off, HTTP Basic auth with the
AuthorizationKey (security profile 1/2), TLS with a CA file for wss:// (profile 2),
WebSocketPingInterval as the ping interval, and reconnects with jittered exponential
back-off. Everything protocol-related happens in the sans-I/O objects; this file only moves
frames and time.
"""
import asyncio
import base64
import random
import ssl

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


def endpoint(base, charge_point_id):
    """DESIGN.md: a base to which /ID is appended, or a template holding {id}."""
    if "{id}" in base:
        return base.replace("{id}", charge_point_id)
    return base.rstrip("/") + "/" + charge_point_id


class Connection:
    """Keeps one charge point connected; `pump()` after anything that may have produced
    frames (station events, timers)."""

    def __init__(self, charge_point, agent, url, charge_point_id, version="1.6",
                 auth_key=None, cafile=None, log=None):
        self.cp = charge_point
        self.agent = agent
        self.url = endpoint(url, charge_point_id)
        self.charge_point_id = charge_point_id
        self.version = version
        self.auth_key = auth_key
        self.cafile = cafile
        self.log = log or (lambda text: None)
        self.ws = None
        self.offline_until = None      # simulated network loss (scenario csms_offline)
        self._wake = asyncio.Event()
        self._sleep_until = None
        self._running = False
        self.connects = 0

    def now(self):
        return self.agent.now_ms()

    # ------------------------------------------------------------------ frames out
    def pump(self):
        """After the charge point took input: apply its effects, send its frames, and let
        the timer loop re-read its deadline."""
        self._flush()
        self._wake.set()

    def frames_waiting(self):
        """Agent hook (end of every service pass): station events may have made frames, or
        armed a timer earlier than the one the timer loop sleeps towards."""
        if self.cp.rpc.has_frames():
            self._wake.set()
            return
        deadline = self.cp.next_deadline()
        if deadline is not None and (self._sleep_until is None or deadline < self._sleep_until):
            self._wake.set()

    def _flush(self):
        now = self.now()
        self.agent.service(now)
        frames = self.cp.take_frames()
        if frames and self.ws is not None:
            for frame in frames:
                asyncio.ensure_future(self._send(frame))
            self.cp.frames_activity(now)
        self._hold_time()

    def _hold_time(self):
        """Under the simulator's virtual clock, time must not run ahead while an answer is
        on its way from a CSMS in another process: hold it while a CALL is out."""
        clock = getattr(asyncio.get_running_loop(), "clock", None)
        if clock is not None:
            clock.hold = 1 if (self.ws is not None and self.cp.rpc.awaiting()) else 0

    async def _send(self, frame):
        ws = self.ws
        if ws is None:
            return
        try:
            await ws.send(frame)
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------------ the loop
    def _headers(self):
        # the AuthorizationKey the CSMS set (ChangeConfiguration) wins over the start-up one
        key = self.cp.config.get("AuthorizationKey") or self.auth_key
        if key is None:
            return None
        token = base64.b64encode(("%s:%s" % (self.charge_point_id, key)).encode())
        return {"Authorization": "Basic " + token.decode()}

    def _ssl(self):
        if not self.url.startswith("wss://"):
            return None
        context = ssl.create_default_context(cafile=self.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2   # OCPP security: TLS 1.2 or higher
        return context

    async def run(self):
        self._running = True
        delay = BACKOFF_FIRST_S
        timers = asyncio.ensure_future(self._timer_loop())
        try:
            while self._running:
                if self.offline_until is not None:
                    wait = (self.offline_until - self.now()) / 1000
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self.offline_until = None
                try:
                    await self._session()
                    delay = BACKOFF_FIRST_S
                except (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError,
                        ConnectionClosed) as error:
                    self.log("connection to %s failed: %s" % (self.url, error))
                if not self._running:
                    break
                if self.offline_until is None:
                    # jittered exponential back-off: many chargers after a CSMS outage must
                    # not all come back in the same second
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            timers.cancel()

    async def _session(self):
        ping = self.cp.config.get("WebSocketPingInterval")
        async with connect(self.url, subprotocols=[SUBPROTOCOL[self.version]],
                           compression=None, additional_headers=self._headers(),
                           ssl=self._ssl(), proxy=None, open_timeout=10,
                           ping_interval=ping if ping > 0 else None, max_size=2 ** 20,
                           user_agent_header="evse-agent") as ws:
            if ws.subprotocol != SUBPROTOCOL[self.version]:
                await ws.close(1002, "subprotocol %s required" % SUBPROTOCOL[self.version])
                raise InvalidHandshake("CSMS did not accept subprotocol %s"
                                       % SUBPROTOCOL[self.version])
            self.ws = ws
            self.connects += 1
            self.log("connected to %s" % self.url)
            try:
                self.cp.connection_made(self.now())
                self.pump()
                async for message in ws:
                    if isinstance(message, bytes):
                        message = message.decode("utf-8", "replace")
                    now = self.now()
                    self.cp.receive(now, message)
                    self.pump()
                    if self.offline_until is not None:
                        break
            finally:
                self.ws = None
                self.cp.connection_lost(self.now())
                self.pump()
                self._hold_time()

    async def _timer_loop(self):
        while True:
            now = self.now()
            self.cp.poll(now)
            self._flush()
            deadline = self.cp.next_deadline()
            self._sleep_until = deadline
            self._wake.clear()
            timeout = None if deadline is None else max(0, deadline - now) / 1000
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def go_offline(self, duration_ms):
        """Drop the connection and stay away for duration_ms (scenario csms_offline)."""
        self.offline_until = self.now() + duration_ms
        if self.ws is not None:
            await self.ws.close()

    def stop(self):
        self._running = False
        self._wake.set()
        if self.ws is not None:
            asyncio.ensure_future(self.ws.close())

    async def close(self):
        """Stop reconnecting and close the WebSocket with a normal closure (1000)."""
        self._running = False
        self._wake.set()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except (asyncio.TimeoutError, ConnectionClosed, OSError):
                pass

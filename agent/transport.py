"""OCPP-J over WebSocket: what the two transports share (portable).

`Transport` keeps one charge point connected to its CSMS: it moves frames between the
sans-I/O charge point (agent/ocpp16.py) and a WebSocket, wakes up for the charge point's
deadlines, reconnects with jittered exponential back-off, picks the security profile of
each attempt and reconnects when the CSMS changes the credentials. A subclass supplies the
WebSocket: agent/transport_ws.py (`websockets`, CPython) and agent/transport_mp.py
(agent/wsclient.py, both interpreters), with the interface `evse sim`, `evse run` and the
microcontroller's main use: `Connection(charge_point, agent, url, charge_point_id,
version="1.6", auth_key=None, cafile=None, log=None)`, `run()`, `pump()`, `frames_waiting()`
(agent hook), `go_offline(ms)`, `stop()`, `close()`.

Connects to URL + "/" + charge point id (or a template holding "{id}"; the id goes before a
?query, percent-encoded where a URL path needs it), requires the
`ocpp1.6` subprotocol in the answer, WebSocketPingInterval as the ping interval.

Security profiles (OCPP 1.6 Security Whitepaper ed.3 §2, spec/standards.md §5.6), chosen per
connection attempt from the config's SecurityProfile (`Config.profile_to_try`):
- 0: the URL as given; 1: HTTP Basic auth `id:AuthorizationKey`; 2: the same over TLS 1.2 or
  higher, the CSMS certificate checked against the CA (`cafile`). A ws:// URL is used as
  wss:// on the same host, port and path (as libocpp derives the scheme from the profile), so
  a raise from 1 to 2 needs no new URL, which OCPP 1.6 has no key for. 3 (TLS client
  certificates) is not implemented, so a raise to it is Rejected.
- The start-up options are provisioned into the config (`Config.provision`): `auth_key` as
  the AuthorizationKey, and the profile they amount to (a key over wss:// is 2, a key is 1)
  as the lowest SecurityProfile. A key or profile the CSMS set and stored wins.
- `security_check`: a raise to 2 needs a CA that loads (A05.FR.03); 3 is never possible.
- When the charge point asks (`take_reconnect()`: the CSMS changed the AuthorizationKey or
  raised the SecurityProfile), its answer leaves first, then the connection closes (1000)
  and a new one opens at once with the new key or profile (Security Whitepaper A01 steps
  3-4, A05.FR.06/07). A raised profile that cannot connect is given up for the previous one
  (A05.FR.08, see Config.profile_to_try). A new key the CSMS refuses (HTTP 401) is kept and
  retried with back-off, never swapped back for the old one: once the charge point accepted
  the change, the CSMS takes no other (A01.FR.03). The key itself is never logged (A01.FR.12).
"""
import binascii
import random

from agent.compat import asyncio

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
CLOSE_NORMAL = 1000          # RFC 6455 §7.4.1; also what libocpp closes with to reconnect
SEND_WAIT_S = 10.0           # for the answer to leave before closing for new credentials
OPEN_TIMEOUT_S = 10          # TCP + TLS + HTTP upgrade
PING_TIMEOUT_S = 20          # a ping unanswered this long: the connection is dead
USER_AGENT = "evse-agent"


IDENTITY_MAX = 48            # OCPP 2.0.1 identifierString[48]; what 1.6J CSMSs take as well
# OCPP 2.0.1 identifierString without ':', which ends the user-id of HTTP Basic auth (RFC 7617
# section 2) and the identity is that user-id from security profile 1 on. Anything else (a
# space, '/', '?', non-ASCII) a CSMS either cannot route or decodes its own way: refused.
IDENTITY_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                  "*-_=+|@.")
# RFC 3986 pchar: what a URL path segment holds as it is
_PATH_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
               "-._~!$&'()*+,;=:@")


def identity_problem(charge_point_id):
    """Why `charge_point_id` cannot be a charge point identity, or None."""
    if not charge_point_id:
        return "empty"
    if len(charge_point_id) > IDENTITY_MAX:
        return "%d characters, more than the %d OCPP allows" % (
            len(charge_point_id), IDENTITY_MAX)
    for char in charge_point_id:
        if char not in IDENTITY_CHARS:
            return "%r is not allowed (only letters, digits and %s)" % (
                char, " ".join(IDENTITY_CHARS[62:]))
    return None


def _path_segment(text):
    """`text` percent-encoded for a URL path (of the identity's characters only '|')."""
    return "".join(char if char in _PATH_CHARS else
                   "".join("%%%02X" % byte for byte in char.encode()) for char in text)


def endpoint(base, charge_point_id):
    """DESIGN.md: a base to which /ID is appended, or a template holding {id}. The id goes
    into the path, before any ?query of the base."""
    segment = _path_segment(charge_point_id)
    if "{id}" in base:
        return base.replace("{id}", segment)
    query = base.find("?")
    path, query = (base, "") if query < 0 else (base[:query], base[query:])
    return path.rstrip("/") + "/" + segment + query


def secure_url(url):
    """The wss:// form of a ws:// URL: same host, port and path (security profile 2)."""
    return "wss://" + url[len("ws://"):] if url.startswith("ws://") else url


def basic_auth(user, password):
    """An HTTP Basic Authorization header value (RFC 7617)."""
    token = binascii.b2a_base64(("%s:%s" % (user, password)).encode(), newline=False)
    return "Basic " + token.decode()


def _text(data):
    """A binary message as text, undecodable bytes replaced (MicroPython's decode has no
    errors="replace")."""
    try:
        return data.decode("utf-8", "replace")
    except UnicodeError:
        return "".join(chr(b) if b < 128 else "\ufffd" for b in data)


class Transport:
    """Keeps one charge point connected; `pump()` after anything that may have produced
    frames (station events, timers).

    A subclass provides the WebSocket: `ERRORS` (what a failed attempt or a lost connection
    raises), `_tls()` (the TLS context of the CA; OSError/ValueError if it does not load),
    `_open(url, headers, tls, ping_s)` (an open WebSocket with `async for`, `close(code,
    reason)`; the subprotocol checked), `_transmit(ws, frames)`, `_sent(ws)` (wait, bounded by
    SEND_WAIT_S, until what `_transmit` took has left) and `_http_status(error)`."""

    ERRORS = (OSError, asyncio.TimeoutError)

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
        self._restart = None           # the task closing the connection for new credentials
        self._reconnect_now = False
        self.connects = 0
        self._holding = False          # this connection holds the virtual clock
        self.failures = 0              # failed connection attempts in a row
        self.profile = None            # SecurityProfile of the current / last attempt
        config = charge_point.config
        if auth_key:
            # a key the config cannot take (not 32-40 hex digits) is still sent as given
            config.provision("AuthorizationKey", auth_key)
        config.provision("SecurityProfile", self._start_profile())
        config.security_check = self.can_use

    def now(self):
        return self.agent.now_ms()

    # ------------------------------------------------------------------ security profiles
    def _start_profile(self):
        """The profile the start-up options amount to (spec/standards.md §5.6)."""
        if not self.auth_key:
            return 0
        return 2 if self.url.startswith("wss://") else 1

    def can_use(self, profile):
        """Config.security_check: whether this transport can connect with `profile`.
        2 needs the CSMS's root certificate, the CA file (Security Whitepaper A05.FR.03);
        3 needs a charge point certificate for TLS client authentication, not implemented
        (A05.FR.04). 1 only needs the AuthorizationKey, which the config checks."""
        if profile < 2:
            return True
        if profile > 2 or not self.cafile or not self.url.startswith(("ws://", "wss://")):
            return False
        try:
            self._tls()
        except (OSError, ValueError):      # no such file, not a certificate (ssl.SSLError)
            return False
        return True

    def _url(self, profile):
        return secure_url(self.url) if profile >= 2 else self.url

    def _target(self, profile):
        """(url, headers, TLS context) of a connection attempt with `profile`."""
        url = self._url(profile)
        headers = None
        key = self.cp.config.get("AuthorizationKey") or self.auth_key
        if profile in (1, 2) and key:
            # A00.FR.202-205: username = the charge point id of the URL, password = the key
            headers = {"Authorization": basic_auth(self.charge_point_id, key)}
        return url, headers, (self._tls() if url.startswith("wss://") else None)

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
            self._transmit(self.ws, frames)
            self.cp.frames_activity(now)
        key = self.cp.take_reconnect()
        if key is not None and self.ws is not None and self._restart is None:
            self._restart = asyncio.create_task(self._reconnect(self.ws, key))
        self._hold_time()

    def _hold_time(self):
        """Under the simulator's virtual clock, time must not run ahead while an answer is
        on its way from a CSMS in another process: hold it while a CALL is out."""
        clock = getattr(asyncio.get_event_loop(), "clock", None)
        if clock is not None:
            holding = self.ws is not None and self.cp.rpc.awaiting()
            if holding != self._holding:
                # a count: other real I/O (a simulated meter on a pty) may hold it too
                clock.hold += 1 if holding else -1
                self._holding = holding

    async def _reconnect(self, ws, key):
        """Close `ws` for the credentials the CSMS just changed, once the answer that
        accepted them has left; `run` connects again at once."""
        try:
            # bounded: a stuck socket must not keep the old key alive
            await self._sent(ws)
            if ws is not self.ws:
                return                  # gone meanwhile: the next connection uses them anyway
            if key == "SecurityProfile":
                self.log("SecurityProfile raised to %d by the CSMS: reconnecting with it"
                         % self.cp.config.get("SecurityProfile"))
            else:
                # A01.FR.11: the change is logged; A01.FR.12: the key itself never is
                self.log("%s changed by the CSMS: reconnecting with the new one" % key)
            self._reconnect_now = True
            await ws.close(CLOSE_NORMAL, "%s changed" % key)
        except self.ERRORS:
            pass
        finally:
            self._restart = None

    # ------------------------------------------------------------------ the loop
    async def run(self):
        self._running = True
        delay = BACKOFF_FIRST_S
        timers = asyncio.create_task(self._timer_loop())
        try:
            while self._running:
                if self.offline_until is not None:
                    wait = (self.offline_until - self.now()) / 1000
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self.offline_until = None
                profile = self.cp.config.profile_to_try(self.failures)
                connects = self.connects
                error = None
                try:
                    await self._session(profile)
                except self.ERRORS as failed:
                    error = failed
                if not self._running:
                    break
                if self.connects > connects:
                    delay = BACKOFF_FIRST_S
                elif error is not None:
                    self.failures += 1
                if self._reconnect_now:
                    # new credentials: connect with them at once (A01 step 4, A05.FR.07)
                    self._reconnect_now = False
                    continue
                # jittered exponential back-off: many chargers after a CSMS outage must
                # not all come back in the same second
                wait = min(delay * (0.5 + random.random()), BACKOFF_MAX_S)
                if error is not None:
                    self.log(self._why(profile, error, self.connects > connects,
                                       wait if self.offline_until is None else None))
                if self.offline_until is None:
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, BACKOFF_MAX_S)
        finally:
            timers.cancel()

    def _why(self, profile, error, was_connected, wait):
        if was_connected:
            what = "connection to %s lost: %s" % (self._url(profile), error)
        elif self._http_status(error) == 401:
            # the CSMS does not take this charge point's AuthorizationKey: it is kept (after
            # an Accepted change the CSMS takes no other, A01.FR.03) and tried again
            what = ("the CSMS refused the credentials of %s (HTTP 401, SecurityProfile %d): "
                    "not the AuthorizationKey it expects" % (self.charge_point_id, profile))
        else:
            what = "connection to %s failed (SecurityProfile %d): %s" % (
                self._url(profile), profile, str(error) or error.__class__.__name__)
        return what if wait is None else "%s; retrying in %.1f s" % (what, wait)

    def _http_status(self, error):
        return None

    async def _session(self, profile):
        self.profile = profile
        url, headers, context = self._target(profile)
        ping = self.cp.config.get("WebSocketPingInterval")
        ws = await self._open(url, headers, context, ping if ping > 0 else None)
        try:
            self.ws = ws
            self.connects += 1
            self.failures = 0
            self._reconnect_now = False
            raised = self.cp.config.get("SecurityProfile")
            if self.cp.config.connected_with(profile):
                self.log("SecurityProfile %d did not connect: back to %d (Security Whitepaper "
                         "A05.FR.08)" % (raised, profile))
            self.log("connected to %s (SecurityProfile %d)" % (url, profile))
            try:
                self.cp.connection_made(self.now())
                self.pump()
                async for message in ws:
                    if isinstance(message, bytes):
                        message = _text(message)
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
        finally:
            await ws.close()

    async def _timer_loop(self):
        while True:
            now = self.now()
            try:
                self.cp.poll(now)
            except Exception as error:
                # a failing timer (storage gone, a bug) must not end OCPP for good, silently
                self.log("OCPP timers: %r" % (error,))
                await asyncio.sleep(1)
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
            asyncio.create_task(self.ws.close())

    async def close(self):
        """Stop reconnecting and close the WebSocket with a normal closure (1000)."""
        self._running = False
        self._wake.set()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except self.ERRORS:
                pass

"""A small RFC 6455 WebSocket client for asyncio: the MicroPython transport's socket.

Portable (CPython asyncio and MicroPython asyncio). Shaped like `websockets`: a sans-I/O core
(URL, handshake, frame and protocol code working on bytes, unit-tested without sockets in
tests/portable/test_wsframes.py) and a thin asyncio shell (`connect`, `WebSocket`) that only
moves bytes. Client side only, text and binary messages, no extensions (no compression: OCPP
frames are small and an MCU has no RAM for a deflate window).

    ws = await connect("ws://host:9000/ocpp/CP1", ["ocpp1.6"], {"Authorization": ...})
    await ws.send('[2,"1","Heartbeat",{}]')
    async for message in ws:        # ends on a normal closure (1000/1001), else raises
        ...
    await ws.close()

Unlike `websockets` nothing reads in the background: pings are answered, pongs seen and
the server's close frame received while a task is in `recv()` (or `async for`), which the
OCPP transport always is.

MicroPython subset (spec/libraries.md §6): no asyncio.wait/timeout/Queue, no
int.from_bytes(signed=), no struct.Struct, no exception chaining, bytearray without `del`
(slice assignment instead); its StreamWriter.drain() forgets bytes written while another
drain runs, hence one writer at a time (`_flush`).
"""
import binascii
import hashlib
import os
import struct

from agent.compat import asyncio, const

MAX_SIZE = const(65536)          # largest message (and frame) accepted, bytes
READ_SIZE = const(512)           # bytes asked from the socket per read
MAX_HEADER = const(8192)         # largest handshake response head, bytes
OPEN_TIMEOUT_S = 10
CLOSE_TIMEOUT_S = 5
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"      # RFC 6455 §1.3

# opcodes (RFC 6455 §5.2)
OP_CONT = const(0x0)
OP_TEXT = const(0x1)
OP_BINARY = const(0x2)
OP_CLOSE = const(0x8)
OP_PING = const(0x9)
OP_PONG = const(0xA)

# close codes (RFC 6455 §7.4.1)
CLOSE_NORMAL = const(1000)
CLOSE_GOING_AWAY = const(1001)
CLOSE_PROTOCOL_ERROR = const(1002)
CLOSE_NO_STATUS = const(1005)        # never on the wire: a close frame without a code
CLOSE_ABNORMAL = const(1006)         # never on the wire: the TCP connection ended first
CLOSE_INVALID_DATA = const(1007)
CLOSE_TOO_BIG = const(1009)
CLOSE_INTERNAL_ERROR = const(1011)
OK_CODES = (CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS)

# protocol states
OPEN = const(1)
CLOSING = const(2)       # our close frame is out, the server's answer is not in
CLOSED = const(3)


class WebSocketError(Exception):
    pass


class InvalidURI(WebSocketError):
    pass


class HandshakeError(WebSocketError):
    """The server did not open a WebSocket we can use; `status` is its HTTP status code
    (None if it did not answer in HTTP)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class ConnectionClosed(WebSocketError):
    """The WebSocket is closed: `code` and `reason` of the close frame received (1005: it
    had no code; 1006: none came, the TCP connection ended), or of the one we failed the
    connection with (1002, 1007, 1009, 1011). `ok`: a normal closure, both frames exchanged."""

    def __init__(self, code, reason="", ok=False):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.ok = ok

    def __str__(self):
        return "WebSocket closed: %d %s" % (self.code, self.reason or "(no reason)")


class ProtocolError(WebSocketError):
    """What the server sent breaks RFC 6455 (or our size limit): fail with `code`."""

    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------ URL and handshake (sans-I/O)

def parse_url(url):
    """(secure, host, port, resource) of a ws:// or wss:// URL."""
    if url.startswith("wss://"):
        secure, rest = True, url[6:]
    elif url.startswith("ws://"):
        secure, rest = False, url[5:]
    else:
        raise InvalidURI("not a ws:// or wss:// URL: %s" % url)
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority, resource = rest[:end], rest[end:]
    resource = resource.split("#")[0]
    if not resource.startswith("/"):
        resource = "/" + resource
    if "@" in authority:
        raise InvalidURI("user info in the URL is not supported: %s" % url)
    if authority.startswith("["):                   # IPv6 literal
        host, _, port = authority[1:].partition("]")
        if port and not port.startswith(":"):
            raise InvalidURI("bad host in %s" % url)
        port = port[1:]
    else:
        host, _, port = authority.partition(":")
    if not host:
        raise InvalidURI("no host in %s" % url)
    if port:
        try:
            port = int(port)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise InvalidURI("bad port in %s" % url)
    else:
        port = 443 if secure else 80
    return secure, host, port, resource


def new_key():
    """A Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455 §4.1)."""
    return binascii.b2a_base64(os.urandom(16), newline=False).decode()


def accept_key(key):
    """The Sec-WebSocket-Accept a server must answer `key` with (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return binascii.b2a_base64(digest, newline=False).decode()


def handshake_request(host, port, resource, key, subprotocols, headers=None, secure=False):
    """The HTTP/1.1 Upgrade request (RFC 6455 §4.1) as bytes. `headers`: a dict or (name,
    value) pairs added as given."""
    if ":" in host:
        host = "[%s]" % host
    if port != (443 if secure else 80):
        host = "%s:%d" % (host, port)
    lines = ["GET %s HTTP/1.1" % resource, "Host: " + host, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if headers:
        for name, value in (headers.items() if hasattr(headers, "items") else headers):
            value = str(value)
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError("line break in header %s" % name)
            lines.append("%s: %s" % (name, value))
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


def parse_response(head):
    """(status, reason, headers) of a response head (bytes up to the blank line);
    header names in lower case, repeated headers joined with ", "."""
    try:
        text = head.decode()
    except UnicodeError:
        text = None
    lines = text.split("\r\n") if text else [""]
    parts = lines[0].split(" ", 2)
    if not lines[0].startswith("HTTP/1.") or len(parts) < 2 or len(parts[1]) != 3 \
            or not parts[1].isdigit():
        raise HandshakeError("not an HTTP response: %r" % bytes(head[:40]))
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HandshakeError("bad header line in the response: %r" % line[:40])
        name = name.lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def check_response(head, key, subprotocols):
    """The subprotocol the server chose, if its response head accepts our handshake;
    HandshakeError saying what is wrong otherwise (RFC 6455 §4.1, client requirements)."""
    status, reason, headers = parse_response(head)
    if status != 101:
        raise HandshakeError("HTTP %d %s: the server did not switch to WebSocket"
                             % (status, reason), status)
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("no Upgrade: websocket in the response", status)
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise HandshakeError("no Connection: Upgrade in the response", status)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept in the response", status)
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server chose extensions we did not ask for: %s"
                             % headers["sec-websocket-extensions"], status)
    chosen = headers.get("sec-websocket-protocol")
    if subprotocols:
        if chosen is None:
            raise HandshakeError("the server chose no subprotocol (asked for %s)"
                                 % ", ".join(subprotocols), status)
        if chosen not in subprotocols:
            raise HandshakeError("the server chose subprotocol %s (asked for %s)"
                                 % (chosen, ", ".join(subprotocols)), status)
    elif chosen is not None:
        raise HandshakeError("the server chose subprotocol %s, none was asked for" % chosen,
                             status)
    return chosen


# ------------------------------------------------------------------ frames (sans-I/O)

_MASK_CHUNK = const(256)         # bytes masked per big-integer XOR (a multiple of 4)


def mask(data, key, out=None, offset=0):
    """`data` XOR the 4-byte `key` repeated (RFC 6455 §5.3; its own inverse), written to
    `out` at `offset` (a new bytearray if None). Chunked big-integer XOR: fast on both
    interpreters without a copy of the whole payload per step."""
    size = len(data)
    if out is None:
        out = bytearray(size)
    if size:
        chunk_key = int.from_bytes(key * (_MASK_CHUNK // 4), "big")
        view = memoryview(data)
        for start in range(0, size, _MASK_CHUNK):
            part = view[start:start + _MASK_CHUNK]
            n = len(part)
            k = chunk_key if n == _MASK_CHUNK else chunk_key >> (8 * (_MASK_CHUNK - n))
            at = offset + start
            out[at:at + n] = (int.from_bytes(part, "big") ^ k).to_bytes(n, "big")
    return out


def new_mask():
    return os.urandom(4)


def frame_header(opcode, size, fin=True, mask_key=None):
    """The header of a frame with a `size`-byte payload (RFC 6455 §5.2): the length in 7
    bits, or 126 and 16 bits, or 127 and 64 bits, always the shortest; then the mask key."""
    first = (0x80 if fin else 0) | opcode
    masked = 0x80 if mask_key is not None else 0
    if size < 126:
        head = struct.pack("!BB", first, masked | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, masked | 126, size)
    else:
        head = struct.pack("!BBQ", first, masked | 127, size)
    return head if mask_key is None else head + mask_key


def build_frame(opcode, payload, fin=True, mask_key=None):
    """One frame as a bytearray; masked with `mask_key` if given (RFC 6455 §5.1: a client
    masks every frame, a server none)."""
    head = frame_header(opcode, len(payload), fin, mask_key)
    if mask_key is None:
        return bytearray(head) + payload
    out = bytearray(len(head) + len(payload))
    out[0:len(head)] = head
    return mask(payload, mask_key, out, len(head))


def close_payload(code=None, reason=""):
    """The payload of a close frame: nothing, or the code and a UTF-8 reason cut to fit the
    125 bytes of a control frame."""
    if code is None:
        return b""
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError("close code %d may not be sent" % code)
    data = reason.encode()
    while len(data) > 123:
        reason = reason[:-1]
        data = reason.encode()
    return struct.pack("!H", code) + data


def parse_close(payload):
    """(code, reason) of a received close frame; ProtocolError if it is malformed."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame of 1 byte")
    code = struct.unpack_from("!H", payload, 0)[0]
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close code %d is not allowed" % code)
    try:
        reason = bytes(payload[2:]).decode()
    except UnicodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8")
    return code, reason


class FrameParser:
    """Frames out of bytes as they come: `feed(data)`, then `next()` until it returns None.
    A frame is (fin, opcode, payload bytes or bytearray). Refuses what a client must not
    accept (ProtocolError): reserved bits, unknown opcodes, masked frames, long or fragmented
    control frames, and frames over `max_size` as soon as their header is in (1009), before
    the payload is. RAM: a payload longer than READ_SIZE that is not in yet gets its own
    buffer of its exact size, filled as it comes, so the working buffer stays small and a
    big frame is never copied (nor its buffer regrown) on its way."""

    def __init__(self, max_size=MAX_SIZE):
        self.max_size = max_size
        self.buffer = bytearray()
        self._big = None              # [fin, opcode, payload, bytes filled] of a big frame

    def feed(self, data):
        big = self._big
        if big is not None:
            payload, filled = big[2], big[3]
            n = min(len(data), len(payload) - filled)
            payload[filled:filled + n] = memoryview(data)[:n]
            big[3] = filled + n
            if n == len(data):
                return
            data = memoryview(data)[n:]
        self.buffer += data

    def next(self):
        big = self._big
        if big is not None:
            if big[3] < len(big[2]):
                return None
            self._big = None
            return big[0], big[1], big[2]
        buf = self.buffer
        have = len(buf)
        if have < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if opcode > OP_BINARY and opcode < OP_CLOSE or opcode > OP_PONG:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "unknown opcode %d" % opcode)
        if second & 0x80:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "masked frame from the server")
        size = second & 0x7F
        start = 2
        if size == 126:
            if have < 4:
                return None
            size = struct.unpack_from("!H", buf, 2)[0]
            start = 4
        elif size == 127:
            if have < 10:
                return None
            size = struct.unpack_from("!Q", buf, 2)[0]
            if size >> 63:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "frame length over 2**63")
            start = 10
        if opcode >= OP_CLOSE:
            if not fin:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if size > 125:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
        if size > self.max_size:
            raise ProtocolError(CLOSE_TOO_BIG, "frame of %d bytes, the limit is %d"
                                % (size, self.max_size))
        end = start + size
        if have < end:
            if size > READ_SIZE:
                payload = bytearray(size)
                payload[0:have - start] = memoryview(buf)[start:have]
                self._big = [fin, opcode, payload, have - start]
                self.buffer = bytearray()
            return None
        payload = bytes(memoryview(buf)[start:end])     # one copy, not two
        buf[0:end] = b""
        return fin, opcode, payload


class ClientProtocol:
    """The client side of an open WebSocket, without I/O (the shape of `websockets`'
    protocol): `receive_data(bytes)` / `receive_eof()` in, `events` out (a list of
    (opcode, data): OP_TEXT str, OP_BINARY bytes, OP_PING / OP_PONG payloads), bytes to write
    from `data_to_send()`. Pings are answered and the close handshake done here; a server
    that breaks the protocol gets a close frame with the reason (1002, 1007, 1009) and the
    connection is CLOSED. Once CLOSED, `code`, `reason` and `clean` say how."""

    def __init__(self, max_size=MAX_SIZE):
        self.parser = FrameParser(max_size)
        self.max_size = max_size
        self.state = OPEN
        self.events = []
        self.out = bytearray()
        self.code = None
        self.reason = ""
        self.close_sent = False
        self.close_received = False
        self._opcode = None           # of the fragmented message being received
        self._parts = None

    @property
    def clean(self):
        """Both close frames went through (a normal end when `code` is in OK_CODES)."""
        return self.close_sent and self.close_received

    def closed_error(self):
        return ConnectionClosed(self.code, self.reason, self.clean and self.code in OK_CODES)

    # -------------------------------------------------------------- out
    def _send(self, opcode, payload, fin=True):
        self.out += build_frame(opcode, payload, fin, new_mask())

    def send_text(self, text):
        self._check_open()
        self._send(OP_TEXT, text.encode())

    def send_binary(self, data):
        self._check_open()
        self._send(OP_BINARY, data)

    def send_ping(self, data=b""):
        self._check_open()
        if len(data) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._send(OP_PING, data)

    def send_close(self, code=CLOSE_NORMAL, reason=""):
        """Start the closing handshake (nothing if it is under way or over)."""
        if self.state == OPEN:
            self._send(OP_CLOSE, close_payload(code, reason))
            self.close_sent = True
            self.state = CLOSING
            self.code, self.reason = code, reason

    def data_to_send(self):
        out, self.out = self.out, bytearray()
        return out

    def _check_open(self):
        if self.state != OPEN:
            raise self.closed_error()

    def fail(self, code, reason):
        """_Fail the WebSocket Connection_ (RFC 6455 §7.1.7): a close frame if ours is not
        out yet, then CLOSED; the shell drops the TCP connection."""
        if self.state == CLOSED:
            return
        if self.state == OPEN:
            self._send(OP_CLOSE, close_payload(code, reason))
            self.close_sent = True
        self.state = CLOSED
        self.code, self.reason = code, reason
        self.parser.buffer = bytearray()
        self._parts = None

    # -------------------------------------------------------------- in
    def receive_data(self, data):
        if self.state == CLOSED:
            return
        self.parser.feed(data)
        try:
            while self.state != CLOSED:
                frame = self.parser.next()
                if frame is None:
                    break
                self._frame(frame[0], frame[1], frame[2])
        except ProtocolError as error:
            self.fail(error.code, error.reason)

    def receive_eof(self):
        """The TCP connection ended: after a close frame that is the normal end, else 1006."""
        if self.state != CLOSED:
            self.state = CLOSED
            if not self.close_received:
                self.code, self.reason = CLOSE_ABNORMAL, "connection lost"
        self._parts = None

    def _frame(self, fin, opcode, payload):
        if opcode == OP_PING:
            if self.state == OPEN:
                self._send(OP_PONG, payload)       # RFC 6455 §5.5.3: the same payload
            self.events.append((OP_PING, payload))
        elif opcode == OP_PONG:
            self.events.append((OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code, reason = parse_close(payload)
            self.close_received = True
            if self.state == OPEN:
                # §5.5.1: answer with a close frame, echoing the code
                self._send(OP_CLOSE, close_payload(None if code == CLOSE_NO_STATUS else code))
                self.close_sent = True
            self.state = CLOSED
            self.code, self.reason = code, reason
        else:
            self._data(fin, opcode, payload)

    def _data(self, fin, opcode, payload):
        if opcode == OP_CONT:
            if self._parts is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            parts = self._parts
            if len(parts) + len(payload) > self.max_size:
                raise ProtocolError(CLOSE_TOO_BIG, "message over %d bytes" % self.max_size)
            parts += payload
            if not fin:
                return
            opcode, payload = self._opcode, parts
            self._opcode = self._parts = None
        elif self._parts is not None:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        elif not fin:
            self._opcode, self._parts = opcode, bytearray(payload)
            return
        if self.state != OPEN:
            return          # after our close frame the server may still send; not for us
        if opcode == OP_TEXT:
            try:
                payload = payload.decode()
            except UnicodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "text message is not UTF-8")
        else:
            payload = bytes(payload)
        self.events.append((opcode, payload))


# ------------------------------------------------------------------ the asyncio shell

class WebSocket:
    """An open client WebSocket over asyncio streams (from `connect`)."""

    def __init__(self, reader, writer, protocol, subprotocol, ping_interval=None,
                 ping_timeout=None):
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.subprotocol = subprotocol
        self._lock = asyncio.Lock()
        self._reading = False
        self._done = asyncio.Event()        # the TCP connection is closed
        self._pong = asyncio.Event()
        self._writing = None                # the task of send_soon()
        self._keepalive = None
        if ping_interval:
            self._keepalive = asyncio.create_task(self._keep_alive(ping_interval,
                                                                   ping_timeout))

    @property
    def closed(self):
        return self.protocol.state == CLOSED

    # -------------------------------------------------------------- out
    async def send(self, message):
        """Send a text (str) or binary (bytes) message."""
        self.write(message)
        await self.flush()

    def write(self, message):
        """Queue a message; it leaves with the next `flush()` (or `send`)."""
        if isinstance(message, str):
            self.protocol.send_text(message)
        else:
            self.protocol.send_binary(message)

    def send_soon(self, message):
        """Queue a message and see that a task writes it out: for callers that cannot wait
        (one task per connection, not one per message)."""
        self.write(message)
        writing = self._writing
        if writing is None or writing.done():
            self._writing = asyncio.create_task(self._write_out())

    async def _write_out(self):
        try:
            await self.flush()
        except ConnectionClosed:
            pass

    async def ping(self, data=b""):
        self.protocol.send_ping(data)
        await self.flush()

    async def flush(self):
        """Write what the protocol has to send, also what is queued meanwhile; returns
        once nothing is left."""
        async with self._lock:
            while True:
                data = self.protocol.data_to_send()
                if not data or self._done.is_set():    # nothing, or nowhere to write it
                    return
                try:
                    self.writer.write(data)
                    await self.writer.drain()
                except (OSError, ValueError):       # ValueError: MicroPython's TLS
                    self.protocol.receive_eof()
                    await self._finish()
                    raise self.protocol.closed_error()

    # -------------------------------------------------------------- in
    async def recv(self):
        """The next message: str (text) or bytes (binary); ConnectionClosed once closed."""
        protocol = self.protocol
        events = protocol.events
        while True:
            while events:
                opcode, data = events.pop(0)
                if opcode == OP_TEXT or opcode == OP_BINARY:
                    return data
                if opcode == OP_PONG:
                    self._pong.set()
            if protocol.out:                       # pongs, our close frame
                try:
                    await self.flush()
                except ConnectionClosed:
                    pass
            if protocol.state == CLOSED:
                await self._finish()
                raise protocol.closed_error()
            self._reading = True
            try:
                data = await self.reader.read(READ_SIZE)
            except (OSError, ValueError):           # ValueError: MicroPython's TLS
                data = b""
            finally:
                self._reading = False
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()

    def __aiter__(self):
        return self

    async def __anext__(self):
        """Like `websockets`: iteration ends on a normal closure, raises on any other."""
        try:
            return await self.recv()
        except ConnectionClosed as closed:
            if closed.ok:
                raise StopAsyncIteration
            raise

    # -------------------------------------------------------------- closing
    async def close(self, code=CLOSE_NORMAL, reason=""):
        """The closing handshake: our close frame, the server's (read here unless a task is
        in recv(), which then sees it), then the TCP connection closes. Bounded by
        CLOSE_TIMEOUT_S; never raises for a connection that is already gone."""
        try:
            self.protocol.send_close(code, reason)
            await self.flush()
            if not self._done.is_set():
                if self._reading:
                    await asyncio.wait_for(self._done.wait(), CLOSE_TIMEOUT_S)
                else:
                    await asyncio.wait_for(self._read_to_close(), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, WebSocketError, OSError):
            pass
        finally:                # also on MemoryError or cancellation: the socket is closed
            await self._finish()

    async def _read_to_close(self):
        try:
            while True:
                await self.recv()
        except ConnectionClosed:
            pass

    async def _finish(self):
        if self._done.is_set():
            return
        self._done.set()
        if self.protocol.state != CLOSED:
            self.protocol.receive_eof()
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None and keepalive is not asyncio.current_task():
            keepalive.cancel()
        await _close_stream(self.writer)

    async def _keep_alive(self, interval, timeout):
        """A ping every `interval` s; no pong within `timeout` s fails the connection (1011),
        as `websockets`' keepalive does: a dead link is noticed without traffic."""
        try:
            while self.protocol.state == OPEN:
                await asyncio.sleep(interval)
                self._pong.clear()
                await self.ping()
                try:
                    await asyncio.wait_for(self._pong.wait(), timeout or interval)
                except asyncio.TimeoutError:
                    self.protocol.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
                    try:
                        await self.flush()
                    except ConnectionClosed:
                        pass
                    await self._finish()
                    return
        except (ConnectionClosed, OSError):
            pass


async def _close_stream(writer):
    writer.close()                      # MicroPython: a no-op; wait_closed() closes
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)
    except asyncio.TimeoutError:        # a TLS shutdown that hangs: closed anyway
        pass
    except Exception:                   # failed, or no heap for wait_for's task: once more
        try:                            # without (MicroPython closes at once)
            await writer.wait_closed()
        except Exception:
            pass


async def connect(url, subprotocols, headers=None, ssl=None, max_size=MAX_SIZE,
                  open_timeout=OPEN_TIMEOUT_S, ping_interval=None, ping_timeout=None):
    """Open a WebSocket to `url`, asking for `subprotocols` (one must be chosen); `headers`
    are added to the request (e.g. Authorization), `ssl` is the TLS context for wss://.
    Raises InvalidURI, HandshakeError, OSError, asyncio.TimeoutError (after `open_timeout`
    seconds)."""
    secure, host, port, resource = parse_url(url)
    if ssl and not secure:
        raise InvalidURI("a TLS context given for %s (ws://)" % url)
    if open_timeout:
        return await asyncio.wait_for(
            _open(secure, host, port, resource, subprotocols, headers, ssl, max_size,
                  ping_interval, ping_timeout), open_timeout)
    return await _open(secure, host, port, resource, subprotocols, headers, ssl, max_size,
                       ping_interval, ping_timeout)


async def _open(secure, host, port, resource, subprotocols, headers, ssl, max_size,
                ping_interval, ping_timeout):
    key = new_key()
    request = handshake_request(host, port, resource, key, subprotocols, headers, secure)
    reader, writer = await asyncio.open_connection(host, port, ssl=(ssl or True) if secure
                                                   else None)
    try:
        writer.write(request)
        await writer.drain()
        head = bytearray()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise HandshakeError("connection closed during the handshake"
                                     if head else "no answer to the handshake")
            head += data
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(head) > MAX_HEADER:
                raise HandshakeError("response head over %d bytes" % MAX_HEADER)
        subprotocol = check_response(bytes(head[:end]), key, subprotocols)
        protocol = ClientProtocol(max_size)
        if len(head) > end + 4:                  # frames right behind the 101
            protocol.receive_data(head[end + 4:])
        return WebSocket(reader, writer, protocol, subprotocol, ping_interval, ping_timeout)
    except BaseException as error:
        await _close_stream(writer)
        if isinstance(error, ValueError) and not isinstance(error, OSError):
            # MicroPython's TLS (mbedTLS) reports a certificate it refuses as ValueError;
            # CPython's ssl.SSLCertVerificationError is an OSError: make it one everywhere
            raise OSError("TLS: " + (str(error).strip() or "handshake failed"))
        raise

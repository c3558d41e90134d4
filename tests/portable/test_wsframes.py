"""agent/wsclient.py's sans-I/O core: URL, handshake, frames, the client protocol (RFC 6455),
fed with bytes, no sockets. Portable: also runs under MicroPython (tests/mp_run.py)."""
import struct

from agent import wsclient as ws
from agent.wsclient import (
    CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSED, CLOSING, OP_BINARY,
    OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ClientProtocol, ConnectionClosed,
    FrameParser, HandshakeError, InvalidURI, ProtocolError, build_frame, mask,
)

KEY = b"\x37\xfa\x21\x3d"


def raises(kind, fn, *args):
    try:
        fn(*args)
    except kind as error:
        return error
    raise AssertionError("%s not raised" % kind.__name__)


def server_frame(opcode, payload=b"", fin=True, rsv=0, masked=False, length=None):
    """A frame as a server sends it (unmasked), or a broken one."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if masked:
        return head + KEY + bytes(mask(payload, KEY))
    return head + payload


def client_frames(data):
    """[(fin, opcode, payload)] of what the client wrote, checking every frame is masked."""
    data = bytes(data)
    frames = []
    while data:
        first, second = data[0], data[1]
        assert second & 0x80, "client frame not masked"
        size, start = second & 0x7F, 2
        if size == 126:
            size, start = struct.unpack_from("!H", data, 2)[0], 4
        elif size == 127:
            size, start = struct.unpack_from("!Q", data, 2)[0], 10
        key = data[start:start + 4]
        payload = bytes(mask(data[start + 4:start + 4 + size], key))
        frames.append((bool(first & 0x80), first & 0x0F, payload))
        data = data[start + 4 + size:]
    return frames


def protocol_after(*frames, max_size=ws.MAX_SIZE):
    protocol = ClientProtocol(max_size)
    for frame in frames:
        protocol.receive_data(frame)
    return protocol


def messages(protocol):
    return [data for opcode, data in protocol.events if opcode in (OP_TEXT, OP_BINARY)]


# ------------------------------------------------------------------ masking and building

def test_mask_matches_the_rfc_example_and_undoes_itself():
    # RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d
    assert bytes(mask(b"Hello", KEY)) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert bytes(mask(mask(b"Hello", KEY), KEY)) == b"Hello"
    assert bytes(mask(b"", KEY)) == b""


def test_mask_of_long_and_odd_lengths_equals_the_bytewise_definition():
    for size in (1, 3, 4, 255, 256, 257, 1000, 1027):
        data = bytes((i * 7 + 3) & 0xFF for i in range(size))
        expected = bytes(data[i] ^ KEY[i % 4] for i in range(size))
        assert bytes(mask(data, KEY)) == expected, size


def test_the_client_masks_every_frame_with_a_fresh_key():
    protocol = ClientProtocol()
    protocol.send_text("same")
    protocol.send_text("same")
    out = bytes(protocol.data_to_send())
    assert client_frames(out) == [(True, OP_TEXT, b"same")] * 2
    assert out[2:6] != out[12:16]                 # two random keys (2**-32 to fail)


def test_length_encodings_at_125_126_65535_and_65536():
    # headers only: a 64 KB payload does not fit a fragmented MicroPython test heap
    for size, marker, head in ((0, 0, 2), (125, 125, 2), (126, 126, 4), (65535, 126, 4),
                               (65536, 127, 10), (2 ** 32, 127, 10)):
        for key in (None, KEY):
            header = ws.frame_header(OP_BINARY, size, mask_key=key)
            assert len(header) == head + (0 if key is None else 4), size
            assert header[0] == 0x80 | OP_BINARY and header[1] & 0x7F == marker, size
            assert bool(header[1] & 0x80) == (key is not None)
            if marker == 126:
                assert struct.unpack_from("!H", header, 2)[0] == size
            elif marker == 127:
                assert struct.unpack_from("!Q", header, 2)[0] == size
            if key is not None:
                assert header[-4:] == KEY
    assert ws.frame_header(OP_TEXT, 5, fin=False)[0] == OP_TEXT
    for size in (0, 1, 125, 126, 1000):
        payload = bytes(i & 0xFF for i in range(size))
        frame = build_frame(OP_BINARY, payload, mask_key=KEY)
        assert frame[:-size or None] == ws.frame_header(OP_BINARY, size, mask_key=KEY)
        assert client_frames(frame) == [(True, OP_BINARY, payload)]
        assert build_frame(OP_BINARY, payload) == ws.frame_header(OP_BINARY, size) + payload


# ------------------------------------------------------------------ parsing

def test_frames_of_every_length_boundary_parse_even_byte_by_byte():
    for size in (0, 1, 125, 126, 127):
        payload = bytes(i & 0xFF for i in range(size))
        parser = FrameParser()
        frame = build_frame(OP_BINARY, payload)
        for i in range(len(frame)):
            assert parser.next() is None
            parser.feed(frame[i:i + 1])
        assert parser.next() == (True, OP_BINARY, payload), size
        assert parser.next() is None and len(parser.buffer) == 0


def test_a_64_bit_length_parses_and_one_over_the_limit_is_refused():
    parser = FrameParser(max_size=65535)
    parser.feed(ws.frame_header(OP_TEXT, 65536))            # 64 bits: 65536, one too many
    error = raises(ProtocolError, parser.next)
    assert error.code == CLOSE_TOO_BIG and "65536 bytes" in error.reason
    # the 64-bit form of a short length (not the shortest form, still a valid length)
    parser = FrameParser()
    parser.feed(struct.pack("!BBQ", 0x80 | OP_TEXT, 127, 300) + b"y" * 300)
    assert parser.next() == (True, OP_TEXT, b"y" * 300)


def test_a_big_frame_fills_its_own_buffer_piece_by_piece():
    payload = bytes(i & 0xFF for i in range(3000))            # over READ_SIZE
    data = bytes(build_frame(OP_BINARY, payload)) + bytes(build_frame(OP_TEXT, b"next"))
    parser = FrameParser()
    frames = []
    for start in range(0, len(data), 7):
        parser.feed(data[start:start + 7])
        frame = parser.next()
        while frame is not None:
            frames.append(frame)
            frame = parser.next()
    assert frames == [(True, OP_BINARY, payload), (True, OP_TEXT, b"next")]
    assert len(parser.buffer) == 0


def test_several_frames_in_one_read_all_come_out():
    parser = FrameParser()
    parser.feed(build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_PING, b"p")
                + build_frame(OP_CONT, b"b"))
    assert parser.next() == (False, OP_TEXT, b"a")
    assert parser.next() == (True, OP_PING, b"p")
    assert parser.next() == (True, OP_CONT, b"b")
    assert parser.next() is None


def test_what_a_client_must_refuse_is_a_protocol_error():
    cases = (
        (server_frame(OP_TEXT, b"x", masked=True), "masked"),
        (server_frame(OP_TEXT, b"x", rsv=0x40), "reserved"),
        (server_frame(0x3, b"x"), "opcode"),
        (server_frame(0xB, b"x"), "opcode"),
        (server_frame(OP_PING, b"x" * 126), "125"),
        (server_frame(OP_PING, b"x", fin=False), "fragmented control"),
        (server_frame(OP_BINARY, b"", length=2 ** 63), "2**63"),
    )
    for data, why in cases:
        parser = FrameParser()
        parser.feed(data)
        error = raises(ProtocolError, parser.next)
        assert error.code == CLOSE_PROTOCOL_ERROR and why in error.reason, (why, error.reason)


def test_an_oversized_frame_is_refused_from_its_header_alone():
    parser = FrameParser(max_size=1000)
    parser.feed(server_frame(OP_BINARY, length=1001)[:4])      # header only, no payload
    error = raises(ProtocolError, parser.next)
    assert error.code == CLOSE_TOO_BIG
    parser = FrameParser(max_size=1000)
    parser.feed(server_frame(OP_BINARY, bytes(1000)))
    assert parser.next()[2] == bytes(1000)
    big = FrameParser(max_size=2 ** 20)
    big.feed(server_frame(OP_BINARY, length=2 ** 40)[:10])
    assert raises(ProtocolError, big.next).code == CLOSE_TOO_BIG


# ------------------------------------------------------------------ the protocol

def test_text_and_binary_messages_come_out_as_str_and_bytes():
    protocol = protocol_after(server_frame(OP_TEXT, "h\u00e9".encode()),
                              server_frame(OP_BINARY, b"\x00\xff"))
    assert messages(protocol) == ["h\u00e9", b"\x00\xff"]
    assert protocol.data_to_send() == bytearray()


def test_fragments_are_reassembled_with_control_frames_in_between():
    protocol = protocol_after(
        server_frame(OP_TEXT, b"[2,", fin=False),
        server_frame(OP_PING, b"ping-1"),
        server_frame(OP_CONT, b'"1",', fin=False),
        server_frame(OP_PONG, b"pong"),
        server_frame(OP_CONT, b'"Heartbeat",{}]'))
    assert messages(protocol) == ['[2,"1","Heartbeat",{}]']
    assert (OP_PING, b"ping-1") in protocol.events and (OP_PONG, b"pong") in protocol.events
    # the ping is answered at once, with its payload, in a masked pong
    assert client_frames(protocol.data_to_send()) == [(True, OP_PONG, b"ping-1")]


def test_a_text_message_split_inside_a_utf8_character_is_whole_again():
    data = "\u20ac".encode()                     # 3 bytes
    protocol = protocol_after(server_frame(OP_TEXT, data[:1], fin=False),
                              server_frame(OP_CONT, data[1:]))
    assert messages(protocol) == ["\u20ac"]


def failed(protocol, code):
    assert protocol.state == CLOSED and protocol.code == code, (protocol.state, protocol.code)
    frames = client_frames(protocol.data_to_send())
    assert len(frames) == 1 and frames[0][1] == OP_CLOSE
    assert struct.unpack("!H", frames[0][2][:2])[0] == code
    error = protocol.closed_error()
    assert isinstance(error, ConnectionClosed) and error.code == code and not error.ok
    return frames[0][2][2:].decode()


def test_fragmentation_errors_fail_the_connection_with_1002():
    reason = failed(protocol_after(server_frame(OP_CONT, b"x")), CLOSE_PROTOCOL_ERROR)
    assert "continuation" in reason
    reason = failed(protocol_after(server_frame(OP_TEXT, b"a", fin=False),
                                   server_frame(OP_TEXT, b"b")), CLOSE_PROTOCOL_ERROR)
    assert "before the last one ended" in reason
    failed(protocol_after(server_frame(OP_TEXT, b"x", masked=True)), CLOSE_PROTOCOL_ERROR)


def test_an_oversized_message_fails_with_1009_also_when_fragmented():
    failed(protocol_after(server_frame(OP_TEXT, b"x" * 101), max_size=100), CLOSE_TOO_BIG)
    protocol = protocol_after(server_frame(OP_TEXT, b"x" * 60, fin=False),
                              server_frame(OP_CONT, b"x" * 60), max_size=100)
    assert "message over 100 bytes" in failed(protocol, CLOSE_TOO_BIG)
    assert messages(protocol) == []
    protocol = protocol_after(server_frame(OP_TEXT, b"x" * 50, fin=False),
                              server_frame(OP_CONT, b"x" * 50), max_size=100)
    assert messages(protocol) == ["x" * 100]


def test_text_that_is_not_utf8_fails_with_1007():
    failed(protocol_after(server_frame(OP_TEXT, b"\xff\xfe")), CLOSE_INVALID_DATA)


def test_nothing_is_parsed_after_a_failure():
    protocol = protocol_after(server_frame(OP_CONT, b"x"), server_frame(OP_TEXT, b"late"))
    assert messages(protocol) == [] and protocol.code == CLOSE_PROTOCOL_ERROR


def test_a_close_from_the_server_is_answered_with_its_code():
    protocol = protocol_after(server_frame(OP_TEXT, b"last"),
                              server_frame(OP_CLOSE, struct.pack("!H", 1001) + b"going away"))
    assert messages(protocol) == ["last"]
    assert protocol.state == CLOSED and protocol.clean
    assert (protocol.code, protocol.reason) == (1001, "going away")
    assert client_frames(protocol.data_to_send()) == [(True, OP_CLOSE, struct.pack("!H", 1001))]
    error = protocol.closed_error()
    assert error.ok and error.code == 1001 and "going away" in str(error)
    assert raises(ConnectionClosed, protocol.send_text, "too late").code == 1001


def test_an_empty_close_is_1005_and_answered_empty():
    protocol = protocol_after(server_frame(OP_CLOSE))
    assert protocol.code == ws.CLOSE_NO_STATUS and protocol.closed_error().ok
    assert client_frames(protocol.data_to_send()) == [(True, OP_CLOSE, b"")]


def test_malformed_close_frames_fail_the_connection():
    failed(protocol_after(server_frame(OP_CLOSE, b"\x03")), CLOSE_PROTOCOL_ERROR)
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        failed(protocol_after(server_frame(OP_CLOSE, struct.pack("!H", code))),
               CLOSE_PROTOCOL_ERROR)
    failed(protocol_after(server_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff")),
           CLOSE_INVALID_DATA)
    for code in (1000, 1003, 1007, 1011, 1014, 3000, 4999):
        protocol = protocol_after(server_frame(OP_CLOSE, struct.pack("!H", code)))
        assert protocol.code == code and protocol.clean


def test_our_close_then_theirs_is_a_clean_close():
    protocol = ClientProtocol()
    protocol.send_close(1000, "done")
    assert protocol.state == CLOSING
    assert client_frames(protocol.data_to_send()) == [
        (True, OP_CLOSE, struct.pack("!H", 1000) + b"done")]
    assert raises(ConnectionClosed, protocol.send_text, "x").code == 1000
    protocol.send_close(1000)                      # once only
    assert protocol.data_to_send() == bytearray()
    # the server may still send data before its close: not delivered, but parsed
    protocol.receive_data(server_frame(OP_TEXT, b"in flight")
                          + server_frame(OP_PING, b"p")
                          + server_frame(OP_CLOSE, struct.pack("!H", 1000)))
    assert messages(protocol) == [] and protocol.data_to_send() == bytearray()   # no pong
    assert protocol.state == CLOSED and protocol.clean and protocol.closed_error().ok


def test_the_tcp_connection_ending_without_a_close_frame_is_1006():
    protocol = protocol_after(server_frame(OP_TEXT, b"a", fin=False))
    protocol.receive_eof()
    error = protocol.closed_error()
    assert error.code == ws.CLOSE_ABNORMAL and not error.ok
    protocol = ClientProtocol()
    protocol.send_close()
    protocol.receive_eof()                          # no answer to our close
    assert protocol.code == ws.CLOSE_ABNORMAL and not protocol.closed_error().ok


def test_close_payloads_fit_a_control_frame_and_only_valid_codes_are_sent():
    payload = ws.close_payload(1000, "\u00e9" * 100)
    assert len(payload) <= 125 and payload[2:].decode() == "\u00e9" * 61
    assert ws.close_payload() == b""
    for code in (999, 1004, 1005, 1006, 1015, 5000):
        raises(ValueError, ws.close_payload, code)
    raises(ValueError, ClientProtocol().send_ping, b"x" * 126)


# ------------------------------------------------------------------ URL and handshake

def test_urls():
    assert ws.parse_url("ws://csms.example/ocpp/CP1") == (False, "csms.example", 80, "/ocpp/CP1")
    assert ws.parse_url("wss://h:9443/a?b=c") == (True, "h", 9443, "/a?b=c")
    assert ws.parse_url("ws://h") == (False, "h", 80, "/")
    assert ws.parse_url("ws://h?x=1") == (False, "h", 80, "/?x=1")
    assert ws.parse_url("ws://[::1]:9000/p") == (False, "::1", 9000, "/p")
    for bad in ("http://h/", "ws://", "ws://:80/", "ws://h:0/", "ws://h:x/", "ws://u@h/",
                "ws://[::1]x/"):
        raises(InvalidURI, ws.parse_url, bad)


def test_accept_key_of_the_rfc_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert len(ws.new_key()) == 24 and ws.new_key() != ws.new_key()


def test_the_upgrade_request():
    request = ws.handshake_request("h", 9000, "/ocpp/CP1", "KEY", ["ocpp1.6"],
                                   {"Authorization": "Basic eDp5"}).decode()
    lines = request.split("\r\n")
    assert lines[0] == "GET /ocpp/CP1 HTTP/1.1" and request.endswith("\r\n\r\n")
    for line in ("Host: h:9000", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: KEY", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Protocol: ocpp1.6", "Authorization: Basic eDp5"):
        assert line in lines, line
    assert "Host: h\r\n" in ws.handshake_request("h", 443, "/", "K", [], secure=True).decode()
    assert "Host: [::1]:80\r\n" in ws.handshake_request("::1", 80, "/", "K", [], None,
                                                        True).decode()
    raises(ValueError, ws.handshake_request, "h", 80, "/", "K", [], {"X": "a\r\nB: c"})


def response(status="101 Switching Protocols", key="KEY", protocol="ocpp1.6", extra=()):
    lines = ["HTTP/1.1 " + status, "Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Accept: " + ws.accept_key(key))
    if protocol is not None:
        lines.append("Sec-WebSocket-Protocol: " + protocol)
    return "\r\n".join(lines + list(extra)).encode()


def test_a_good_response_gives_the_chosen_subprotocol():
    assert ws.check_response(response(), "KEY", ["ocpp1.6"]) == "ocpp1.6"
    assert ws.check_response(response(protocol="ocpp2.0.1"), "KEY",
                             ["ocpp1.6", "ocpp2.0.1"]) == "ocpp2.0.1"
    head = b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n" \
           b"sec-websocket-accept: " + ws.accept_key("K").encode() + \
           b"\r\nsec-websocket-protocol: ocpp1.6"
    assert ws.check_response(head, "K", ["ocpp1.6"]) == "ocpp1.6"


def test_bad_responses_say_what_is_wrong():
    cases = (
        (response("401 Unauthorized"), "HTTP 401 Unauthorized", 401),
        (response("200 OK"), "HTTP 200", 200),
        (response(key="OTHER"), "Sec-WebSocket-Accept", 101),
        (response(key=None), "Sec-WebSocket-Accept", 101),
        (response(protocol=None), "no subprotocol", 101),
        (response(protocol="ocpp2.0.1"), "chose subprotocol ocpp2.0.1", 101),
        (response(extra=["Sec-WebSocket-Extensions: permessage-deflate"]), "extensions", 101),
        (response().replace(b"Upgrade: websocket", b"Upgrade: h2c"), "Upgrade", 101),
        (response().replace(b"Connection: Upgrade", b"Connection: close"), "Connection", 101),
        (b"SSH-2.0-OpenSSH_9.6", "not an HTTP response", None),
        (b"\xff\xfe garbage", "not an HTTP response", None),
        (b"HTTP/1.1 abc Nope", "not an HTTP response", None),
        (response(extra=["no colon here"]), "bad header line", None),
    )
    for head, why, status in cases:
        error = raises(HandshakeError, ws.check_response, head, "KEY", ["ocpp1.6"])
        assert why in str(error) and error.status == status, (why, str(error), error.status)

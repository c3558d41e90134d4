"""An RS-485 line between two pseudo-terminals, with the timing of a real serial line (CPython).

A pty ignores the baud rate: whatever a program writes arrives at once, so an RTU exchange
over a bare pty takes microseconds instead of the ~20 ms it takes on a 9600 Bd wire
(spec/libraries.md §3). `Rs485Line` opens two pty pairs (`os.openpty()` twice; socat is not
needed) and runs a relay thread between their master ends:

    device (e.g. the simulated meters' Modbus server) opens `device_path`
    client (the agent's pymodbus client, `evse meter read`, a benchmark) opens `client_path`

With `pace=True` each byte takes its wire time: start bit + data bits + parity bit (if any) +
stop bits, at the configured baud rate, and the two directions share one line clock because
two-wire RS-485 is half duplex: nobody receives a reply before the request has left the wire.
A frame of n bytes therefore arrives n character times after its first byte was sent, one
chunk per scheduling tick (about 1 ms, so the receiver sees the frame grow as on a UART).
With `pace=False` bytes are copied as they come.

Usable from synchronous and asyncio code alike (the relay is a thread):

    with Rs485Line(baud=9600, parity="N", stopbits=1) as line:
        ...  # serve on line.device_path, open line.client_path with pyserial
    line.wire_time(8 + 9)     # seconds the 17 bytes of a 2-register FC04 exchange take

The relay keeps its own descriptor on both slave ends open and raw, so a client that closes
and reopens its port (pymodbus reconnecting) finds the line as it left it, and no echo or
newline translation of the tty layer ever touches a frame.
"""
import collections
import os
import select
import threading
import time
import tty

PARITY_BITS = {"N": 0, "E": 1, "O": 1, "M": 1, "S": 1}
TICK_S = 0.001            # relay wake-up granularity while bytes are in flight
READ_CHUNK = 4096


def character_bits(bytesize=8, parity="N", stopbits=1):
    """Bits on the wire per character: start + data + parity + stop (RTU 8N1 = 10, 8E1 = 11)."""
    if parity not in PARITY_BITS:
        raise ValueError("parity must be one of %s, got %r" % ("".join(PARITY_BITS), parity))
    if stopbits not in (1, 2):
        raise ValueError("stopbits must be 1 or 2, got %r" % (stopbits,))
    return 1 + bytesize + PARITY_BITS[parity] + stopbits


class Rs485Line:
    """Two pty pairs and a pacing relay; see the module docstring."""

    def __init__(self, baud=9600, parity="N", stopbits=1, bytesize=8, pace=True):
        if baud <= 0:
            raise ValueError("baud must be positive, got %r" % (baud,))
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize
        self.pace = pace
        self.char_time = character_bits(bytesize, parity, stopbits) / baud
        self.device_path = self.client_path = None
        self.bytes_relayed = [0, 0]          # device->client, client->device
        self._fds = []
        self._thread = None
        self._wake = None

    def wire_time(self, nbytes):
        """Seconds `nbytes` characters occupy the line at this baud rate and frame format."""
        return nbytes * self.char_time

    # -- lifetime -----------------------------------------------------------------------

    def start(self):
        device_master, device_slave = os.openpty()
        client_master, client_slave = os.openpty()
        wake_read, wake_write = os.pipe()
        self._fds = [device_master, device_slave, client_master, client_slave,
                     wake_read, wake_write]
        for fd in (device_slave, client_slave):
            tty.setraw(fd)
        for fd in (device_master, client_master, wake_read):
            os.set_blocking(fd, False)
        self.device_path = os.ttyname(device_slave)
        self.client_path = os.ttyname(client_slave)
        self._wake = wake_write
        self._thread = threading.Thread(
            target=self._relay, args=(device_master, client_master, wake_read),
            name="rs485 %s<->%s" % (self.device_path, self.client_path), daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        os.write(self._wake, b"x")
        self._thread.join()
        self._thread = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the relay ----------------------------------------------------------------------

    def _relay(self, device_master, client_master, wake_read):
        # per direction: destination fd and a FIFO of (due time, byte chunk) still on the wire
        targets = {device_master: client_master, client_master: device_master}
        index = {device_master: 0, client_master: 1}
        in_flight = {device_master: collections.deque(), client_master: collections.deque()}
        unwritten = {device_master: b"", client_master: b""}
        line_free_at = 0.0
        while True:
            now = time.monotonic()
            due = [chunks[0][0] for chunks in in_flight.values() if chunks]
            pending = any(unwritten.values())
            if pending:
                timeout = TICK_S
            elif due:
                timeout = max(0.0, min(due) - now)
            else:
                timeout = None
            readable, _, _ = select.select(
                [device_master, client_master, wake_read], [], [], timeout)
            if wake_read in readable:
                return
            now = time.monotonic()
            for source in (device_master, client_master):
                if source not in readable:
                    continue
                try:
                    data = os.read(source, READ_CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:      # EIO: no slave open; our own slave fds prevent it
                    continue
                if not self.pace:
                    unwritten[source] += data
                    continue
                # half duplex: a byte starts when the line is free, one character time each
                start = max(now, line_free_at)
                for offset in range(len(data)):
                    in_flight[source].append((start + (offset + 1) * self.char_time,
                                              data[offset:offset + 1]))
                line_free_at = start + len(data) * self.char_time
            now = time.monotonic()
            for source, chunks in in_flight.items():
                arrived = bytearray()
                while chunks and chunks[0][0] <= now:
                    arrived += chunks.popleft()[1]
                if arrived:
                    unwritten[source] += bytes(arrived)
            for source, data in unwritten.items():
                if not data:
                    continue
                try:
                    written = os.write(targets[source], data)
                except (BlockingIOError, InterruptedError):
                    written = 0
                except OSError:
                    written = len(data)          # nobody can ever read it: drop
                self.bytes_relayed[index[source]] += written
                unwritten[source] = data[written:]

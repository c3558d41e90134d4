"""machine.UART's interface over a serial device, for the MicroPython unix port.

The unix port has no machine.UART, but a bench PC has serial ports: a USB-RS485 adapter with
a real meter behind it, or a pty pair with a simulated meter (`evse meter serve --pty`). The
portable Modbus RTU master (hal/modbus_rtu.py) needs only `write(bytes)`, `any()` and
`read(n)`; this gives it those over the device file, so `boards/unix.toml` with a Modbus
[meter] reads a real meter on real MicroPython, the same code a microcontroller runs.

`any()` says whether bytes are waiting (select.poll), not how many: the unix port has no
FIONREAD, and a read of more bytes than have arrived would block (a device file opened by
the unix port cannot be made non-blocking). So `read(n)` takes one byte at a time while
poll says another is there: at most n, never waiting. MicroPython only (CPython keeps
setraw in `tty`).
"""
import select

import termios

# termios c_cflag bits (Linux, asm-generic/termbits.h): the unix port exports none of them
CSTOPB, PARENB, PARODD = 0o100, 0o400, 0o1000
CFLAG, ISPEED, OSPEED = 2, 4, 5          # indices in tcgetattr()'s list


def baud_constant(baud):
    """termios' speed constant for a baud rate; the unix port knows only some of them."""
    name = "B%d" % baud
    if not hasattr(termios, name):
        known = sorted(int(n[1:]) for n in dir(termios) if n[:1] == "B" and n[1:].isdigit())
        raise ValueError("%d Bd: this interpreter's termios knows only %s" % (
            baud, ", ".join(str(b) for b in known)))
    return getattr(termios, name)


class TtyUart:
    """A serial device as machine.UART: raw 8 data bits, the given parity and stop bits.

    A pty carries no line settings and refuses parity (EINVAL): `parity` "N" there."""

    def __init__(self, path, baud=9600, parity="N", stopbits=1):
        self.path = path
        try:
            self._file = open(path, "r+b", buffering=0)
        except OSError as error:
            # MicroPython's message names the errno alone ("[Errno 2] ENOENT")
            raise OSError("meter serial device %s: %s" % (path, error)) from None
        fd = self._file.fileno()
        try:
            termios.setraw(fd)
            attrs = termios.tcgetattr(fd)
            speed = baud_constant(baud)
            cflag = attrs[CFLAG] & ~(CSTOPB | PARENB | PARODD)
            if parity in ("E", "O"):
                cflag |= PARENB | (PARODD if parity == "O" else 0)
            if stopbits == 2:
                cflag |= CSTOPB
            attrs[CFLAG], attrs[ISPEED], attrs[OSPEED] = cflag, speed, speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except BaseException:
            self._file.close()
            raise
        self._poll = select.poll()
        self._poll.register(self._file, select.POLLIN)

    def write(self, data):
        return self._file.write(data)

    def any(self):
        return 1 if self._poll.poll(0) else 0

    def read(self, n):
        data = bytearray()
        while len(data) < n and self._poll.poll(0):
            data.extend(self._file.read(1))
        return bytes(data)

    def close(self):
        self._file.close()

    def __repr__(self):
        return "<TtyUart %s>" % self.path

"""The only module that knows CPython from MicroPython.

Everything else in `agent/` and the portable part of `hal/` imports time, constants and the
wake-up primitive from here, so the same files run on a Linux controller and on an MCU.
"""
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # noqa: F401  (folds integer constants at compile time on MCUs)
except ImportError:
    def const(value):
        return value

try:
    import asyncio
except ImportError:  # pragma: no cover - very old MicroPython builds
    import uasyncio as asyncio  # type: ignore


if MICROPYTHON:
    _last_ticks = time.ticks_ms()
    _elapsed = 0

    def monotonic_ms():
        """Milliseconds since start-up that never wrap (ticks_ms wraps after ~2**30 ms)."""
        global _last_ticks, _elapsed
        now = time.ticks_ms()
        _elapsed += time.ticks_diff(now, _last_ticks)
        _last_ticks = now
        return _elapsed

    class Waker:
        """Lets hardware events cut a timed sleep short (MicroPython: Event + wait_for_ms)."""

        def __init__(self):
            self._event = asyncio.Event()

        def wake(self):
            self._event.set()

        async def wait(self, timeout_ms):
            if not self._event.is_set():
                if timeout_ms is None:
                    await self._event.wait()
                elif timeout_ms > 0:
                    try:
                        await asyncio.wait_for_ms(self._event.wait(), timeout_ms)
                    except asyncio.TimeoutError:
                        pass
            self._event.clear()

else:
    def monotonic_ms():
        """Milliseconds from the interpreter's monotonic clock."""
        return time.monotonic_ns() // 1000000

    class Waker:
        """Lets hardware events cut a timed sleep short.

        CPython: one future and one timer handle per wait, far cheaper than
        `asyncio.wait_for(event.wait())`, which builds a task each time. The timer goes
        through `loop.call_at`, so a virtual-time loop drives it exactly like a real one.
        """

        def __init__(self):
            self._future = None
            self._pending = False

        def wake(self):
            self._pending = True
            future = self._future
            if future is not None and not future.done():
                future.set_result(None)

        async def wait(self, timeout_ms):
            if self._pending:
                self._pending = False
                return
            if timeout_ms is not None and timeout_ms <= 0:
                return
            loop = asyncio.get_running_loop()
            future = self._future = loop.create_future()
            timer = None
            if timeout_ms is not None:
                timer = loop.call_later(timeout_ms / 1000, _resolve, future)
            try:
                await future
            finally:
                self._future = None
                self._pending = False
                if timer is not None:
                    timer.cancel()


def _resolve(future):
    if not future.done():
        future.set_result(None)


def tls_client_context(ca_der):
    """A TLS client context that trusts only the DER certificates in `ca_der` and checks the
    server's certificate and name (security profile 2, spec/standards.md §5.6).
    MicroPython: its SSLContext verifies nothing unless told to, takes DER only, one
    certificate per call; its mbedTLS 3 has no TLS below 1.2. ValueError (MicroPython) or
    ssl.SSLError (CPython) for a certificate that does not load."""
    import ssl
    if MICROPYTHON:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.verify_mode = ssl.CERT_REQUIRED
        for der in ca_der:
            context.load_verify_locations(cadata=der)
        return context
    context = ssl.create_default_context(cadata=b"".join(ca_der))
    context.minimum_version = ssl.TLSVersion.TLSv1_2   # A00.FR.312: TLS 1.2 or higher
    return context


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


def gc_collect():
    try:
        import gc
        gc.collect()
    except ImportError:  # pragma: no cover
        pass

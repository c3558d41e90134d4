"""Virtual time for asyncio: the agent's own asyncio code, unchanged, runs hours in a second.

`VirtualTimeLoop` is a selector event loop whose clock only moves when every task is waiting:
the selector first polls real I/O without blocking (so sockets between tasks of this process,
e.g. the agent and the local CSMS, keep working), and only when nothing is ready does it jump
the clock to the next timer instead of sleeping. Everything written against `loop.time()`,
`asyncio.sleep`, `call_later` (our runtime, `websockets`' timeouts) sees consistent time.

The clock is kept in integer microseconds, so millisecond deadlines land exactly.
"""
import asyncio
import math
import selectors
import time


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self, clock):
        super().__init__()
        self._clock = clock

    def select(self, timeout=None):
        events = super().select(0)
        if events or timeout == 0:
            return events
        clock = self._clock
        if timeout is None:
            return super().select(None)      # nothing scheduled: only real I/O can come
        if clock.hold:
            # an answer is on its way from another process: while it is, virtual time runs
            # at the pace of real time, so a response timeout means as much as it would
            started = time.monotonic()
            events = super().select(min(timeout, 0.05))
            clock.advance_us(int((time.monotonic() - started) * 1_000_000))
            return events
        # ceil to whole microseconds (rounded first: 0.005 s * 1e6 is 5000.000000000001)
        clock.advance_us(math.ceil(round(timeout * 1_000_000, 3)))
        return []


class VirtualClock:
    def __init__(self):
        self.us = 0
        # how many are waiting for real (out-of-process, or real-time paced) I/O that
        # virtual time must not overtake: each holder adds 1 and takes it away again
        self.hold = 0

    def advance_us(self, delta):
        if delta > 0:
            self.us += delta


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self):
        self.clock = VirtualClock()
        super().__init__(_VirtualSelector(self.clock))

    def time(self):
        return self.clock.us / 1_000_000

    def time_ms(self):
        """Exact virtual milliseconds (int(time() * 1000) can land 1 ms short: 1.001 s)."""
        return self.clock.us // 1000


def run(coro, virtual=True):
    """Run `coro` to completion in virtual time (or in real time with virtual=False)."""
    if not virtual:
        return asyncio.run(coro)
    loop = VirtualTimeLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

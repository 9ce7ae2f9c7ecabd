"""Bounds CPU-heavy work (bcrypt) so it cannot take every server thread, or every second.

At most `slots` jobs run at once. A job that cannot start at once is admitted only
when its expected wait (the jobs ahead of it times the measured cost of one job,
shared among the slots) fits both `max_wait_seconds` and what the caller's deadline
leaves after the job itself, and fewer than `queue` wait already. Anything else is
refused at once with RESOURCE_EXHAUSTED and a `retry-after` hint: under a flood,
callers get a fast answer to retry on instead of a timeout. Waiters are served in
arrival order, and one that still finds no slot within its budget is refused the
same way.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from services.runtime import context
from services.runtime.errors import ResourceExhausted

T = TypeVar("T")

# How much each finished job moves the cost estimate: recent jobs matter most, since
# a job's wall time grows with what else the machine runs.
_COST_WEIGHT = 0.2


class CpuBusy(ResourceExhausted):
    """No CPU slot within the wait a caller may be asked to bear; retry after a while."""

    reason = "CPU_BUSY"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "the server is busy; retry later",
            metadata={"retry_after_seconds": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


class CpuLimiter:
    def __init__(
        self,
        slots: int,
        queue: int,
        *,
        max_wait_seconds: float = 0.5,
        initial_cost_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = slots
        self._queue = queue
        self._max_wait = max_wait_seconds
        self._cost = initial_cost_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        # One event per admitted waiter, oldest first; a finishing job hands its
        # slot to the oldest directly, so a newcomer cannot overtake it.
        self._waiters: deque[threading.Event] = deque()

    @property
    def cost_seconds(self) -> float:
        """The current estimate of one job's wall time."""
        return self._cost

    @property
    def waiting(self) -> int:
        """How many admitted calls wait for a slot now."""
        return len(self._waiters)

    def run(self, fn: Callable[[], T]) -> T:
        """`fn()` in a CPU slot; CpuBusy when no slot is free soon enough."""
        self._acquire()
        started = self._clock()
        try:
            return fn()
        finally:
            self._release(self._clock() - started)

    def _acquire(self) -> None:
        with self._lock:
            if self._running < self._slots and not self._waiters:
                self._running += 1
                return
            budget = self._wait_budget()
            expected = (len(self._waiters) + 1) * self._cost / self._slots
            if len(self._waiters) >= self._queue or expected > budget:
                raise self._busy()
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(budget):
            return
        with self._lock:
            if turn.is_set():  # handed a slot just as the wait ran out
                return
            self._waiters.remove(turn)
            raise self._busy()

    def _release(self, elapsed: float) -> None:
        with self._lock:
            self._cost += _COST_WEIGHT * (elapsed - self._cost)
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes on: _running unchanged
            else:
                self._running -= 1

    def _wait_budget(self) -> float:
        """The longest a new job may wait: the configured most, less if the deadline is near."""
        ctx = context.current()
        if ctx is None:
            return self._max_wait
        return max(min(self._max_wait, ctx.time_remaining() - self._cost), 0.0)

    def _busy(self) -> CpuBusy:
        """The refusal, telling the caller when the work queued now should be done."""
        backlog = (self._running + len(self._waiters)) * self._cost / self._slots
        seconds = max(1, math.ceil(backlog))
        context.advise_retry_after(seconds)
        return CpuBusy(seconds)

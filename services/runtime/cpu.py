"""Bounds CPU-heavy work (bcrypt) so it cannot take every server thread.

At most `slots` jobs run at once and at most `queue` wait; a call beyond that is
refused at once with RESOURCE_EXHAUSTED, and a wait never outlasts the caller's
deadline. Cheap calls keep the rest of the thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from services.runtime import context
from services.runtime.errors import DeadlineExceeded, ResourceExhausted

T = TypeVar("T")


class CpuLimiter:
    def __init__(self, slots: int, queue: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(slots + queue)

    def run(self, fn: Callable[[], T]) -> T:
        if not self._admitted.acquire(blocking=False):
            raise ResourceExhausted("the server is busy; retry later", reason="CPU_BUSY")
        try:
            ctx = context.current()
            timeout = ctx.time_remaining() if ctx is not None else None
            if not self._slots.acquire(timeout=timeout):
                raise DeadlineExceeded("the deadline passed while waiting for a CPU slot")
            try:
                return fn()
            finally:
                self._slots.release()
        finally:
            self._admitted.release()

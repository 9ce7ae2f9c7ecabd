"""Lookups of many callers in one call: while one call is in flight, the callers that
arrive wait for it to end and then go together, one call for all their keys.

Every protected call a service serves checks its caller's account with user-svc; one
round trip each (the client, Envoy's mesh listener, user-svc's server) cost more CPU
than a booking's own work. Batched, it is one round trip per batch. Nothing is
remembered: each answer comes from a call that started after its caller asked, so it
is as fresh as asking alone. A caller alone goes at once, with no wait.

The first caller leads: it makes the call, hands each member its answer, and hands the
lead to the first caller that arrived meanwhile. Each member waits no longer than its
own deadline; the call's deadline is the latest of its members'.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from services.runtime import context
from services.runtime.errors import DeadlineExceeded

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[Sequence[K], float, Sequence[str]], Mapping[K, V]]
"""The call: (unique keys, timeout in seconds, the members' request ids, each once,
the first member's first) to the answers for the keys found; a key left out has no
answer (None)."""


class _Member(Generic[K, V]):
    __slots__ = ("deadline", "done", "error", "key", "lead", "request_id", "value")

    def __init__(self, key: K, deadline: float, request_id: str) -> None:
        self.key = key
        self.deadline = deadline
        self.request_id = request_id
        self.done = threading.Event()
        self.lead = False  # handed the lead of the next batch
        self.value: V | None = None
        self.error: BaseException | None = None


class BatchLookup(Generic[K, V]):
    """`lookup(key)`: `key`'s answer from `fetch`, made together with whoever else asks
    while a call is in flight (at most `max_batch` keys a call).

    A failed call fails each of its members with the same exception (each maps it in
    its own request's context). `name` names the dependency in a member's
    DEADLINE_EXCEEDED when its own deadline passes first. `observe`, if given, is told
    each call's number of keys (a metric).
    """

    def __init__(
        self,
        fetch: Fetch[K, V],
        *,
        name: str,
        default_timeout: float,
        max_batch: int,
        margin: float,
        observe: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1 or default_timeout <= 0:
            raise ValueError("max_batch must be >= 1 and default_timeout > 0")
        self._fetch = fetch
        self._name = name
        self._default = default_timeout
        self._max = max_batch
        self._margin = margin
        self._observe = observe
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[_Member[K, V]] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """How many callers wait for the next call."""
        with self._lock:
            return len(self._pending)

    def __call__(self, key: K) -> V | None:
        member = self._member(key)
        with self._lock:
            lead = not self._busy
            if lead:
                self._busy = True
            else:
                self._pending.append(member)
        if lead or self._wait(member):
            self._lead(member)
        if member.error is not None:
            raise member.error
        return member.value

    def _member(self, key: K) -> _Member[K, V]:
        """The caller's deadline as the client interceptor would derive it."""
        timeout = self._default
        served = context.current()
        if served is not None:
            timeout = max(min(timeout, served.time_remaining() - self._margin), 0.001)
        return _Member(key, self._clock() + timeout, served.request_id if served else "")

    def _wait(self, member: _Member[K, V]) -> bool:
        """Waits for `member`'s answer, True when it was handed the lead instead."""
        if member.done.wait(max(member.deadline - self._clock(), 0.0)):
            return member.lead
        wake = None
        with self._lock:
            if member in self._pending:
                self._pending.remove(member)
            elif member.lead:  # handed the lead just as its time ran out: pass it on
                wake = self._next_leader()
        if wake is not None:
            wake.done.set()
        # Taken into a call in flight: its answer comes too late to use.
        raise DeadlineExceeded(f"{self._name} did not answer in time")

    def _lead(self, first: _Member[K, V]) -> None:
        with self._lock:
            batch = [first, *self._pending[: self._max - 1]]
            del self._pending[: self._max - 1]
        try:
            self._call(batch)
        finally:
            with self._lock:
                wake = self._next_leader()
            if wake is not None:
                wake.done.set()

    def _next_leader(self) -> _Member[K, V] | None:
        """The first waiting member, marked to lead; the lookup idles when none waits.
        Called with the lock held."""
        if not self._pending:
            self._busy = False
            return None
        leader = self._pending.pop(0)
        leader.lead = True
        return leader

    def _call(self, batch: list[_Member[K, V]]) -> None:
        keys = list(dict.fromkeys(member.key for member in batch))
        if self._observe is not None:
            self._observe(len(keys))
        timeout = max(max(member.deadline for member in batch) - self._clock(), 0.001)
        request_ids = list(dict.fromkeys(m.request_id for m in batch if m.request_id))
        try:
            # Outside any served call's context: the deadline is the batch's, not the
            # leader's alone (the client interceptor would cut it to the leader's).
            found = contextvars.Context().run(self._fetch, keys, timeout, request_ids)
        except Exception as err:  # noqa: BLE001 - not swallowed: each member raises it
            for member in batch:
                member.error = err
        else:
            for member in batch:
                member.value = found.get(member.key)
        for member in batch[1:]:
            member.done.set()

"""A short-lived memory of user accounts found live, for the booking hot path.

Every CreateBooking asks user-svc whether the caller's account still exists and is
active; under load that round trip (gRPC over mTLS through the mesh listener) cost more
CPU than the booking itself. An operator may trade exactness for that CPU: a positive
answer is then remembered for `ttl_seconds`, counted from before the question was asked,
so an account deleted or deactivated at time T is refused by every instance from
T + ttl_seconds on at the latest. The default is 0, remember nothing: the contract
refuses a dead account on every protected call at once. Negative answers and failures
are never remembered: a refused caller is asked about again every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from services.runtime.context import AccountLookup

DEFAULT_TTL_SECONDS = 0.0
DEFAULT_MAX_ENTRIES = 10_000


class LiveAccounts:
    """An `AccountLookup` that remembers `True` answers of `lookup` for `ttl_seconds`.

    Bounded: at most `max_entries` accounts are remembered; when full, the oldest
    entry goes first. A `ttl_seconds` of 0 remembers nothing.
    """

    def __init__(
        self,
        lookup: AccountLookup,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0 or max_entries < 1:
            raise ValueError("ttl_seconds must be >= 0 and max_entries >= 1")
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # user_id -> when the remembered answer stops counting; insertion order is age.
        self._live_until: dict[str, float] = {}

    def __call__(self, user_id: str) -> bool | None:
        asked_at = self._clock()
        with self._lock:
            until = self._live_until.get(user_id)
            if until is not None:
                if asked_at < until:
                    return True
                del self._live_until[user_id]
        active = self._lookup(user_id)
        if active is True and self._ttl > 0:
            self._remember(user_id, asked_at + self._ttl)
        return active

    def _remember(self, user_id: str, until: float) -> None:
        with self._lock:
            self._live_until.pop(user_id, None)
            while len(self._live_until) >= self._max:
                del self._live_until[next(iter(self._live_until))]
            self._live_until[user_id] = until

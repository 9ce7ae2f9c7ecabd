"""The failed-check counts behind VerifyPassword's limit, on each database user-svc runs on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from services.runtime.db import make_engine
from services.user_svc.attempts import GuessCounter, GuessLimits, TooManyFailedChecks

CALLER = "spiffe://airline.local/svc/auth-svc"


Make = Callable[..., GuessCounter]


@pytest.fixture
def counter(database_url: str) -> Iterator[Make]:
    """Makes counters on the test's database, each as a separate instance would (its own pool)."""
    engines: list[Engine] = []

    def make(clock: list[float], **limits: int) -> GuessCounter:
        engines.append(make_engine(database_url))
        made = GuessCounter(engines[-1], GuessLimits(**limits), clock=lambda: clock[0])
        made.create_schema()
        return made

    yield make
    for engine in engines:
        engine.dispose()


def test_concurrent_guesses_never_pass_the_limit_together(counter: Make) -> None:
    """Two counters (two instances) on one database, twenty guesses at once: five admitted."""
    clock = [1000.0]
    counters = [counter(clock, per_email=5, window_seconds=60) for _ in range(2)]

    def guess(i: int) -> bool:
        try:
            counters[i % 2].admit(CALLER, "target@example.com")
        except TooManyFailedChecks:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        admitted = list(pool.map(guess, range(20)))
    assert admitted.count(True) == 5


def test_the_next_window_starts_from_zero_and_retry_after_names_it(counter: Make) -> None:
    clock = [1000.0]  # 40 s into the window [960, 1020)
    guesses = counter(clock, per_email=1, window_seconds=60)
    guesses.admit(CALLER, "a@example.com")
    with pytest.raises(TooManyFailedChecks) as refused:
        guesses.admit(CALLER, "A@Example.com ")  # the same address, spelt otherwise
    assert refused.value.retry_after_seconds == 20
    clock[0] = 1020.0
    guesses.admit(CALLER, "a@example.com")


def test_giving_back_frees_the_count(counter: Make) -> None:
    guesses = counter([1000.0], per_email=1, window_seconds=60)
    guesses.give_back(guesses.admit(CALLER, "a@example.com"))
    guesses.admit(CALLER, "a@example.com")

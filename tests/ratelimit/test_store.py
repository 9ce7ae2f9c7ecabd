"""Counting in a real Redis: the Lua scripts decide and count atomically."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ratelimit.limits import Algorithm, Limit
from ratelimit.store import Counter, Unreachable, connect
from tests.ratelimit.redis_server import RedisServer
from tests.support import free_ports, wait_for_window_room


@pytest.fixture
def counter(redis_server: RedisServer) -> Iterator[Counter]:
    counting = Counter(connect(redis_server.url, 1.0))
    yield counting
    counting.close()


@pytest.fixture(autouse=True)
def _room_in_the_hour() -> None:
    """The limits here count per hour on Redis's clock: an hour ending between two calls
    of a test would reset its count."""
    wait_for_window_room(3600)


@pytest.fixture
def subject() -> str:
    """A client address no other test counts for."""
    return f"remote_address=10.0.0.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_calls_up_to_the_limit_are_counted_and_the_next_is_refused(
    counter: Counter, subject: str, algorithm: Algorithm
) -> None:
    limit = Limit("create_token", 3, 3600, algorithm)

    answers = [counter.hit("d", subject, limit, 1) for _ in range(4)]

    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.current for a in answers] == [1, 2, 3, 3]


def test_a_refused_call_is_not_counted(counter: Counter, subject: str) -> None:
    limit = Limit("create_token", 1, 3600)
    counter.hit("d", subject, limit, 1)

    refused = [counter.hit("d", subject, limit, 1) for _ in range(5)]

    assert {(a.allowed, a.current) for a in refused} == {(False, 1)}


def test_each_subject_and_each_limit_has_its_own_count(counter: Counter, subject: str) -> None:
    token, signup = Limit("create_token", 1, 3600), Limit("create_user", 1, 3600)
    assert counter.hit("d", subject, token, 1).allowed

    assert counter.hit("d", subject + "-other", token, 1).allowed
    assert counter.hit("d", subject, signup, 1).allowed
    assert not counter.hit("d", subject, token, 1).allowed


def test_concurrent_calls_never_count_past_the_limit(counter: Counter, subject: str) -> None:
    """Forty calls at once for a limit of ten: exactly ten are allowed."""
    limit = Limit("create_token", 10, 3600)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: counter.hit("d", subject, limit, 1), range(40)))

    assert sum(a.allowed for a in answers) == 10


def test_an_unreachable_redis_raises_unreachable() -> None:
    nobody = Counter(connect(f"redis://127.0.0.1:{free_ports(1)[0]}/0", 0.5))

    with pytest.raises(Unreachable):
        nobody.hit("d", "remote_address=10.0.0.1", Limit("x", 1, 60), 1)

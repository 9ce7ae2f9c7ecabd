"""The runtime's database helpers against real databases, as several instances use them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, select

from services.runtime.db import exclusive, make_engine, service_secret
from services.runtime.pagination import PageTokens

T = TypeVar("T")
INSTANCES = 6


@pytest.fixture
def engines(database_url: str) -> Iterator[list[Engine]]:
    """One engine per instance, as separate processes would have."""
    found = [make_engine(database_url) for _ in range(INSTANCES)]
    yield found
    for engine in found:
        engine.dispose()


def together(engines: list[Engine], work: Callable[[Engine], T]) -> list[T]:
    """Runs `work` once per engine on threads released at the same moment."""
    barrier = threading.Barrier(len(engines))

    def run(engine: Engine) -> T:
        barrier.wait(timeout=30)
        return work(engine)

    with ThreadPoolExecutor(max_workers=len(engines)) as pool:
        return list(pool.map(run, engines))


def test_instances_creating_the_page_token_secret_together_get_one(engines: list[Engine]) -> None:
    secrets = together(engines, lambda engine: service_secret(engine, "page_tokens"))
    assert len(secrets[0]) == 32
    assert set(secrets) == {secrets[0]}


def test_page_token_from_one_instance_decodes_at_another(engines: list[Engine]) -> None:
    first, second = (PageTokens(service_secret(e, "page_tokens")) for e in engines[:2])
    token = first.encode({"after": "id-7"}, {"origin": "JFK"})
    assert second.decode(token, {"origin": "JFK"}) == {"after": "id-7"}


def test_exclusive_lets_one_holder_in_at_a_time(engines: list[Engine]) -> None:
    inside: list[int] = []
    most = [0]
    lock = threading.Lock()

    def hold(engine: Engine) -> None:
        with exclusive(engine, "train:test"):
            with lock:
                inside.append(1)
                most[0] = max(most[0], len(inside))
            with engine.connect() as conn:  # a round trip, so overlaps would show
                conn.execute(select(1))
            with lock:
                inside.pop()

    together(engines, hold)
    assert most[0] == 1

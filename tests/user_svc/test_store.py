"""user-svc's store on real databases, with instances sharing one database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.runtime.db import make_engine
from services.user_svc.store import UserStore

INSTANCES = 4


@pytest.fixture
def stores(database_url: str) -> Iterator[list[UserStore]]:
    """One store per instance, each on its own engine, none with its schema yet."""
    engines = [make_engine(database_url) for _ in range(INSTANCES)]
    yield [UserStore(engine) for engine in engines]
    for engine in engines:
        engine.dispose()


def test_instances_starting_together_create_the_schema_and_share_users(
    stores: list[UserStore],
) -> None:
    barrier = threading.Barrier(len(stores))

    def start(store: UserStore) -> None:
        barrier.wait(timeout=30)
        store.create_schema()

    with ThreadPoolExecutor(max_workers=len(stores)) as pool:
        list(pool.map(start, stores))
    created = stores[0].create_user("ada@example.com", "not-a-real-hash", "Ada")
    found = stores[-1].get_by_email("ada@example.com")
    assert found is not None
    assert found[0] == created
    assert created.is_admin

"""SQLite transactions on real database files: writers serialise, readers never queue."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from services.runtime.db import Writes, make_engine, ping, reader

# How long a read may take before we call it stuck behind the write lock; far below
# the 30 s busy timeout a queued BEGIN IMMEDIATE would wait.
STUCK_SECONDS = 10


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite"


@pytest.fixture
def engine(database: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE seats (id INTEGER PRIMARY KEY, free INTEGER)"))
        conn.execute(text("INSERT INTO seats VALUES (1, 10)"))
    yield engine
    engine.dispose()


@pytest.fixture
def writer(database: Path, engine: Engine) -> Iterator[sqlite3.Connection]:
    """Another process's connection, holding the write lock with an uncommitted update."""
    conn = sqlite3.connect(database, timeout=0, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE seats SET free = free - 1 WHERE id = 1")
    yield conn
    conn.execute("ROLLBACK")
    conn.close()


def read_free(engine: Engine) -> int:
    with reader(engine).connect() as conn:
        return int(conn.execute(text("SELECT free FROM seats WHERE id = 1")).scalar_one())


def test_reader_sees_the_committed_value_while_a_writer_holds_the_lock(
    engine: Engine, writer: sqlite3.Connection
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(read_free, engine).result(timeout=STUCK_SECONDS) == 10


def test_ping_does_not_wait_for_the_write_lock(engine: Engine, writer: sqlite3.Connection) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(ping, engine).result(timeout=STUCK_SECONDS)


def test_open_read_transaction_leaves_the_write_lock_free(engine: Engine, database: Path) -> None:
    with reader(engine).connect() as conn:
        assert conn.execute(text("SELECT free FROM seats")).scalar_one() == 10
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE seats SET free = 9")
            other.execute("COMMIT")
        finally:
            other.close()
        # Still inside its snapshot: the reader sees what was committed when it began.
        assert conn.execute(text("SELECT free FROM seats")).scalar_one() == 10
    assert read_free(engine) == 9


def test_write_transaction_takes_the_write_lock_at_begin(engine: Engine, database: Path) -> None:
    """A read-then-write transaction holds the lock from BEGIN, so it cannot fail to upgrade."""
    with engine.begin() as conn:
        conn.execute(text("SELECT free FROM seats")).scalar_one()
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_reader_shares_the_engines_pool(engine: Engine) -> None:
    assert reader(engine).pool is engine.pool


def test_writers_of_one_process_take_turns(engine: Engine) -> None:
    """A second writer queues on the process's turn instead of polling SQLite's lock."""
    writes = Writes(engine, wait_seconds=0.05)
    with writes.begin() as conn:
        conn.execute(text("UPDATE seats SET free = free - 1"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(lambda: writes.begin().__enter__())
            with pytest.raises(TimeoutError, match="no turn to write"):
                waiting.result(timeout=STUCK_SECONDS)
    with writes.begin() as conn:
        conn.execute(text("UPDATE seats SET free = free - 1"))
    assert read_free(engine) == 8


def test_failed_write_gives_the_turn_back(engine: Engine) -> None:
    writes = Writes(engine, wait_seconds=0.05)

    def failing_write() -> None:
        with writes.begin() as conn:
            conn.execute(text("UPDATE seats SET free = 0"))
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        failing_write()
    with writes.begin() as conn:
        assert conn.execute(text("SELECT free FROM seats")).scalar_one() == 10

"""SQLite transactions on real database files: writers serialise, readers never queue."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from services.runtime.db import Writes, make_engine, ping, reader
from services.runtime.errors import DeadlineExceeded, FailedPrecondition

# How long a read may take before we call it stuck behind the write lock; far below
# the 30 s busy timeout a queued BEGIN IMMEDIATE would wait.
STUCK_SECONDS = 60  # guards against "never" only: a passing test never waits it out


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


# --- group commit: Writes.run -------------------------------------------------------------


def take_seat(conn: Connection) -> Connection:
    """Takes one seat, refusing (changing nothing) when none is left."""
    taken = conn.execute(text("UPDATE seats SET free = free - 1 WHERE id = 1 AND free > 0"))
    if taken.rowcount == 0:
        raise FailedPrecondition("no seat left")
    return conn


def queued_behind_the_turn(
    writes: Writes, pool: ThreadPoolExecutor, works: list[Callable[[Connection], Any]], **kw: Any
) -> list[Future[Any]]:
    """Submits `works` while the caller holds the turn; returns once all are queued."""
    futures = [pool.submit(partial(writes.run, work, **kw)) for work in works]
    deadline = time.monotonic() + STUCK_SECONDS
    while writes.queued() < len(works):
        assert time.monotonic() < deadline, "the writes never queued"
        time.sleep(0.01)
    return futures


def test_writes_queued_during_a_turn_commit_together_in_one_transaction(engine: Engine) -> None:
    writes = Writes(engine)
    with ThreadPoolExecutor(max_workers=5) as pool:
        with writes.begin():
            futures = queued_behind_the_turn(writes, pool, [take_seat] * 5)
        transactions = {id(f.result(timeout=STUCK_SECONDS)) for f in futures}
    assert len(transactions) == 1
    assert read_free(engine) == 5


def test_a_refusal_in_a_batch_leaves_the_others_committed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE seats SET free = 2"))
    writes = Writes(engine)
    with ThreadPoolExecutor(max_workers=3) as pool:
        with writes.begin():
            futures = queued_behind_the_turn(writes, pool, [take_seat] * 3)
        outcomes = [f.exception(timeout=STUCK_SECONDS) for f in futures]
    assert sum(isinstance(o, FailedPrecondition) for o in outcomes) == 1
    assert outcomes.count(None) == 2
    assert read_free(engine) == 0


def test_a_fault_in_a_batch_fails_only_its_own_write(engine: Engine) -> None:
    def faulty(conn: Connection) -> None:
        take_seat(conn)  # changed something, then failed: must not be committed
        raise ValueError("boom")

    writes = Writes(engine)
    with ThreadPoolExecutor(max_workers=3) as pool:
        with writes.begin():
            futures = queued_behind_the_turn(writes, pool, [take_seat, faulty, take_seat])
        outcomes = [f.exception(timeout=STUCK_SECONDS) for f in futures]
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert read_free(engine) == 8


def test_a_write_whose_deadline_passed_while_queued_is_not_run(engine: Engine) -> None:
    writes = Writes(engine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with writes.begin():
            (late,) = queued_behind_the_turn(
                writes, pool, [take_seat], expires=time.monotonic() - 1
            )
        with pytest.raises(DeadlineExceeded):
            late.result(timeout=STUCK_SECONDS)
    assert read_free(engine) == 10


def test_a_write_that_finds_no_turn_in_time_leaves_the_queue(engine: Engine) -> None:
    writes = Writes(engine, wait_seconds=0.05)
    with writes.begin(), ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(writes.run, take_seat)
        with pytest.raises(TimeoutError, match="no turn to write"):
            waiting.result(timeout=STUCK_SECONDS)
        assert writes.queued() == 0
    assert read_free(engine) == 10


def test_a_hand_over_wakes_a_queued_writer_only_for_its_batch(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers asleep behind one turn each sleep once: no wake-up finds the turn taken.

    With every writer woken at each hand-over, all but the next turn's holder woke to
    go back to sleep until their batch was done (15 sleeps for 8 writers). Only the
    writers' own threads are counted (any other thread alive in the process may wait on
    a condition made while the patch is on), and the turn is handed over only once all
    eight sleep, so none can take it before the woken head does.
    """
    waits: list[int] = []

    class CountingCondition(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            if threading.current_thread().name.startswith("writer"):
                waits.append(threading.get_ident())  # still holding the lock: not yet woken
            return super().wait(timeout)

    monkeypatch.setattr(threading, "Condition", CountingCondition)
    writes = Writes(engine)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="writer") as pool:
        with writes.begin():
            futures = queued_behind_the_turn(writes, pool, [take_seat] * 8)
            deadline = time.monotonic() + STUCK_SECONDS
            while len(waits) < 8:
                assert time.monotonic() < deadline, "the writers never slept"
                time.sleep(0.01)
        for future in futures:
            future.result(timeout=STUCK_SECONDS)
    assert read_free(engine) == 2
    assert len(set(waits)) == len(waits) == 8  # each of the eight slept once

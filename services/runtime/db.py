"""Database engines for the services: one database per service, SQLite by default.

Owns the engine settings that make SQLite safe under a threaded gRPC server (WAL,
busy timeout, foreign keys), the read-only engine that keeps reads off SQLite's write
lock, the lock that lets one instance of a service do a thing once for all of them
(schema creation, seeding, training), and the per-service secrets table.
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.errors import DeadlineExceeded, DomainError

T = TypeVar("T")

# Execution option marking an engine whose transactions only read (see `reader`).
_READ_ONLY = "airline_read_only"


def make_engine(url: str) -> Engine:
    """Returns an engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Leave transaction control to SQLAlchemy's BEGIN so that
            # BEGIN IMMEDIATE can serialise writers (see `begin_immediate`).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at BEGIN: read-then-write transactions
            # cannot deadlock on lock upgrade, and writers queue on busy_timeout.
            # A reader's DEFERRED transaction reads a WAL snapshot and takes no write
            # lock, so reads neither wait for writers nor make writers wait.
            read_only = conn.get_execution_options().get(_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def reader(engine: Engine) -> Engine:
    """`engine` for transactions that only read; it shares the engine's pool.

    On SQLite they begin DEFERRED, so they never queue for the write lock that every
    other transaction takes at BEGIN; PostgreSQL reads take no row locks anyway. A
    write through the reader is a bug: it could fail to upgrade its lock under load.
    """
    return engine.execution_options(**{_READ_ONLY: True})


class Writes:
    """Write transactions on one engine; on SQLite, one writer at a time, in turns.

    SQLite lets one writer in at a time, and a writer that finds the lock taken polls
    for it with growing sleeps (1, 2, 5 ... 100 ms): under load, queued bookings slept
    far longer than the writes took. So on SQLite the threads of a process queue for
    its turn, and the turn holder takes an flock beside the database before BEGIN, on
    which the other instances' writers block (the kernel wakes one at once) instead of
    polling. `run` adds group commit: whoever gets the turn runs every piece of work
    queued by then in one transaction, so BEGIN, COMMIT and the hand-over of the turn
    are paid once per batch instead of once per write. A hand-over wakes only the
    writers it concerns: those whose work the batch did, and the one at the head of
    the queue, who takes the next turn. Waking every queued writer (notify_all) cost
    booking-svc ~10% of its Python time under load, nearly all of it writers waking
    to find the turn taken again and going back to sleep.
    """

    def __init__(self, engine: Engine, wait_seconds: float = 30.0, max_batch: int = 64) -> None:
        self._engine = engine
        self._wait = wait_seconds
        self._max_batch = max_batch
        self._sqlite = engine.dialect.name == "sqlite"
        self._lock = threading.Lock()
        # Waited on by `begin()`'s callers; `run`'s each wait on their own `_Work.woken`.
        self._turn = threading.Condition(self._lock)
        self._taken = False
        self._queue: list[_Work[Any]] = []
        path = engine.url.database
        self._lock_path = (
            f"{path}.writes.lock" if self._sqlite and path and path != ":memory:" else None
        )

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """`engine.begin()`, entered only on this process's turn to write."""
        if not self._sqlite:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._holding_turn(), self._engine.begin() as conn:
            yield conn

    def run(self, work: Callable[[Connection], T], expires: float | None = None) -> T:
        """`work(conn)` in a write transaction, maybe sharing it with other threads' work.

        `work` must change nothing when it raises a `DomainError` (a refusal): the
        others' work in the batch still commits. Any other exception rolls the batch
        back and each piece runs again alone. `expires` (time.monotonic()) is the
        caller's deadline: work still queued then is not run (DeadlineExceeded).
        """
        mine = _Work(work, expires, threading.Condition(self._lock))
        if not self._sqlite:  # writers do not take turns: nothing to batch
            with self._engine.begin() as conn:
                mine.run_in(conn)
            return mine.outcome()
        give_up = time.monotonic() + self._wait
        with self._turn:
            self._queue.append(mine)
        while (batch := self._next_batch(mine, give_up)) is not None:
            try:
                self._run_batch(batch)
            except BaseException as err:  # interrupted: no piece may wait for ever
                for item in batch:
                    if not item.done:
                        item.fail(err)
                raise
            finally:
                self._hand_over(batch)
        return mine.outcome()

    def queued(self) -> int:
        """How many pieces of work wait for the next batch."""
        with self._turn:
            return len(self._queue)

    def _next_batch(self, mine: _Work[Any], give_up: float) -> list[_Work[Any]] | None:
        """Waits for the turn and takes the queue's head; None once `mine` is done."""
        with self._turn:
            while self._taken and not mine.done:
                left = give_up - time.monotonic()
                if left <= 0 and mine in self._queue:  # queued still: nobody runs it
                    self._queue.remove(mine)
                    raise TimeoutError(f"no turn to write within {self._wait} s")
                # Once in a running batch it is waited for: its outcome is decided.
                # Woken when its batch is done or when it heads the queue (`_hand_over`).
                mine.woken.wait(timeout=max(left, 0.05))
            if mine.done:
                return None
            self._taken = True
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            return batch

    def _run_batch(self, batch: list[_Work[Any]]) -> None:
        """Runs `batch` in one transaction; afterwards every piece in it is done."""
        try:
            with self._file_lock(), self._engine.begin() as conn:
                for item in batch:
                    item.run_in(conn)
        # A fault of one piece, of the flock, BEGIN or COMMIT: every caller learns of it.
        except Exception as err:  # noqa: BLE001
            if len(batch) == 1 or not any(item.faulted for item in batch):
                for item in batch:
                    item.fail(err)
                return
            self._run_alone(batch)
        for item in batch:
            item.done = True

    def _run_alone(self, batch: list[_Work[Any]]) -> None:
        """Finds a batch's faulty piece by running each piece in its own transaction."""
        for item in batch:
            item.reset()
            try:
                with self._file_lock(), self._engine.begin() as conn:
                    item.run_in(conn)
            except Exception as alone:  # noqa: BLE001 (handed to its caller)
                item.fail(alone)

    @contextmanager
    def _holding_turn(self) -> Iterator[None]:
        give_up = time.monotonic() + self._wait
        with self._turn:
            while self._taken:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no turn to write within {self._wait} s")
                self._turn.wait(timeout=left)
            self._taken = True
        try:
            with self._file_lock():
                yield
        finally:
            self._hand_over()

    def _hand_over(self, batch: Sequence[_Work[Any]] = ()) -> None:
        """Frees the turn; wakes `batch`'s writers, the queue's head and `begin()`'s."""
        with self._turn:
            self._taken = False
            for item in batch:
                item.woken.notify()
            if self._queue:
                self._queue[0].woken.notify()
            self._turn.notify_all()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """The other instances' turn: an flock beside the database file, held by one."""
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel frees it if this process dies
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _Work(Generic[T]):
    """One caller's piece of a batch, and what came of it."""

    def __init__(
        self, work: Callable[[Connection], T], expires: float | None, woken: threading.Condition
    ) -> None:
        self._work = work
        self._expires = expires
        self.woken = woken  # on the turn's lock; its caller waits on it alone
        self.done = False
        self.faulted = False
        self._result: T | None = None
        self._error: BaseException | None = None

    def run_in(self, conn: Connection) -> None:
        """Runs the work; a refusal is kept for the caller, any other fault is raised."""
        if self._expires is not None and time.monotonic() >= self._expires:
            self._error = DeadlineExceeded("the deadline passed before the write")
            return
        try:
            self._result = self._work(conn)
        except DomainError as refused:
            self._error = refused
        except Exception:
            self.faulted = True
            raise

    def fail(self, err: BaseException) -> None:
        self._error = err
        self.done = True

    def reset(self) -> None:
        self._result, self._error, self.faulted = None, None, False

    def outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


def _enable_wal(cursor: Any, timeout_seconds: float = 30.0) -> None:
    """Switches a SQLite file to WAL once; several first connections may race for it.

    Changing the journal mode does not wait on busy_timeout: it fails at once with
    "database is locked" while another connection holds the file, so retry briefly.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """Holds the lock `name` of this database: one holder at a time, on any host.

    PostgreSQL: a session advisory lock on a connection of its own, so the holder may
    run transactions of its own meanwhile; the server frees it if the holder dies.
    SQLite, which lives on one machine: an flock on a file beside the database, which
    the kernel frees if the holder dies. Waiters block until the holder is done.
    """
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(select(func.pg_advisory_lock(key)))
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))
        return
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield  # one connection to a private database: nobody to wait for
        return
    with open(f"{path}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_tables(
    engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None
) -> None:
    """Creates the missing `tables` (all of `metadata`'s by default), once across instances.

    Two instances running CREATE TABLE at once on PostgreSQL fail (the second hits a
    duplicate type name), so creation waits on the database's schema lock.
    """
    with exclusive(engine, "schema"):
        metadata.create_all(engine, tables=tables)


class _SecretsBase(DeclarativeBase):
    pass


class ServiceSecret(_SecretsBase):
    """A random secret a service keeps in its own database, shared by its instances."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


def service_secret(engine: Engine, name: str, nbytes: int = 32) -> bytes:
    """Returns the secret `name`, creating it on first use; every instance sees the same."""
    create_tables(engine, _SecretsBase.metadata)
    query = select(ServiceSecret.value).where(ServiceSecret.name == name)
    try:
        with engine.begin() as conn:
            found = conn.execute(query).scalar()
            if found is not None:
                return bytes(found)
            value = secrets.token_bytes(nbytes)
            conn.execute(insert(ServiceSecret).values(name=name, value=value))
            return value
    except IntegrityError:
        # Another instance created it between our read and insert: use theirs.
        with reader(engine).connect() as conn:
            return bytes(conn.execute(query).scalar_one())


def ping(engine: Engine) -> None:
    """Raises unless the database answers a trivial query; a health check."""
    with reader(engine).connect() as conn:
        conn.execute(text("SELECT 1"))

"""Compiled read statements and the UTC column, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, StatementError

from services.runtime.db import make_engine
from services.runtime.queries import CompiledQuery, UTCDateTime

METADATA = MetaData()
THINGS = Table(
    "things",
    METADATA,
    Column("thing_id", String(36), primary_key=True),
    Column("rank", Integer),
    Column("tags", JSON),
    Column("active", Boolean),
    Column("seen", UTCDateTime, nullable=True),
)
# Microseconds kept, before the epoch too.
MOMENTS = [datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC)]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    found = make_engine(database_url)
    METADATA.create_all(found)
    with found.begin() as conn:
        rows: list[tuple[Any, ...]] = [("a", 1, ["x", "y"], True, MOMENTS[0])]
        rows += [("b", 2, [], False, MOMENTS[1]), ("c", 3, None, True, None)]
        conn.execute(insert(THINGS), [dict(zip(THINGS.c.keys(), row, strict=True)) for row in rows])
    yield found
    found.dispose()


def run(engine: Engine, statement: Any, **values: Any) -> list[list[Any]]:
    query = CompiledQuery(statement, engine.dialect)
    return [query.values(row) for row in query.rows(engine, values)]


def test_columns_come_back_as_connection_execute_gives_them(engine: Engine) -> None:
    statement = select(THINGS).order_by(THINGS.c.rank)
    with engine.connect() as conn:
        expected = [list(row) for row in conn.execute(statement)]
    assert run(engine, statement) == expected
    assert expected[0] == ["a", 1, ["x", "y"], True, MOMENTS[0]]
    assert expected[2][4] is None


def test_times_come_back_aware_utc_to_the_microsecond(engine: Engine) -> None:
    rows = run(engine, select(THINGS.c.seen).where(THINGS.c.seen.is_not(None)).order_by("rank"))
    assert [row[0] for row in rows] == MOMENTS
    assert all(row[0].tzinfo is UTC for row in rows)


def test_bind_parameters_are_converted_by_their_column_type(engine: Engine) -> None:
    """An aware time in another zone binds as the same instant in UTC."""
    in_new_york = MOMENTS[0].astimezone(timezone(timedelta(hours=-5)))
    statement = select(THINGS.c.thing_id).where(THINGS.c.seen == bindparam("b_seen"))
    assert run(engine, statement, b_seen=in_new_york) == [["a"]]


def test_limits_and_offsets_the_compiler_adds_are_bound(engine: Engine) -> None:
    statement = select(THINGS.c.thing_id).order_by(THINGS.c.rank).limit(bindparam("b_limit"))
    assert run(engine, statement, b_limit=2) == [["a"], ["b"]]


def test_no_row_is_an_empty_list(engine: Engine) -> None:
    statement = select(THINGS).where(THINGS.c.thing_id == bindparam("b_id"))
    assert run(engine, statement, b_id="none such") == []


def test_a_compiled_query_skips_sqlalchemys_execution_machinery(engine: Engine) -> None:
    """The point of it: no execution context, events or result objects per call."""
    executed: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: executed.append(args[2]))
    statement = select(THINGS.c.rank).where(THINGS.c.thing_id == bindparam("b_id"))
    assert run(engine, statement, b_id="b") == [[2]]
    assert executed == []


def test_naive_times_are_refused_by_the_utc_column(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(insert(THINGS).values(thing_id="d", rank=4, seen=datetime(2030, 1, 1)))


def test_writes_run_in_the_connections_transaction(engine: Engine) -> None:
    """An UPDATE ... RETURNING and an INSERT by column name, rolled back with the rest."""
    bump = CompiledQuery(
        update(THINGS)
        .where(THINGS.c.thing_id == bindparam("b_id"))
        .values(rank=THINGS.c.rank + 10)
        .returning(THINGS.c.rank, THINGS.c.seen),
        engine.dialect,
    )
    add = CompiledQuery(insert(THINGS), engine.dialect)
    with engine.connect() as conn, conn.begin() as transaction:
        (row,) = bump.rows_in(conn, {"b_id": "a"})
        assert bump.values(row) == [11, MOMENTS[0]]
        new = {"thing_id": "d", "rank": 4, "tags": ["z"], "active": False, "seen": MOMENTS[1]}
        assert add.rows_in(conn, new) == []
        assert run_in(conn, select(THINGS).where(THINGS.c.thing_id == "d")) == [list(new.values())]
        transaction.rollback()
    assert run(engine, select(THINGS.c.rank).order_by(THINGS.c.rank)) == [[1], [2], [3]]


def test_a_database_error_is_raised_as_connection_execute_raises_it(engine: Engine) -> None:
    add = CompiledQuery(insert(THINGS), engine.dialect)
    taken = {"thing_id": "a", "rank": 9, "tags": [], "active": True, "seen": None}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        add.rows_in(conn, taken)


def run_in(conn: Connection, statement: Any) -> list[list[Any]]:
    query = CompiledQuery(statement, conn.dialect)
    return [query.values(row) for row in query.rows_in(conn, {})]

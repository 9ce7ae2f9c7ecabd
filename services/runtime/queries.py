"""Statements compiled once and run on a DBAPI connection, and the UTC column.

For the hot statements (a flight by id, a page of flights, a user by id, a booking's
seat UPDATE and INSERT): SQLAlchemy's
`Connection.execute` spends more CPU on each call (events, execution context, cache
key, result object) than SQLite spends answering, while the compiled SQL, the order of
its parameters and the converters for parameters and columns do not change between
calls. `CompiledQuery` works them out once. `UTCDateTime` is how every service stores
a time: naive UTC in the database, aware UTC in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, Engine, Float, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC; reads them back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class CompiledQuery:
    """A statement compiled once for a dialect, run on a DBAPI connection.

    `rows` reads on a pooled connection: one statement in autocommit on SQLite
    (`db.make_engine` leaves transactions to SQLAlchemy) reads a WAL snapshot and takes
    no lock; PostgreSQL's pool rolls the read back on return. `rows_in` runs in the
    transaction of an open `Connection` (a write, or a read inside one). Rows come
    back as the DBAPI gives them; `values` converts one row's columns (a select's, or
    a RETURNING clause's) as `Connection.execute` would (datetimes to aware UTC, JSON
    parsed, booleans as bool), by position. An INSERT compiled with no values takes
    one bind parameter per column, named by the column.
    """

    def __init__(self, statement: Select[Any] | UpdateBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        self._positional = dialect.positional
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self._names = list(compiled.positiontup or []) if self._positional else list(compiled.binds)
        self._binds = [
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._names
        ]
        self._columns = [_converter(column.type, dialect) for column in statement.exported_columns]
        self._converted = [i for i, convert in enumerate(self._columns) if convert is not None]
        # Values the compiler added itself (SQLite's OFFSET 0 after a LIMIT).
        self._literals = {
            name: compiled.binds[name].value
            for name in self._names
            if compiled.binds[name].value is not None
        }

    def rows(self, engine: Engine, values: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns for the bind parameters `values`."""
        conn = engine.raw_connection()
        try:
            return self._run(conn, values)
        finally:
            conn.close()

    def rows_in(self, conn: Connection, values: Mapping[str, Any]) -> list[Any]:
        """`rows`, in `conn`'s transaction (on its DBAPI connection)."""
        return self._run(conn.connection, values)

    def _run(self, dbapi_conn: Any, values: Mapping[str, Any]) -> list[Any]:
        given = {**self._literals, **values} if self._literals else values
        args = [
            given[name] if convert is None else convert(given[name])
            for name, convert in zip(self._names, self._binds, strict=True)
        ]
        bound: Any = tuple(args) if self._positional else dict(zip(self._names, args, strict=True))
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(self._sql, bound)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except self._dbapi_error as err:
            # As Connection.execute raises it (IntegrityError, OperationalError, ...), so
            # callers catch one kind of error whichever way a statement ran.
            raise DBAPIError.instance(self._sql, bound, err, self._dbapi_error) from err
        finally:
            cursor.close()

    def values(self, row: Sequence[Any]) -> list[Any]:
        """`row`'s columns, in the statement's order, each converted to its Python value."""
        values = list(row)
        for i in self._converted:
            values[i] = self._columns[i](values[i])  # type: ignore[misc]
        return values


def _sqlite_utc(stored: str | None) -> datetime | None:
    # One C call; the DATETIME processor's result then .replace(tzinfo=UTC) cost 6x more.
    return None if stored is None else datetime.fromisoformat(stored + "+00:00")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _converter(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What turns a column's DBAPI value into Python's: the dialect's, or a faster one."""
    if isinstance(column_type, UTCDateTime) and dialect.name == "sqlite":
        return _sqlite_utc  # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff" text on SQLite
    if isinstance(column_type, Float) and not column_type.asdecimal:
        # PostgreSQL's numeric processors choose by the column's type code, which only a
        # result's cursor.description has; a float is a float on every DBAPI.
        return _float
    processor: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).result_processor(
        dialect, None
    )
    return processor

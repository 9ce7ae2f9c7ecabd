"""The `users` table of user-svc's database and every query on it.

Takes values the domain module has already validated (emails are normalised again
here, so no caller can store a second spelling of one address) and hands back frozen
`UserRecord`s, never ORM objects. Times are kept as naive UTC (SQLite keeps no offset)
and returned as aware UTC datetimes (`queries.UTCDateTime`). The reads asked on every
protected call (a user by id, an account's `active` flag) and at every sign-in (by
email) run statements compiled once (`queries.CompiledQuery`): through
`Connection.execute` the ORM select cost most of LookupUser's Python time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Engine,
    Index,
    Row,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.db import create_tables, reader
from services.runtime.errors import InvalidArgument
from services.runtime.queries import CompiledQuery, UTCDateTime
from services.user_svc.domain import (
    ADMIN,
    MUTABLE_FIELDS,
    USER,
    EmailTaken,
    UserNotFound,
    normalise_email,
)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Base(DeclarativeBase):
    pass


class UserRow(_Base):
    """One account. `email` is unique in its normalised (lower-case) form, which makes
    the uniqueness case-insensitive on every database."""

    __tablename__ = "users"
    # ListUsers pages in this order; the index makes each page one range scan.
    __table_args__ = (Index("ix_users_create_time_user_id", "create_time", "user_id"),)

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(100))
    roles: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean)
    # The same DATETIME / TIMESTAMP columns as when they were declared DateTime: only
    # the conversion to and from aware UTC moved into the type.
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


USERS = cast(Table, UserRow.__table__)

# A UserRecord's columns, in its field order (a test holds the two together).
RECORD_COLUMNS = (
    USERS.c.user_id,
    USERS.c.email,
    USERS.c.display_name,
    USERS.c.roles,
    USERS.c.active,
    USERS.c.create_time,
    USERS.c.update_time,
)
_GET = select(*RECORD_COLUMNS).where(USERS.c.user_id == bindparam("b_user"))
_GET_BY_EMAIL = select(*RECORD_COLUMNS, USERS.c.password_hash).where(
    USERS.c.email == bindparam("b_email")
)
_ACTIVE = select(USERS.c.active).where(USERS.c.user_id == bindparam("b_user"))


def _get_many(count: int) -> Select[Any]:
    """The users of `count` ids, bound as b_user0 ... (one compiled statement per count:
    an expanding IN would be recompiled on every call)."""
    ids: list[Any] = [bindparam(f"b_user{i}") for i in range(count)]
    return select(*RECORD_COLUMNS).where(USERS.c.user_id.in_(ids))


@dataclass(frozen=True)
class UserRecord:
    """A user as the rest of the service sees it: no password hash."""

    user_id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    active: bool
    create_time: datetime
    update_time: datetime

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


@dataclass(frozen=True)
class Cursor:
    """The position after the last user of a page: (create_time, user_id)."""

    create_time: datetime
    user_id: str

    def to_dict(self) -> dict[str, str]:
        """The cursor as JSON-able fields, to put in a page token."""
        return {"t": self.create_time.isoformat(), "id": self.user_id}

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Cursor:
        """The cursor `to_dict` made; InvalidArgument on `page_token` for anything else."""
        bad = InvalidArgument([("page_token", "is not a token this query returned")])
        user_id = fields.get("id")
        try:
            create_time = datetime.fromisoformat(str(fields.get("t")))
        except ValueError:
            raise bad from None
        if create_time.tzinfo is None or not isinstance(user_id, str):
            raise bad
        return cls(create_time.astimezone(UTC), user_id)


@dataclass(frozen=True)
class UserPage:
    users: list[UserRecord]
    next_cursor: Cursor | None
    """Where the next page starts; None on the last page."""


class UserStore:
    """Reads and writes users; safe to share between threads and between instances."""

    def __init__(self, engine: Engine, *, clock: Clock = _utcnow) -> None:
        self._engine = engine
        # Reads begin DEFERRED on SQLite (a WAL snapshot): they do not queue for the
        # write lock. LookupUser, asked on every protected call of every service,
        # spent a third of its time in SQLite's busy handler before.
        self._reader = reader(engine)
        self._clock = clock
        self._get = CompiledQuery(_GET, engine.dialect)
        self._get_by_email = CompiledQuery(_GET_BY_EMAIL, engine.dialect)
        self._active = CompiledQuery(_ACTIVE, engine.dialect)
        # One per number of ids asked for at once (at most domain.LOOKUP_MAX_IDS).
        self._get_many: dict[int, CompiledQuery] = {}

    def create_schema(self) -> None:
        create_tables(self._engine, _Base.metadata)

    def create_user(self, email: str, password_hash: str, display_name: str) -> UserRecord:
        """Inserts a user; the first one on an empty table is an admin. EmailTaken if taken.

        The emptiness check and the insert share one serialised transaction (BEGIN
        IMMEDIATE on SQLite, a self-conflicting table lock on PostgreSQL), so two
        first sign-ups at once cannot both become admin. Holding that lock also lets
        create_time strictly increase in commit order, which keyset paging relies on:
        a row committed later can never sort before a page already handed out.
        """
        try:
            with self._engine.begin() as conn:
                _lock_users(conn)
                last = conn.execute(select(func.max(UserRow.create_time))).scalar()
                now = self._clock().astimezone(UTC)
                if last is not None:
                    now = max(now, last + timedelta(microseconds=1))
                values = {
                    "user_id": str(uuid.uuid4()),
                    "email": normalise_email(email),
                    "display_name": display_name,
                    "password_hash": password_hash,
                    "roles": [USER] if last is not None else [USER, ADMIN],
                    "active": True,
                    "create_time": now,
                    "update_time": now,
                }
                conn.execute(insert(UserRow).values(**values))
        except IntegrityError:
            raise EmailTaken() from None
        return _record(values)

    def get(self, user_id: str) -> UserRecord:
        """The user `user_id`; UserNotFound if there is none."""
        rows = self._get.rows(self._engine, {"b_user": user_id})
        if not rows:
            raise UserNotFound()
        return _user(self._get.values(rows[0]))

    def get_many(self, user_ids: Sequence[str]) -> list[UserRecord]:
        """The users of `user_ids` that exist, each once, in no particular order (one read;
        the servicer has made the ids unique, so there is one statement per count)."""
        query = self._get_many.get(len(user_ids))
        if query is None:
            query = self._get_many[len(user_ids)] = CompiledQuery(
                _get_many(len(user_ids)), self._engine.dialect
            )
        rows = query.rows(self._engine, {f"b_user{i}": id_ for i, id_ in enumerate(user_ids)})
        return [_user(query.values(row)) for row in rows]

    def active(self, user_id: str) -> bool | None:
        """The user's `active` flag, None if there is no such user (a `context.AccountLookup`)."""
        rows = self._active.rows(self._engine, {"b_user": user_id})
        return bool(self._active.values(rows[0])[0]) if rows else None

    def get_by_email(self, email: str) -> tuple[UserRecord, str] | None:
        """The user with `email` (in any case) and their password hash, or None."""
        rows = self._get_by_email.rows(self._engine, {"b_email": normalise_email(email)})
        if not rows:
            return None
        values = self._get_by_email.values(rows[0])
        return _user(values), values[-1]

    def list(self, after: Cursor | None, limit: int) -> UserPage:
        """Up to `limit` users, oldest first, starting after `after` (keyset paging)."""
        query = select(UserRow).order_by(UserRow.create_time, UserRow.user_id).limit(limit + 1)
        if after is not None:
            after_time = after.create_time
            query = query.where(
                or_(
                    UserRow.create_time > after_time,
                    and_(UserRow.create_time == after_time, UserRow.user_id > after.user_id),
                )
            )
        with self._reader.connect() as conn:
            rows = conn.execute(query).all()
        users = [_record(row._mapping) for row in rows[:limit]]
        if len(rows) <= limit or not users:
            return UserPage(users, None)
        return UserPage(users, Cursor(users[-1].create_time, users[-1].user_id))

    def update(self, user_id: str, changes: Mapping[str, object]) -> UserRecord:
        """Applies `changes` (from `domain.validate_update`) and touches update_time."""
        unknown = set(changes) - MUTABLE_FIELDS
        if unknown:
            raise ValueError(f"not changeable: {sorted(unknown)}")
        with self._engine.begin() as conn:
            row = _select_row(conn, user_id)
            # Never before create_time, even if this instance's clock is behind.
            values = {**changes, "update_time": max(self._clock().astimezone(UTC), row.create_time)}
            conn.execute(update(UserRow).where(UserRow.user_id == user_id).values(**values))
        return _record({**row._mapping, **values})

    def delete(self, user_id: str) -> None:
        """Deletes user `user_id`, freeing the email; UserNotFound if there is none."""
        with self._engine.begin() as conn:
            deleted = conn.execute(delete(UserRow).where(UserRow.user_id == user_id)).rowcount
        if deleted == 0:
            raise UserNotFound()


def _lock_users(conn: Connection) -> None:
    # SQLite: the engine's BEGIN IMMEDIATE already holds the database write lock.
    # PostgreSQL: SHARE ROW EXCLUSIVE conflicts with itself and with every write, so
    # concurrent creators queue here while readers carry on.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")


def _select_row(conn: Connection, user_id: str) -> Row[Any]:
    row = conn.execute(select(UserRow).where(UserRow.user_id == user_id)).first()
    if row is None:
        raise UserNotFound()
    return row


def _record(fields: Mapping[Any, Any]) -> UserRecord:
    return UserRecord(
        user_id=fields["user_id"],
        email=fields["email"],
        display_name=fields["display_name"],
        roles=tuple(fields["roles"]),
        active=bool(fields["active"]),
        create_time=fields["create_time"],
        update_time=fields["update_time"],
    )


def _user(values: list[Any]) -> UserRecord:
    """A UserRecord from a row of `RECORD_COLUMNS` (and any columns after them)."""
    user_id, email, display_name, roles, active, create_time, update_time = values[:7]
    return UserRecord(
        user_id, email, display_name, tuple(roles), bool(active), create_time, update_time
    )

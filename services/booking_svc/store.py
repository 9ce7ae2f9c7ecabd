"""Flights and bookings in SQL: the tables, seat accounting and keyset pages.

Every seat change is one conditional UPDATE inside the transaction that records why,
so seats never go below zero or get freed twice, on SQLite (BEGIN IMMEDIATE) and on
PostgreSQL (row locks, READ COMMITTED) alike. A new booking is two statements (the
seat, with the idempotency check and the stored delay risk folded into its UPDATE,
then the INSERT), and on SQLite bookings queued at once share one transaction
(`Writes.run`: group commit). Reads go through a read-only engine,
so on SQLite they read a WAL snapshot instead of queueing for the write lock. The
flight reads run statements compiled once per process on a pooled DBAPI connection
(`queries.CompiledQuery`): SQLAlchemy's per-execution machinery cost more CPU than
SQLite's work.
Callers get frozen records, never ORM objects.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    Row,
    Select,
    String,
    Table,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from services.booking_svc.domain import (
    BookingCursor,
    BookingNotFound,
    BookingState,
    FlightCursor,
    FlightFilters,
    FlightNotFound,
    NewFlight,
    OrderBy,
    SeatClass,
    SoldOut,
    from_epoch_us,
    to_epoch_us,
)
from services.runtime.db import Writes, reader
from services.runtime.queries import CompiledQuery, UTCDateTime

# Serialises schema creation and seeding across instances sharing one PostgreSQL.
_PG_SCHEMA_LOCK = 0x_B00C_1A6


class Base(DeclarativeBase):
    pass


class FlightRow(Base):
    __tablename__ = "flights"
    __table_args__ = (
        CheckConstraint("seats_available >= 0", name="ck_flights_seats_available_nonnegative"),
        CheckConstraint("seats_available <= seats_total", name="ck_flights_seats_within_total"),
        # One per ListFlights order, each ending in the tie-breaker the keyset uses.
        Index("ix_flights_departure", "departure_time", "flight_id"),
        Index("ix_flights_price", "price_cents", "flight_id"),
        Index("ix_flights_origin_departure", "origin", "departure_time", "flight_id"),
        Index("ix_flights_destination_departure", "destination", "departure_time", "flight_id"),
    )

    flight_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    number: Mapped[str] = mapped_column(String(8))
    origin: Mapped[str] = mapped_column(String(3))
    destination: Mapped[str] = mapped_column(String(3))
    departure_time: Mapped[datetime] = mapped_column(UTCDateTime)
    arrival_time: Mapped[datetime] = mapped_column(UTCDateTime)
    seats_total: Mapped[int] = mapped_column(Integer)
    seats_available: Mapped[int] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)


class BookingRow(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        # The idempotency key: one booking per (user, request_id), whatever races.
        UniqueConstraint("user_id", "request_id", name="uq_bookings_user_request"),
        Index("ix_bookings_created", "create_time", "booking_id"),
        Index("ix_bookings_user_created", "user_id", "create_time", "booking_id"),
        Index("ix_bookings_flight", "flight_id"),
    )

    booking_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    flight_id: Mapped[str] = mapped_column(ForeignKey("flights.flight_id"))
    seat_class: Mapped[str] = mapped_column(String(16))
    passenger_name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16))
    price_cents: Mapped[int] = mapped_column(Integer)
    delay_risk: Mapped[float | None] = mapped_column(Float, nullable=True)
    request_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)


class FlightRiskRow(Base):
    """A flight's delay risk, computed ahead of its bookings by one model version.

    A table of its own rather than columns of `flights`: an existing database gains
    it through `create_all`, with no migration of the flights table.
    """

    __tablename__ = "flight_risks"

    flight_id: Mapped[str] = mapped_column(ForeignKey("flights.flight_id"), primary_key=True)
    delay_risk: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))


FLIGHTS = cast(Table, FlightRow.__table__)
BOOKINGS = cast(Table, BookingRow.__table__)
RISKS = cast(Table, FlightRiskRow.__table__)

# The booking hot path's statements, built once: building a Core statement per call
# cost about as much CPU as executing it.
_TAKE_SEAT = (
    update(FLIGHTS)
    .where(
        FLIGHTS.c.flight_id == bindparam("b_flight"),
        FLIGHTS.c.seats_available > 0,
        ~exists().where(
            BOOKINGS.c.user_id == bindparam("b_user"),
            BOOKINGS.c.request_id == bindparam("b_request"),
        ),
    )
    .values(seats_available=FLIGHTS.c.seats_available - 1)
    .returning(
        FLIGHTS.c.price_cents,
        FLIGHTS.c.departure_time,
        select(RISKS.c.delay_risk)
        .where(RISKS.c.flight_id == bindparam("b_flight"))
        .scalar_subquery()
        .label("risk"),
    )
)
_INSERT_BOOKING = insert(BOOKINGS)


# GetFlight's statement; ListFlights' are built per shape of query (`_flight_page`).
_GET_FLIGHT = select(FLIGHTS).where(FLIGHTS.c.flight_id == bindparam("b_flight"))


@dataclass(frozen=True, slots=True)
class FlightRecord:
    flight_id: str
    number: str
    origin: str
    destination: str
    departure_time: datetime
    arrival_time: datetime
    seats_total: int
    seats_available: int
    price_cents: int
    currency: str
    create_time: datetime


@dataclass(frozen=True, slots=True)
class BookingRecord:
    booking_id: str
    user_id: str
    flight_id: str
    seat_class: SeatClass
    passenger_name: str
    state: BookingState
    price_cents: int
    delay_risk: float | None
    request_id: str
    create_time: datetime


PriceFor = Callable[[SeatClass, int], int]
# Judges a new booking by its flight's departure time; raises to refuse it.
Bookable = Callable[[datetime], None]


class BookingStore:
    """Flights and bookings in one database; safe to share between threads and instances."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._writes = Writes(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._get_flight = CompiledQuery(_GET_FLIGHT, engine.dialect)
        self._take_seat = CompiledQuery(_TAKE_SEAT, engine.dialect)
        self._insert_booking = CompiledQuery(_INSERT_BOOKING, engine.dialect)
        # One compiled statement per shape of ListFlights query (filters given, order,
        # first page or not): at most 64, made on first use.
        self._flight_pages: dict[tuple[bool, ...], CompiledQuery] = {}

    def ping(self) -> None:
        """Raises when the database cannot be reached; for the health checks."""
        with self._reader.connect() as conn:
            conn.execute(select(1))

    def create_schema(self) -> None:
        """Creates missing tables and indexes; instances may call it at the same time."""
        with self._writes.begin() as conn:
            self._lock_schema(conn)
            Base.metadata.create_all(conn)

    def seed_if_empty(self, make_rows: Callable[[], Sequence[NewFlight]]) -> int:
        """Inserts `make_rows()` when there are no flights yet; returns how many it inserted.

        Check and insert share one transaction that concurrent seeders queue on (BEGIN
        IMMEDIATE on SQLite, an advisory lock on PostgreSQL), so exactly one seeds. The
        rows are built only then: a restart of a seeded service reads no seed data.
        """
        now = datetime.now(UTC)
        with self._writes.begin() as conn:
            self._lock_schema(conn)
            if conn.execute(select(FLIGHTS.c.flight_id).limit(1)).first() is not None:
                return 0
            rows = make_rows()
            if rows:
                conn.execute(insert(FLIGHTS), [_flight_values(row, now) for row in rows])
        return len(rows)

    def create_flight(self, new: NewFlight) -> FlightRecord:
        values = _flight_values(new, datetime.now(UTC))
        with self._writes.begin() as conn:
            conn.execute(insert(FLIGHTS).values(values))
        return FlightRecord(**values)

    def get_flight(self, flight_id: str) -> FlightRecord:
        rows = self._get_flight.rows(self._engine, {"b_flight": flight_id})
        if not rows:
            raise FlightNotFound(flight_id)
        return FlightRecord(*self._get_flight.values(rows[0]))

    def get_flight_and_risk(self, flight_id: str) -> tuple[FlightRecord, float | None]:
        """The flight and its precomputed delay risk (None when none is stored yet)."""
        query = (
            select(FLIGHTS, RISKS.c.delay_risk)
            .outerjoin(RISKS, RISKS.c.flight_id == FLIGHTS.c.flight_id)
            .where(FLIGHTS.c.flight_id == flight_id)
        )
        with self._reader.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise FlightNotFound(flight_id)
        fields = dict(row._mapping)
        risk = fields.pop("delay_risk")
        return FlightRecord(**fields), risk

    def flights_needing_risk(
        self, model_version: str | None, departing_after: datetime, limit: int
    ) -> list[FlightRecord]:
        """Up to `limit` flights departing after the given time with no risk from `model_version`.

        With no version: the flights with no risk at all. Soonest departures first,
        since those are booked first.
        """
        stale: ColumnElement[bool] = RISKS.c.flight_id.is_(None)
        if model_version is not None:
            stale = or_(stale, RISKS.c.model_version != model_version)
        query = (
            select(FLIGHTS)
            .outerjoin(RISKS, RISKS.c.flight_id == FLIGHTS.c.flight_id)
            .where(FLIGHTS.c.departure_time > departing_after, stale)
            .order_by(FLIGHTS.c.departure_time, FLIGHTS.c.flight_id)
            .limit(limit)
        )
        with self._reader.connect() as conn:
            return [_flight(row) for row in conn.execute(query)]

    def record_risks(self, model_version: str, risks: Mapping[str, float]) -> None:
        """Stores each flight's delay risk from `model_version`, replacing older ones."""
        if not risks:
            return
        rows = [
            {"flight_id": flight_id, "delay_risk": risk, "model_version": model_version}
            for flight_id, risk in risks.items()
        ]
        # Delete then insert in one transaction: the same on SQLite and PostgreSQL,
        # and two instances refreshing at once write the same values.
        try:
            with self._writes.begin() as conn:
                conn.execute(delete(RISKS).where(RISKS.c.flight_id.in_(list(risks))))
                conn.execute(insert(RISKS), rows)
        except IntegrityError:
            # PostgreSQL: another instance inserted the same flights first; its values
            # are as good as ours, and a newer version is written on a later pass.
            return

    def list_flights(
        self, filters: FlightFilters, order_by: OrderBy, after: FlightCursor | None, limit: int
    ) -> tuple[list[FlightRecord], FlightCursor | None]:
        """One page of flights after `after`, and the cursor of the next page (None at the end).

        Keyset pagination on (sort value, flight_id): flights added between pages
        never shift the page boundaries, so nothing is skipped or repeated.
        """
        if limit < 1:
            raise ValueError(f"page limit must be at least 1, got {limit}")
        by_price = order_by.field == "price"
        values: dict[str, Any] = {"b_limit": limit + 1}  # one more tells a next page exists
        if filters.origin is not None:
            values["b_origin"] = filters.origin
        if filters.destination is not None:
            values["b_destination"] = filters.destination
        if filters.departure_date is not None:
            # A range, not a date() of the column, so the departure index serves it.
            start = datetime.combine(filters.departure_date, datetime.min.time(), tzinfo=UTC)
            values["b_day_start"], values["b_day_end"] = start, start + timedelta(days=1)
        if after is not None:
            values["b_after_key"] = after.key if by_price else from_epoch_us(after.key)
            values["b_after_id"] = after.flight_id
        shape = (
            filters.origin is not None,
            filters.destination is not None,
            filters.departure_date is not None,
            by_price,
            order_by.descending,
            after is not None,
        )
        query = self._flight_pages.get(shape)
        if query is None:
            query = self._flight_pages[shape] = CompiledQuery(
                _flight_page(*shape), self._engine.dialect
            )
        rows = query.rows(self._engine, values)
        flights = [FlightRecord(*query.values(row)) for row in rows[:limit]]
        if len(rows) <= limit:
            return flights, None
        last = flights[-1]
        cursor_key = last.price_cents if by_price else to_epoch_us(last.departure_time)
        return flights, FlightCursor(cursor_key, last.flight_id)

    def create_booking(
        self,
        *,
        user_id: str,
        request_id: str,
        flight_id: str,
        seat_class: SeatClass,
        passenger_name: str,
        price_for: PriceFor,
        delay_risk: float | None = None,
        bookable: Bookable = lambda _departs: None,
        expires: float | None = None,
    ) -> tuple[BookingRecord, bool]:
        """Books a seat, or returns the booking this (user, request_id) already made.

        Returns (booking, created). A repeated request_id returns the first booking
        even when the other fields differ, as the contract promises: a retry must
        see the outcome of its first attempt, whatever the client changed since.
        `bookable` judges a new booking by the flight's departure time (raising to
        refuse it) after that lookup: a retry after departure still gets its booking.
        The booking copies the flight's stored delay risk, else `delay_risk`.
        `expires` (time.monotonic()) is the caller's deadline: a booking still waiting
        for its write then is not made (DeadlineExceeded).
        Raises FlightNotFound, or SoldOut when no seat is left.
        """

        def work(conn: Connection) -> tuple[BookingRecord, bool]:
            return _book(
                conn,
                self._take_seat,
                self._insert_booking,
                user_id=user_id,
                request_id=request_id,
                flight_id=flight_id,
                seat_class=seat_class,
                passenger_name=passenger_name,
                price_for=price_for,
                delay_risk=delay_risk,
                bookable=bookable,
            )

        try:
            return self._writes.run(work, expires)
        except IntegrityError:
            # A concurrent call with the same key committed first (PostgreSQL: both
            # passed the lookup). Our seat went back with the rollback; return theirs.
            with self._reader.connect() as conn:
                found = _by_request(conn, user_id, request_id)
            if found is None:
                raise
            return found, False

    def record_booking_risk(self, booking: BookingRecord, delay_risk: float) -> BookingRecord:
        """`booking` with `delay_risk`, stored unless the booking already has one."""
        query = (
            update(BOOKINGS)
            .where(BOOKINGS.c.booking_id == booking.booking_id, BOOKINGS.c.delay_risk.is_(None))
            .values(delay_risk=delay_risk)
        )
        self._writes.run(lambda conn: conn.execute(query))
        return dataclasses.replace(booking, delay_risk=delay_risk)

    def get_booking(self, booking_id: str, *, owner: str | None = None) -> BookingRecord:
        """The booking; BookingNotFound when unknown or, with `owner`, someone else's."""
        with self._reader.connect() as conn:
            found = _booking_by_id(conn, booking_id, owner)
        if found is None:
            raise BookingNotFound(booking_id)
        return found

    def list_bookings(
        self, user_id: str | None, after: BookingCursor | None, limit: int
    ) -> tuple[list[BookingRecord], BookingCursor | None]:
        """One page of bookings, newest first, of `user_id` (everyone's when None)."""
        created, ident = BOOKINGS.c.create_time, BOOKINGS.c.booking_id
        query = select(BOOKINGS)
        if user_id is not None:
            query = query.where(BOOKINGS.c.user_id == user_id)
        if after is not None:
            moment = from_epoch_us(after.create_time_us)
            query = query.where(_after(created, ident, moment, after.booking_id, descending=True))
        query = query.order_by(created.desc(), ident.desc())
        bookings = [_booking(row._mapping) for row in self._page(query, limit)]
        if len(bookings) <= limit:
            return bookings, None
        last = bookings[limit - 1]
        return bookings[:limit], BookingCursor(to_epoch_us(last.create_time), last.booking_id)

    def cancel_booking(self, booking_id: str, *, owner: str | None = None) -> BookingRecord:
        """Cancels and frees the seat; a cancelled booking comes back unchanged.

        Only the call whose conditional UPDATE moves CONFIRMED to CANCELLED frees the
        seat, so racing cancels free exactly one.
        """
        condition = [
            BOOKINGS.c.booking_id == booking_id,
            BOOKINGS.c.state == BookingState.CONFIRMED.name,
        ]
        if owner is not None:
            condition.append(BOOKINGS.c.user_id == owner)
        with self._writes.begin() as conn:
            cancelled = conn.execute(
                update(BOOKINGS)
                .where(*condition)
                .values(state=BookingState.CANCELLED.name)
                .returning(BOOKINGS.c.flight_id)
            ).first()
            if cancelled is not None:
                _give_back_seat(conn, cancelled.flight_id)
            found = _booking_by_id(conn, booking_id, owner)
        if found is None:
            raise BookingNotFound(booking_id)
        return found

    def _page(self, query: Select[Any], limit: int) -> Sequence[Row[Any]]:
        if limit < 1:
            raise ValueError(f"page limit must be at least 1, got {limit}")
        # One row more than asked tells whether a next page exists.
        with self._reader.connect() as conn:
            return conn.execute(query.limit(limit + 1)).all()

    def _lock_schema(self, conn: Connection) -> None:
        if self._postgres:
            conn.execute(select(func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))


def _book(
    conn: Connection,
    take_seat: CompiledQuery,
    insert_booking: CompiledQuery,
    *,
    user_id: str,
    request_id: str,
    flight_id: str,
    seat_class: SeatClass,
    passenger_name: str,
    price_for: PriceFor,
    delay_risk: float | None,
    bookable: Bookable,
) -> tuple[BookingRecord, bool]:
    """A booking in the caller's transaction, in two statements when it is a new one.

    The conditional UPDATE takes the seat only if one is left and this (user,
    request_id) has no booking yet, and returns the fare, the departure time and the
    flight's stored delay risk; the INSERT records the booking. A refusal (sold out,
    unknown flight, `bookable` raising) leaves nothing changed, as `Writes.run` needs.
    Both run compiled (`take_seat` is `_TAKE_SEAT`, `insert_booking` `_INSERT_BOOKING`):
    through `Connection.execute` they cost booking-svc a fifth of its Python time.
    """
    rows = take_seat.rows_in(
        conn, {"b_flight": flight_id, "b_user": user_id, "b_request": request_id}
    )
    if not rows:
        found = _by_request(conn, user_id, request_id)
        if found is not None:
            return found, False
        known = conn.execute(select(FLIGHTS.c.flight_id).where(FLIGHTS.c.flight_id == flight_id))
        raise SoldOut(flight_id) if known.first() is not None else FlightNotFound(flight_id)
    price_cents, departure_time, risk = take_seat.values(rows[0])
    try:
        bookable(departure_time)
    except Exception:
        _give_back_seat(conn, flight_id)
        raise
    values = {
        "booking_id": str(uuid.uuid4()),
        "user_id": user_id,
        "flight_id": flight_id,
        "seat_class": seat_class.name,
        "passenger_name": passenger_name,
        "state": BookingState.CONFIRMED.name,
        "price_cents": price_for(seat_class, int(price_cents)),
        "delay_risk": delay_risk if risk is None else float(risk),
        "request_id": request_id,
        "create_time": datetime.now(UTC),
    }
    insert_booking.rows_in(conn, values)
    return _booking(values), True


def _give_back_seat(conn: Connection, flight_id: str) -> None:
    conn.execute(
        update(FLIGHTS)
        .where(FLIGHTS.c.flight_id == flight_id)
        .values(seats_available=FLIGHTS.c.seats_available + 1)
    )


def _by_request(conn: Connection, user_id: str, request_id: str) -> BookingRecord | None:
    row = conn.execute(
        select(BOOKINGS).where(BOOKINGS.c.user_id == user_id, BOOKINGS.c.request_id == request_id)
    ).first()
    return None if row is None else _booking(row._mapping)


def _booking_by_id(conn: Connection, booking_id: str, owner: str | None) -> BookingRecord | None:
    query = select(BOOKINGS).where(BOOKINGS.c.booking_id == booking_id)
    if owner is not None:
        query = query.where(BOOKINGS.c.user_id == owner)
    row = conn.execute(query).first()
    return None if row is None else _booking(row._mapping)


def _flight_page(
    origin: bool, destination: bool, day: bool, by_price: bool, descending: bool, after: bool
) -> Select[Any]:
    """ListFlights' statement for one shape of query, its values left as bind parameters."""
    key = FLIGHTS.c.price_cents if by_price else FLIGHTS.c.departure_time
    ident = FLIGHTS.c.flight_id
    query = select(FLIGHTS)
    if origin:
        query = query.where(FLIGHTS.c.origin == bindparam("b_origin"))
    if destination:
        query = query.where(FLIGHTS.c.destination == bindparam("b_destination"))
    if day:
        query = query.where(
            FLIGHTS.c.departure_time >= bindparam("b_day_start", type_=UTCDateTime),
            FLIGHTS.c.departure_time < bindparam("b_day_end", type_=UTCDateTime),
        )
    if after:
        after_key = bindparam("b_after_key", type_=key.type)
        query = query.where(_after(key, ident, after_key, bindparam("b_after_id"), descending))
    order = (key.desc(), ident.desc()) if descending else (key.asc(), ident.asc())
    return query.order_by(*order).limit(bindparam("b_limit", type_=Integer))


def _after(
    key: Any, ident: Any, key_value: Any, ident_value: Any, descending: bool
) -> ColumnElement[bool]:
    """Rows strictly after (key_value, ident_value) in the (key, ident) order."""
    if descending:
        return or_(key < key_value, and_(key == key_value, ident < ident_value))
    return or_(key > key_value, and_(key == key_value, ident > ident_value))


def _flight_values(new: NewFlight, now: datetime) -> dict[str, Any]:
    # Spelled out rather than asdict(): this runs for every seeded flight.
    return {
        "flight_id": str(uuid.uuid4()),
        "number": new.number,
        "origin": new.origin,
        "destination": new.destination,
        "departure_time": new.departure_time.astimezone(UTC),
        "arrival_time": new.arrival_time.astimezone(UTC),
        "seats_total": new.seats_total,
        "seats_available": new.seats_total,
        "price_cents": new.price_cents,
        "currency": new.currency,
        "create_time": now,
    }


def _flight(row: Row[Any]) -> FlightRecord:
    return FlightRecord(**row._mapping)


def _booking(values: Any) -> BookingRecord:
    fields = dict(values)
    fields["seat_class"] = SeatClass[fields["seat_class"]]
    fields["state"] = BookingState[fields["state"]]
    return BookingRecord(**fields)

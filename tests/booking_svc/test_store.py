"""Flight and booking storage on real databases: SQLite files, and PostgreSQL when installed.

Races use one engine per thread, as separate service instances would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from services.booking_svc.domain import (
    BookingNotFound,
    BookingState,
    FlightCursor,
    FlightDeparted,
    FlightFilters,
    FlightNotFound,
    NewFlight,
    OrderBy,
    SeatClass,
    SoldOut,
    parse_order_by,
    price_for,
)
from services.booking_svc.seed import seed_flights
from services.booking_svc.store import FLIGHTS, Bookable, BookingRecord, BookingStore, FlightRecord
from services.runtime.db import make_engine
from services.runtime.errors import DeadlineExceeded

T = TypeVar("T")
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RACERS = 50


def new_flight(
    minutes: int = 0,
    *,
    price: int = 19999,
    seats: int = 160,
    origin: str = "JFK",
    dest: str = "LAX",
) -> NewFlight:
    departure = START + timedelta(minutes=minutes)
    return NewFlight("B6123", origin, dest, departure, departure + timedelta(hours=6), seats, price)


# --- Databases ---------------------------------------------------------------------------
# `database_url` (tests/conftest.py): a SQLite file, then a fresh PostgreSQL database.


@pytest.fixture
def open_store(database_url: str) -> Iterator[Callable[[], BookingStore]]:
    """Opens stores on the test database, each with its own engine, like separate instances."""
    engines: list[Engine] = []
    lock = threading.Lock()

    def opener() -> BookingStore:
        engine = make_engine(database_url)
        with lock:
            engines.append(engine)
        return BookingStore(engine)

    yield opener
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store(open_store: Callable[[], BookingStore]) -> BookingStore:
    opened = open_store()
    opened.create_schema()
    return opened


def race(count: int, work: Callable[[int], T]) -> list[T | Exception]:
    """Runs `work(i)` on `count` threads released together; returns results or exceptions."""
    barrier = threading.Barrier(count)

    def run(i: int) -> T | Exception:
        barrier.wait(timeout=30)
        try:
            return work(i)
        except Exception as exc:  # noqa: BLE001 - the caller asserts on what was raised.
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def book(
    store: BookingStore,
    flight_id: str,
    user: str = "u-1",
    request: str = "r-1",
    bookable: Bookable = lambda _departs: None,
) -> Any:
    return store.create_booking(
        user_id=user,
        request_id=request,
        flight_id=flight_id,
        seat_class=SeatClass.ECONOMY,
        passenger_name="Ada Lovelace",
        price_for=price_for,
        delay_risk=0.25,
        bookable=bookable,
    )


# --- Schema and seed --------------------------------------------------------------------


def test_seed_inserts_only_into_an_empty_catalogue(store: BookingStore) -> None:
    rows = [new_flight(i) for i in range(5)]
    assert store.seed_if_empty(lambda: rows) == 5
    assert store.seed_if_empty(lambda: rows) == 0
    assert len(store.list_flights(FlightFilters(), OrderBy(), None, 100)[0]) == 5


def test_instances_starting_together_seed_exactly_once(
    open_store: Callable[[], BookingStore], database_url: str
) -> None:
    rows = [new_flight(i) for i in range(300)]
    stores = [open_store() for _ in range(4)]
    # The database exists before the race (no tables yet): two first-ever opens of one
    # SQLite file can both try `PRAGMA journal_mode=WAL`, which fails without waiting.
    first = make_engine(database_url)
    with first.connect():
        pass
    first.dispose()

    def start(i: int) -> int:
        stores[i].create_schema()
        return stores[i].seed_if_empty(lambda: rows)

    assert sorted(race(4, start), key=str) == [0, 0, 0, 300]
    assert len(stores[0].list_flights(FlightFilters(), OrderBy(), None, 1000)[0]) == 300


def test_seeding_a_real_fortnight_stores_every_flight(store: BookingStore) -> None:
    """The seeding speed is measured in bench/, not asserted here."""
    rows = seed_flights(date(2026, 6, 1), 14)
    assert store.seed_if_empty(lambda: rows) == len(rows) > 10_000
    stored, _ = store.list_flights(FlightFilters(), OrderBy(), None, 1000)
    assert len(stored) == 1000


def test_database_refuses_negative_seats(store: BookingStore, database_url: str) -> None:
    flight = store.create_flight(new_flight(seats=1))
    engine = make_engine(database_url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                update(FLIGHTS)
                .where(FLIGHTS.c.flight_id == flight.flight_id)
                .values(seats_available=-1)
            )
    finally:
        engine.dispose()


# --- Flights ------------------------------------------------------------------------------


def test_reachable_database_pings(store: BookingStore) -> None:
    store.ping()


def test_created_flight_reads_back_with_aware_utc_times(store: BookingStore) -> None:
    local = timezone(timedelta(hours=-4))
    flight = new_flight(seats=120)
    created = store.create_flight(
        replace(flight, departure_time=flight.departure_time.astimezone(local))
    )
    found = store.get_flight(created.flight_id)
    assert found == created
    assert found.departure_time == START
    assert found.departure_time.tzinfo is UTC
    assert created.departure_time.tzinfo is UTC
    assert (found.seats_total, found.seats_available) == (120, 120)


def test_flight_times_read_back_to_the_microsecond_from_get_and_list(
    store: BookingStore,
) -> None:
    flight = new_flight()
    precise = flight.departure_time.replace(microsecond=123456)
    created = store.create_flight(replace(flight, departure_time=precise))
    assert store.get_flight(created.flight_id).departure_time == precise
    assert store.list_flights(FlightFilters(), OrderBy(), None, 5)[0] == [created]


def test_unknown_flight_is_not_found(store: BookingStore) -> None:
    with pytest.raises(FlightNotFound):
        store.get_flight(str(uuid.uuid4()))


def test_filters_select_by_airports_and_utc_departure_date(store: BookingStore) -> None:
    late = store.create_flight(new_flight(11 * 60 + 59, origin="EWR", dest="SFO"))  # 23:59Z
    store.create_flight(new_flight(12 * 60, origin="EWR", dest="SFO"))  # next UTC day
    store.create_flight(new_flight(0, origin="JFK", dest="SFO"))
    store.create_flight(new_flight(0, origin="EWR", dest="LAX"))
    filters = FlightFilters("EWR", "SFO", date(2026, 6, 1))
    assert store.list_flights(filters, OrderBy(), None, 10) == ([late], None)
    assert len(store.list_flights(FlightFilters(destination="SFO"), OrderBy(), None, 10)[0]) == 3


@pytest.mark.parametrize("order", ["departure_time", "departure_time desc", "price", "price desc"])
def test_flights_come_in_the_requested_order(store: BookingStore, order: str) -> None:
    for i in range(12):
        store.create_flight(new_flight((i * 7) % 5 * 60, price=10000 + (i * 5) % 7 * 100))
    order_by = parse_order_by(order)
    found, cursor = store.list_flights(FlightFilters(), order_by, None, 100)
    assert cursor is None
    assert found == sorted(found, key=sort_key(order_by), reverse=order_by.descending)


def sort_key(order_by: OrderBy) -> Callable[[FlightRecord], tuple[Any, str]]:
    if order_by.field == "price":
        return lambda f: (f.price_cents, f.flight_id)
    return lambda f: (f.departure_time, f.flight_id)


def cursor_key(order_by: OrderBy, cursor: FlightCursor) -> tuple[Any, str]:
    value: Any = cursor.key
    if order_by.field == "departure_time":
        value = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=cursor.key)
    return value, cursor.flight_id


@pytest.mark.parametrize("order", ["departure_time", "departure_time desc", "price", "price desc"])
def test_keyset_pages_neither_skip_nor_repeat_while_flights_are_added(
    store: BookingStore, order: str
) -> None:
    """Few distinct prices and times make many ties, so the flight_id tie-break matters."""
    order_by = parse_order_by(order)
    key = sort_key(order_by)
    store.seed_if_empty(
        lambda: [new_flight(i % 6 * 30, price=10000 + i % 4 * 500) for i in range(90)]
    )
    before = store.list_flights(FlightFilters(), order_by, None, 1000)[0]
    seen: list[FlightRecord] = []
    added_after_cursor: list[FlightRecord] = []
    cursor: FlightCursor | None = None
    for page_number in range(1000):
        page, cursor = store.list_flights(FlightFilters(), order_by, cursor, 7)
        seen += page
        if cursor is None:
            break
        for extra in range(3):  # new flights around, before and after the boundary
            added = store.create_flight(
                new_flight((page_number + extra) % 7 * 30, price=10000 + extra * 500)
            )
            at = cursor_key(order_by, cursor)
            if (key(added) > at) != order_by.descending:
                added_after_cursor.append(added)
    ids = [f.flight_id for f in seen]
    assert len(ids) == len(set(ids)), "a flight was repeated"
    assert {f.flight_id for f in before} <= set(ids), "a flight was skipped"
    assert {f.flight_id for f in added_after_cursor} <= set(ids), "a new flight was skipped"
    keys = [key(f) for f in seen]
    assert keys == sorted(keys, reverse=order_by.descending)


def test_pages_with_filters_end_with_no_cursor(store: BookingStore) -> None:
    store.seed_if_empty(lambda: [new_flight(i) for i in range(10)])
    first, cursor = store.list_flights(FlightFilters(), OrderBy(), None, 5)
    assert cursor is not None
    second, cursor = store.list_flights(FlightFilters(), OrderBy(), cursor, 5)
    assert cursor is None
    assert len(first) == len(second) == 5


def test_flight_records_follow_the_flights_tables_columns() -> None:
    """Rows become FlightRecords by position, so the two must list the same fields in order."""
    assert [c.name for c in FLIGHTS.columns] == list(FlightRecord.__dataclass_fields__)


FILTER_SHAPES = [
    FlightFilters(),
    FlightFilters(origin="EWR"),
    FlightFilters(destination="SFO"),
    FlightFilters(departure_date=date(2026, 6, 1)),
    FlightFilters("EWR", "SFO", date(2026, 6, 2)),
]


@pytest.mark.parametrize("order", ["departure_time", "price desc"])
@pytest.mark.parametrize("filters", FILTER_SHAPES, ids=str)
def test_every_shape_of_query_pages_through_what_one_page_holds(
    store: BookingStore, filters: FlightFilters, order: str
) -> None:
    """Each filter combination, first page or later, with the values bound per call."""
    places = [("EWR", "SFO"), ("JFK", "SFO"), ("EWR", "LAX")]
    store.seed_if_empty(
        lambda: [
            new_flight(i * 97 % (48 * 60), price=10000 + i % 5 * 100, origin=o, dest=d)
            for i in range(60)
            for o, d in [places[i % 3]]
        ]
    )
    order_by = parse_order_by(order)
    whole, cursor = store.list_flights(filters, order_by, None, 1000)
    assert cursor is None
    assert whole, "the seed should match every filter shape"
    paged: list[FlightRecord] = []
    for _ in range(100):
        page, cursor = store.list_flights(filters, order_by, cursor, 4)
        paged += page
        if cursor is None:
            break
    assert paged == whole
    other = FlightFilters("JFK", filters.destination, filters.departure_date)
    if filters.origin is not None:  # the same compiled shape, another bound value
        assert {f.origin for f in store.list_flights(other, order_by, None, 1000)[0]} <= {"JFK"}


# --- Bookings -----------------------------------------------------------------------------


def test_booking_takes_a_seat_at_the_class_fare(store: BookingStore) -> None:
    flight = store.create_flight(new_flight(price=20001))
    booking, created = store.create_booking(
        user_id="u-1",
        request_id="r-1",
        flight_id=flight.flight_id,
        seat_class=SeatClass.PREMIUM_ECONOMY,
        passenger_name="Grace Hopper",
        price_for=price_for,
        delay_risk=None,
    )
    assert created
    assert (booking.state, booking.price_cents, booking.delay_risk) == (
        BookingState.CONFIRMED,
        30002,
        None,
    )
    assert booking.create_time.tzinfo is UTC
    assert store.get_booking(booking.booking_id) == booking
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total - 1


def test_booking_an_unknown_flight_is_flight_not_found(store: BookingStore) -> None:
    with pytest.raises(FlightNotFound):
        book(store, str(uuid.uuid4()))


def test_booking_a_full_flight_is_sold_out(store: BookingStore) -> None:
    flight = store.create_flight(new_flight(seats=1))
    book(store, flight.flight_id, request="first")
    with pytest.raises(SoldOut):
        book(store, flight.flight_id, request="second")
    assert store.get_flight(flight.flight_id).seats_available == 0


def test_fifty_racers_for_the_last_seat_get_exactly_one_booking(
    store: BookingStore, open_store: Callable[[], BookingStore]
) -> None:
    flight = store.create_flight(new_flight(seats=3))
    book(store, flight.flight_id, request="a")
    book(store, flight.flight_id, request="b")
    stores = [open_store() for _ in range(RACERS)]
    results = race(RACERS, lambda i: book(stores[i], flight.flight_id, f"user-{i}", "last"))
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1
    assert all(isinstance(r, SoldOut) for r in results if isinstance(r, Exception)), results
    assert store.get_flight(flight.flight_id).seats_available == 0
    assert len(store.list_bookings(None, None, 100)[0]) == 3


def test_racers_on_one_instance_share_write_batches_and_never_oversell(
    store: BookingStore,
) -> None:
    """Threads of one instance commit in groups; the seat count still holds exactly."""
    flight = store.create_flight(new_flight(seats=10))
    results = race(RACERS, lambda i: book(store, flight.flight_id, f"user-{i}", "r"))
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 10
    assert all(isinstance(r, SoldOut) for r in results if isinstance(r, Exception)), results
    assert store.get_flight(flight.flight_id).seats_available == 0
    assert len(store.list_bookings(None, None, 100)[0]) == 10


def test_retries_racing_on_one_instance_get_one_booking_and_one_seat(
    store: BookingStore,
) -> None:
    flight = store.create_flight(new_flight())
    results = race(RACERS, lambda _i: book(store, flight.flight_id, "u-1", "same"))
    bookings = {r[0] for r in results if not isinstance(r, Exception)}
    assert len(bookings) == 1, results
    assert sum(1 for r in results if not isinstance(r, Exception) and r[1]) == 1
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total - 1


def test_a_booking_copies_its_flights_stored_risk(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    store.record_risks("v1", {flight.flight_id: 0.75})
    booking, _ = book(store, flight.flight_id)  # book() offers 0.25: the stored one wins
    assert booking.delay_risk == 0.75
    assert store.get_booking(booking.booking_id).delay_risk == 0.75


def test_a_risk_asked_after_booking_is_stored_once(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    booking, _ = store.create_booking(
        user_id="u-1",
        request_id="r-1",
        flight_id=flight.flight_id,
        seat_class=SeatClass.ECONOMY,
        passenger_name="Ada Lovelace",
        price_for=price_for,
    )
    assert booking.delay_risk is None
    assert store.record_booking_risk(booking, 0.5).delay_risk == 0.5
    store.record_booking_risk(booking, 0.9)  # a later answer does not replace it
    assert store.get_booking(booking.booking_id).delay_risk == 0.5


def test_a_booking_whose_deadline_has_passed_is_not_made(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    with pytest.raises(DeadlineExceeded):
        store.create_booking(
            user_id="u-1",
            request_id="late",
            flight_id=flight.flight_id,
            seat_class=SeatClass.ECONOMY,
            passenger_name="Ada Lovelace",
            price_for=price_for,
            expires=time.monotonic() - 1,
        )
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total
    assert store.list_bookings("u-1", None, 10)[0] == []


def test_second_booking_with_same_request_id_returns_first(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    first, created = book(store, flight.flight_id)
    again, created_again = book(store, flight.flight_id)
    assert (created, created_again) == (True, False)
    assert again == first
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total - 1


def test_same_request_id_for_another_flight_returns_first_booking(store: BookingStore) -> None:
    one, other = store.create_flight(new_flight()), store.create_flight(new_flight(60))
    first, _ = book(store, one.flight_id)
    again, created = book(store, other.flight_id)
    assert (again, created) == (first, False)
    assert store.get_flight(other.flight_id).seats_available == other.seats_total


def _departed(departs: datetime) -> None:
    raise FlightDeparted("f")


def test_a_retry_after_departure_returns_the_first_booking(store: BookingStore) -> None:
    """The departure rule judges new bookings only: a retry still sees its outcome."""
    flight = store.create_flight(new_flight())
    first, _ = book(store, flight.flight_id)
    again, created = book(store, flight.flight_id, bookable=_departed)
    assert (again, created) == (first, False)


def test_a_refused_new_booking_takes_no_seat(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    with pytest.raises(FlightDeparted):
        book(store, flight.flight_id, request="r-new", bookable=_departed)
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total


def test_same_request_id_from_another_user_is_another_booking(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    mine, _ = book(store, flight.flight_id, user="u-1")
    theirs, created = book(store, flight.flight_id, user="u-2")
    assert created
    assert theirs.booking_id != mine.booking_id


def test_concurrent_retries_of_one_request_take_one_seat(
    store: BookingStore, open_store: Callable[[], BookingStore]
) -> None:
    flight = store.create_flight(new_flight())
    stores = [open_store() for _ in range(20)]
    results = race(20, lambda i: book(stores[i], flight.flight_id))
    assert not [r for r in results if isinstance(r, Exception)], results
    pairs: list[tuple[BookingRecord, bool]] = results  # type: ignore[assignment]
    assert len({booking.booking_id for booking, _ in pairs}) == 1
    assert [created for _, created in pairs].count(True) == 1
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total - 1


def test_cancelling_twice_frees_one_seat(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    booking, _ = book(store, flight.flight_id)
    cancelled = store.cancel_booking(booking.booking_id)
    again = store.cancel_booking(booking.booking_id)
    assert cancelled.state == BookingState.CANCELLED
    assert again == cancelled
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total


def test_racing_cancels_free_one_seat(
    store: BookingStore, open_store: Callable[[], BookingStore]
) -> None:
    flight = store.create_flight(new_flight(seats=2))
    booking, _ = book(store, flight.flight_id)
    stores = [open_store() for _ in range(20)]
    results = race(20, lambda i: stores[i].cancel_booking(booking.booking_id))
    assert {r.state for r in results if isinstance(r, BookingRecord)} == {BookingState.CANCELLED}
    assert len(results) == 20
    assert store.get_flight(flight.flight_id).seats_available == 2


def test_another_users_booking_is_not_found_and_stays_booked(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    booking, _ = book(store, flight.flight_id, user="owner")
    with pytest.raises(BookingNotFound):
        store.get_booking(booking.booking_id, owner="intruder")
    with pytest.raises(BookingNotFound):
        store.cancel_booking(booking.booking_id, owner="intruder")
    assert store.get_booking(booking.booking_id, owner="owner").state == BookingState.CONFIRMED
    assert store.get_flight(flight.flight_id).seats_available == flight.seats_total - 1


def test_unknown_booking_is_not_found(store: BookingStore) -> None:
    with pytest.raises(BookingNotFound):
        store.get_booking("nope")
    with pytest.raises(BookingNotFound):
        store.cancel_booking("nope")


def test_bookings_are_listed_newest_first_per_user_in_pages(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    made = [book(store, flight.flight_id, f"u-{i % 2}", f"r-{i}")[0] for i in range(9)]
    newest_first = sorted(made, key=lambda b: (b.create_time, b.booking_id), reverse=True)
    pages, cursor = [], None
    while True:
        page, cursor = store.list_bookings("u-0", cursor, 2)
        pages += page
        if cursor is None:
            break
    assert pages == [b for b in newest_first if b.user_id == "u-0"]
    assert store.list_bookings(None, None, 100) == (newest_first, None)


def test_reads_answer_while_another_instance_holds_an_uncommitted_booking(
    store: BookingStore, open_store: Callable[[], BookingStore], database_url: str
) -> None:
    """Reads see the last committed seats instead of queueing behind a writer's lock."""
    flight = store.create_flight(new_flight(seats=5))
    reading = open_store()
    writer = make_engine(database_url)
    try:
        with writer.begin() as conn, ThreadPoolExecutor(max_workers=1) as pool:
            conn.execute(
                update(FLIGHTS)
                .where(FLIGHTS.c.flight_id == flight.flight_id)
                .values(seats_available=FLIGHTS.c.seats_available - 1)
            )
            seen = pool.submit(reading.get_flight, flight.flight_id).result(timeout=10)
            page = pool.submit(
                reading.list_flights, FlightFilters(), parse_order_by(""), None, 20
            ).result(timeout=10)
        assert seen.seats_available == 5
        assert [f.flight_id for f in page[0]] == [flight.flight_id]
        assert store.get_flight(flight.flight_id).seats_available == 4
    finally:
        writer.dispose()


# --- Delay risks stored with flights ------------------------------------------------------


def test_a_flight_has_no_stored_risk_until_one_is_recorded(store: BookingStore) -> None:
    flight = store.create_flight(new_flight())
    assert store.get_flight_and_risk(flight.flight_id) == (flight, None)
    store.record_risks("v1", {flight.flight_id: 0.25})
    assert store.get_flight_and_risk(flight.flight_id) == (flight, 0.25)


def test_flights_needing_risk_are_upcoming_ones_without_one_from_the_version(
    store: BookingStore,
) -> None:
    past, soon, later = (store.create_flight(new_flight(m)) for m in (0, 60, 120))
    after = START + timedelta(minutes=30)
    assert store.flights_needing_risk(None, after, 10) == [soon, later]
    store.record_risks("v1", {soon.flight_id: 0.1})
    assert store.flights_needing_risk(None, after, 10) == [later]
    assert store.flights_needing_risk("v1", after, 10) == [later]
    # A newer model makes the stored risk stale; recording it again replaces it.
    assert store.flights_needing_risk("v2", after, 10) == [soon, later]
    store.record_risks("v2", {soon.flight_id: 0.3, later.flight_id: 0.4})
    assert store.flights_needing_risk("v2", after, 10) == []
    assert store.get_flight_and_risk(soon.flight_id)[1] == 0.3
    assert past.flight_id not in {f.flight_id for f in store.flights_needing_risk(None, START, 9)}


def test_instances_recording_the_same_risks_at_once_all_succeed(
    store: BookingStore, open_store: Callable[[], BookingStore]
) -> None:
    first = store
    flights = [first.create_flight(new_flight(m)).flight_id for m in range(20)]
    stores = [open_store() for _ in range(8)]
    outcomes = race(8, lambda i: stores[i].record_risks("v1", dict.fromkeys(flights, 0.5)))
    assert [o for o in outcomes if isinstance(o, Exception)] == []
    assert first.flights_needing_risk("v1", START - timedelta(days=1), 50) == []

"""Booking rules without gRPC or storage: fares, input checks, orders and cursors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from services.booking_svc.domain import (
    BookingCursor,
    BookingNotFound,
    FlightCursor,
    FlightFilters,
    FlightNotFound,
    InvalidArgument,
    NewBooking,
    NewFlight,
    OrderBy,
    SeatClass,
    SoldOut,
    from_epoch_us,
    parse_order_by,
    price_for,
    to_epoch_us,
    validate_flight_filters,
    validate_new_booking,
    validate_new_flight,
)

DEPARTURE = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
GOOD_FLIGHT: dict[str, Any] = {
    "number": "UA1545",
    "origin": "EWR",
    "destination": "IAH",
    "departure_time": DEPARTURE,
    "arrival_time": DEPARTURE + timedelta(hours=3, minutes=45),
    "seats_total": 160,
    "price_cents": 20399,
    "currency": "USD",
}


def flight_with(**changes: Any) -> NewFlight:
    """Validates the good flight with `changes` applied."""
    return validate_new_flight(**{**GOOD_FLIGHT, **changes})


def fields_of(err: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [field for field, _ in err.value.violations]


@pytest.mark.parametrize(
    ("seat_class", "base", "expected"),
    [
        (SeatClass.ECONOMY, 12345, 12345),
        (SeatClass.PREMIUM_ECONOMY, 12344, 18516),
        (SeatClass.PREMIUM_ECONOMY, 12345, 18518),
        (SeatClass.PREMIUM_ECONOMY, 1, 2),
        (SeatClass.BUSINESS, 12345, 37035),
        (SeatClass.FIRST, 12345, 61725),
    ],
)
def test_fare_is_multiplied_by_class_and_rounded_half_up(
    seat_class: SeatClass, base: int, expected: int
) -> None:
    assert price_for(seat_class, base) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", OrderBy("departure_time")),
        ("departure_time", OrderBy("departure_time")),
        ("Departure_Time  DESC", OrderBy("departure_time", descending=True)),
        ("price", OrderBy("price")),
        ("  PRICE desc ", OrderBy("price", descending=True)),
    ],
)
def test_order_by_accepts_known_orders_in_any_case_and_spacing(
    text: str, expected: OrderBy
) -> None:
    assert parse_order_by(text) == expected


@pytest.mark.parametrize("text", ["price asc", "name", "desc", "price desc desc", "price,desc"])
def test_unknown_order_by_is_invalid_argument_on_order_by(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_order_by(text)
    assert fields_of(err) == ["order_by"]


def test_flight_filters_are_upper_cased_and_parsed() -> None:
    found = validate_flight_filters(" jfk", "lax", "2026-06-01")
    assert found == FlightFilters("JFK", "LAX", date(2026, 6, 1))


def test_empty_flight_filters_mean_any() -> None:
    assert validate_flight_filters("", "", "") == FlightFilters()


@pytest.mark.parametrize("day", ["2026-6-1", "20260601", "2026-02-30", "2026-06-01T00:00", "x"])
def test_departure_date_must_be_a_strict_calendar_date(day: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_flight_filters("", "", day)
    assert fields_of(err) == ["departure_date"]


def test_every_bad_filter_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_flight_filters("JF", "L4X", "tomorrow")
    assert fields_of(err) == ["origin", "destination", "departure_date"]


def test_valid_new_flight_is_normalised() -> None:
    new = flight_with(number="ua1545", currency="usd")
    assert (new.number, new.currency, new.seats_total) == ("UA1545", "USD", 160)


def test_new_flight_times_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    new = flight_with(
        departure_time=datetime(2026, 6, 1, 16, 0, tzinfo=plus_two),
        arrival_time=datetime(2026, 6, 1, 20, 0),  # naive: taken as UTC
    )
    assert new.departure_time == DEPARTURE
    assert new.departure_time.tzinfo is UTC
    assert new.arrival_time == datetime(2026, 6, 1, 20, 0, tzinfo=UTC)


def test_every_bad_flight_field_is_reported_with_its_request_path() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_new_flight(
            number="UNITED",
            origin="",
            destination="12",
            departure_time=None,
            arrival_time=None,
            seats_total=0,
            price_cents=0,
            currency="dollars",
        )
    assert fields_of(err) == [
        "flight.number",
        "flight.origin",
        "flight.destination",
        "flight.departure_time",
        "flight.arrival_time",
        "flight.seats_total",
        "flight.price_cents",
        "flight.currency",
    ]


def test_flight_to_its_own_origin_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        flight_with(destination="ewr")
    assert fields_of(err) == ["flight.destination"]


@pytest.mark.parametrize("minutes", [0, -30])
def test_arrival_must_follow_departure(minutes: int) -> None:
    arrival = DEPARTURE + timedelta(minutes=minutes)
    with pytest.raises(InvalidArgument) as err:
        flight_with(arrival_time=arrival)
    assert fields_of(err) == ["flight.arrival_time"]


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [("seats_total", [1, 1000], [0, 1001]), ("price_cents", [1, 10_000_000], [0, 10_000_001])],
)
def test_seats_and_price_have_inclusive_bounds(field: str, good: list[int], bad: list[int]) -> None:
    for value in good:
        flight_with(**{field: value})
    for value in bad:
        with pytest.raises(InvalidArgument) as err:
            flight_with(**{field: value})
        assert fields_of(err) == [f"flight.{field}"]


def test_valid_booking_request_strips_the_passenger_name() -> None:
    found = validate_new_booking("f-1", 3, "  Ada Lovelace ", "req-1:a.b_c")
    assert found == NewBooking("f-1", SeatClass.BUSINESS, "Ada Lovelace", "req-1:a.b_c")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", 1, "Ada", "r"), "flight_id"),
        (("f", 0, "Ada", "r"), "seat_class"),
        (("f", 9, "Ada", "r"), "seat_class"),
        (("f", 1, "   ", "r"), "passenger_name"),
        (("f", 1, "A" * 101, "r"), "passenger_name"),
        (("f", 1, "Ada\nLovelace", "r"), "passenger_name"),
        (("f", 1, "Ada", ""), "request_id"),
        (("f", 1, "Ada", "r" * 65), "request_id"),
        (("f", 1, "Ada", "has space"), "request_id"),
    ],
)
def test_bad_booking_field_is_named(args: tuple[str, int, str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_new_booking(*args)
    assert fields_of(err) == [field]


def test_passenger_name_of_one_hundred_characters_is_accepted() -> None:
    assert len(validate_new_booking("f", 1, "A" * 100, "r" * 64).passenger_name) == 100


def test_every_bad_booking_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_new_booking("", 0, "", "")
    assert fields_of(err) == ["flight_id", "seat_class", "passenger_name", "request_id"]


def test_domain_errors_carry_the_contract_status_codes() -> None:
    assert SoldOut("f").code == grpc.StatusCode.ALREADY_EXISTS
    assert SoldOut("f").reason == "SOLD_OUT"
    assert FlightNotFound("f").code == grpc.StatusCode.NOT_FOUND
    assert BookingNotFound("b").code == grpc.StatusCode.NOT_FOUND
    assert InvalidArgument([("x", "y")]).code == grpc.StatusCode.INVALID_ARGUMENT


def test_cursors_round_trip_through_plain_dicts() -> None:
    flight = FlightCursor(1_780_000_000_000_000, "f-1")
    booking = BookingCursor(1_780_000_000_000_001, "b-1")
    assert FlightCursor.from_dict(flight.to_dict()) == flight
    assert BookingCursor.from_dict(booking.to_dict()) == booking


@pytest.mark.parametrize("raw", [{}, {"k": "1", "id": "f"}, {"k": True, "id": "f"}, {"k": 1}])
def test_malformed_cursor_is_invalid_page_token(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as err:
        FlightCursor.from_dict(raw)
    assert fields_of(err) == ["page_token"]


def test_epoch_microseconds_round_trip() -> None:
    moment = datetime(2026, 6, 1, 14, 0, 0, 123456, tzinfo=UTC)
    assert from_epoch_us(to_epoch_us(moment)) == moment


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1999-12-31", "2100-01-01"])
def test_departure_date_outside_the_window_is_invalid(day: str) -> None:
    """9999-12-31 overflowed in the store's date arithmetic (INTERNAL)."""
    with pytest.raises(InvalidArgument) as err:
        validate_flight_filters("", "", day)
    assert fields_of(err) == ["departure_date"]


def test_departure_dates_at_the_window_edges_are_valid() -> None:
    assert validate_flight_filters("", "", "2000-01-01").departure_date == date(2000, 1, 1)
    assert validate_flight_filters("", "", "2099-12-31").departure_date == date(2099, 12, 31)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(9999, 12, 31, 23, 0, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
    ],
)
def test_flight_times_outside_the_window_are_invalid(moment: datetime) -> None:
    with pytest.raises(InvalidArgument) as err:
        flight_with(departure_time=moment, arrival_time=moment)
    assert set(fields_of(err)) == {"flight.departure_time", "flight.arrival_time"}

"""Booking rules that need no gRPC and no database: fares, input checks, orders, cursors.

The servicer validates with these functions before touching storage; the errors are
the runtime's domain errors, so one interceptor maps them to gRPC status codes.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "BookingCursor",
    "BookingNotFound",
    "BookingState",
    "FlightCursor",
    "FlightDeparted",
    "FlightFilters",
    "FlightNotFound",
    "InvalidArgument",
    "NewBooking",
    "NewFlight",
    "OrderBy",
    "SeatClass",
    "SoldOut",
    "check_bookable",
    "parse_order_by",
    "price_for",
    "validate_flight_filters",
    "validate_new_booking",
    "validate_new_flight",
]

IATA_RE = re.compile(r"^[A-Z]{3}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
FLIGHT_NUMBER_RE = re.compile(r"^[A-Z0-9]{2}\d{1,4}$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_PASSENGER_NAME = 100
MAX_SEATS = 1000
MAX_PRICE_CENTS = 10_000_000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# The times a flight may have and a filter may name. Python's datetime ends at year
# 9999, so without a window a far-future date overflowed in date arithmetic (INTERNAL).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""Exclusive."""
_WINDOW = "from 2000-01-01 to 2099-12-31 (UTC)"


class FlightNotFound(NotFound):
    """No flight has this id."""

    reason = "FLIGHT_NOT_FOUND"

    def __init__(self, flight_id: str) -> None:
        super().__init__("flight not found", metadata={"flight_id": flight_id})


class BookingNotFound(NotFound):
    """No booking has this id, or it belongs to someone else (the caller must not learn which)."""

    reason = "BOOKING_NOT_FOUND"

    def __init__(self, booking_id: str) -> None:
        super().__init__("booking not found", metadata={"booking_id": booking_id})


class SoldOut(AlreadyExists):
    """The flight has no seat left; the contract maps this to ALREADY_EXISTS (HTTP 409)."""

    reason = "SOLD_OUT"

    def __init__(self, flight_id: str) -> None:
        super().__init__("the flight has no seat left", metadata={"flight_id": flight_id})


class FlightDeparted(FailedPrecondition):
    """The flight has already departed: it can no longer be booked."""

    reason = "FLIGHT_DEPARTED"

    def __init__(self, flight_id: str) -> None:
        super().__init__(
            "the flight has already departed and can no longer be booked",
            metadata={"flight_id": flight_id},
        )


def check_bookable(flight_id: str, departure_time: datetime, now: datetime) -> None:
    """FlightDeparted unless the flight departs after `now`."""
    if departure_time <= now:
        raise FlightDeparted(flight_id)


class SeatClass(enum.IntEnum):
    """Cabin classes, numbered as `Booking.SeatClass` in the proto."""

    ECONOMY = 1
    PREMIUM_ECONOMY = 2
    BUSINESS = 3
    FIRST = 4


class BookingState(enum.IntEnum):
    """Booking lifecycle, numbered as `Booking.State` in the proto."""

    CONFIRMED = 1
    CANCELLED = 2


FARE_MULTIPLIERS: Mapping[SeatClass, Fraction] = {
    SeatClass.ECONOMY: Fraction(1),
    SeatClass.PREMIUM_ECONOMY: Fraction(3, 2),
    SeatClass.BUSINESS: Fraction(3),
    SeatClass.FIRST: Fraction(5),
}


def price_for(seat_class: SeatClass, base_price_cents: int) -> int:
    """The fare for `seat_class` in integer cents, rounded half up (exact, no floats)."""
    return math.floor(FARE_MULTIPLIERS[seat_class] * base_price_cents + Fraction(1, 2))


@dataclass(frozen=True, slots=True)
class OrderBy:
    """A flight ordering: `field` is "departure_time" or "price"."""

    field: str = "departure_time"
    descending: bool = False


_ORDERS = {
    "": OrderBy(),
    "departure_time": OrderBy("departure_time"),
    "departure_time desc": OrderBy("departure_time", descending=True),
    "price": OrderBy("price"),
    "price desc": OrderBy("price", descending=True),
}


def parse_order_by(text: str) -> OrderBy:
    """Parses `order_by` (case and extra whitespace ignored); unknown values are refused."""
    found = _ORDERS.get(" ".join(text.lower().split()))
    if found is None:
        raise InvalidArgument(
            [("order_by", 'must be "departure_time" or "price", optionally followed by " desc"')]
        )
    return found


@dataclass(frozen=True, slots=True)
class FlightFilters:
    """ListFlights filters; None means "any". `departure_date` is a UTC date."""

    origin: str | None = None
    destination: str | None = None
    departure_date: date | None = None


def validate_flight_filters(origin: str, destination: str, departure_date: str) -> FlightFilters:
    """Checks the ListFlights filters (empty means unset) and returns them normalised."""
    violations: list[tuple[str, str]] = []
    codes = {
        name: _iata(value, name, violations, required=False)
        for name, value in (("origin", origin), ("destination", destination))
    }
    day: date | None = None
    if departure_date:
        day = _parse_date(departure_date)
        if day is None:
            violations.append(("departure_date", "must be a date as YYYY-MM-DD"))
        elif not EARLIEST.date() <= day < LATEST.date():
            violations.append(("departure_date", f"must be a date {_WINDOW}"))
    if violations:
        raise InvalidArgument(violations)
    return FlightFilters(codes["origin"], codes["destination"], day)


@dataclass(frozen=True, slots=True)
class NewFlight:
    """A flight to add to the catalogue; times are aware UTC datetimes."""

    number: str
    origin: str
    destination: str
    departure_time: datetime
    arrival_time: datetime
    seats_total: int
    price_cents: int
    currency: str = "USD"


def validate_new_flight(
    *,
    number: str,
    origin: str,
    destination: str,
    departure_time: datetime | None,
    arrival_time: datetime | None,
    seats_total: int,
    price_cents: int,
    currency: str,
) -> NewFlight:
    """Checks a CreateFlight request; all violations at once, as request field paths.

    Codes are upper-cased before checking. Naive datetimes are taken as UTC. Field
    paths are "flight.<name>" because the request nests the flight under `flight`.
    """
    violations: list[tuple[str, str]] = []
    number = number.strip().upper()
    if not FLIGHT_NUMBER_RE.match(number):
        violations.append(("flight.number", "must be a carrier code and 1-4 digits, e.g. UA1545"))
    src = _iata(origin, "flight.origin", violations, required=True)
    dst = _iata(destination, "flight.destination", violations, required=True)
    if src and dst and src == dst:
        violations.append(("flight.destination", "must differ from origin"))
    dep = _as_utc(departure_time)
    arr = _as_utc(arrival_time)
    for name, moment in (("departure_time", dep), ("arrival_time", arr)):
        if moment is None:
            violations.append((f"flight.{name}", "is required"))
        elif not EARLIEST <= moment < LATEST:
            violations.append((f"flight.{name}", f"must be a time {_WINDOW}"))
    if dep is not None and arr is not None and arr <= dep:
        violations.append(("flight.arrival_time", "must be after departure_time"))
    if not 1 <= seats_total <= MAX_SEATS:
        violations.append(("flight.seats_total", f"must be 1..{MAX_SEATS}"))
    if not 1 <= price_cents <= MAX_PRICE_CENTS:
        violations.append(("flight.price_cents", f"must be 1..{MAX_PRICE_CENTS}"))
    currency = currency.strip().upper()
    if not CURRENCY_RE.match(currency):
        violations.append(("flight.currency", "must be an ISO 4217 code, e.g. USD"))
    if violations or src is None or dst is None or dep is None or arr is None:
        raise InvalidArgument(violations)
    return NewFlight(number, src, dst, dep, arr, seats_total, price_cents, currency)


@dataclass(frozen=True, slots=True)
class NewBooking:
    """A checked CreateBooking request."""

    flight_id: str
    seat_class: SeatClass
    passenger_name: str
    request_id: str


def validate_new_booking(
    flight_id: str, seat_class: int, passenger_name: str, request_id: str
) -> NewBooking:
    """Checks a CreateBooking request; all violations at once, named as in the proto."""
    violations: list[tuple[str, str]] = []
    flight_id = flight_id.strip()
    if not flight_id:
        violations.append(("flight_id", "is required"))
    cabin: SeatClass | None = None
    if seat_class == 0:
        violations.append(("seat_class", "is required"))
    elif seat_class not in SeatClass._value2member_map_:
        violations.append(("seat_class", "is not a known seat class"))
    else:
        cabin = SeatClass(seat_class)
    name = passenger_name.strip()
    if not 1 <= len(name) <= MAX_PASSENGER_NAME:
        violations.append(("passenger_name", f"must be 1..{MAX_PASSENGER_NAME} characters"))
    elif CONTROL_RE.search(name):
        violations.append(("passenger_name", "must not contain control characters"))
    if not REQUEST_ID_RE.match(request_id):
        violations.append(("request_id", "must be 1..64 characters of A-Z a-z 0-9 . _ : -"))
    if violations or cabin is None:
        raise InvalidArgument(violations)
    return NewBooking(flight_id, cabin, name, request_id)


@dataclass(frozen=True, slots=True)
class FlightCursor:
    """Where a flight page ended: the sort value of its last flight and that flight's id.

    `key` is `price_cents` for price orders and the departure time in microseconds
    since the epoch for departure orders, so the cursor is plain JSON either way.
    """

    key: int
    flight_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.key, "id": self.flight_id}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FlightCursor:
        key, ident = raw.get("k"), raw.get("id")
        if type(key) is not int or not isinstance(ident, str):
            raise _bad_page_token()
        return cls(key, ident)


@dataclass(frozen=True, slots=True)
class BookingCursor:
    """Where a booking page ended: the last booking's create time (epoch µs) and id."""

    create_time_us: int
    booking_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.create_time_us, "id": self.booking_id}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BookingCursor:
        key, ident = raw.get("t"), raw.get("id")
        if type(key) is not int or not isinstance(ident, str):
            raise _bad_page_token()
        return cls(key, ident)


def to_epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    return (moment - EPOCH) // _MICROSECOND


def from_epoch_us(micros: int) -> datetime:
    """The aware UTC datetime `micros` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


def _bad_page_token() -> InvalidArgument:
    return InvalidArgument([("page_token", "is not a token this query returned")])


def _iata(
    value: str, field: str, violations: list[tuple[str, str]], *, required: bool
) -> str | None:
    code = value.strip().upper()
    if not code:
        if required:
            violations.append((field, "is required"))
        return None
    if not IATA_RE.match(code):
        violations.append((field, "must be a 3-letter IATA airport code"))
        return None
    return code


def _parse_date(text: str) -> date | None:
    if not DATE_RE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

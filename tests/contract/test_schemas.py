"""contract/schemas.py: the limits the document states are the ones the services check."""

from __future__ import annotations

from contract.schemas import LIMITS, PAGE_SIZE
from services.booking_svc import domain as booking
from services.runtime import pagination
from services.user_svc import domain as users


def limit(name: str, key: str) -> object:
    return LIMITS[name][key]


def test_user_limits_are_user_svc_s() -> None:
    request = "airline.user.v1.CreateUserRequest"
    assert limit(f"{request}.password", "minLength") == users.PASSWORD_MIN_CHARS
    assert limit(f"{request}.password", "maxLength") == users.PASSWORD_MAX_CHARS
    assert limit(f"{request}.email", "maxLength") == users.EMAIL_MAX_CHARS
    assert limit(f"{request}.display_name", "maxLength") == users.DISPLAY_NAME_MAX_CHARS


def test_booking_limits_are_booking_svc_s() -> None:
    request = "airline.booking.v1.CreateBookingRequest"
    assert limit(f"{request}.passenger_name", "maxLength") == booking.MAX_PASSENGER_NAME
    assert limit(f"{request}.request_id", "pattern") == booking.REQUEST_ID_RE.pattern
    assert limit("airline.booking.v1.Flight.seats_total", "maximum") == booking.MAX_SEATS
    assert limit("airline.booking.v1.Flight.price_cents", "maximum") == booking.MAX_PRICE_CENTS
    assert limit("airline.booking.v1.Flight.origin", "pattern") == booking.IATA_RE.pattern
    assert limit("airline.booking.v1.Flight.currency", "pattern") == booking.CURRENCY_RE.pattern


def test_page_size_default_and_cap_are_the_paginator_s() -> None:
    text = str(PAGE_SIZE["description_suffix"])
    assert f"Default {pagination.DEFAULT_PAGE_SIZE};" in text
    assert f"above {pagination.MAX_PAGE_SIZE} is clamped" in text

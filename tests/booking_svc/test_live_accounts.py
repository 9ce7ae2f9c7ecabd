"""booking-svc refuses the still-valid tokens of deleted and deactivated accounts at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from grpc import StatusCode

from airline.booking.v1 import booking_pb2
from tests.conftest import Account, Stack
from tests.live_accounts import deactivate, delete, refusal

Call = Callable[[Stack, Account], object]

CALLS: dict[str, Call] = {
    "list": lambda s, a: s.bookings.ListBookings(
        booking_pb2.ListBookingsRequest(), metadata=a.auth, timeout=10
    ),
    "get": lambda s, a: s.bookings.GetBooking(
        booking_pb2.GetBookingRequest(booking_id="any"), metadata=a.auth, timeout=10
    ),
    "cancel": lambda s, a: s.bookings.CancelBooking(
        booking_pb2.CancelBookingRequest(booking_id="any"), metadata=a.auth, timeout=10
    ),
    "create": lambda s, a: s.bookings.CreateBooking(
        booking_pb2.CreateBookingRequest(
            flight_id="any",
            seat_class=booking_pb2.Booking.ECONOMY,
            passenger_name="Ada",
            request_id="r1",
        ),
        metadata=a.auth,
        timeout=10,
    ),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_deleted_users_token_is_unauthenticated_on_the_next_call(
    stack: Stack, call: Call
) -> None:
    me = stack.sign_up()
    delete(stack, me)

    assert refusal(lambda: call(stack, me)) == StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_deactivated_users_token_is_permission_denied_on_the_next_call(
    stack: Stack, call: Call
) -> None:
    me = stack.sign_up()
    deactivate(stack, me)

    assert refusal(lambda: call(stack, me)) == StatusCode.PERMISSION_DENIED


# --- CreateBooking right after a booking: the default remembers nothing ---------------------
# (LiveAccounts with a TTL an operator sets is tested with a hand-moved clock in
# test_accounts.py.)


def _book_any(stack: Stack, account: Account) -> object:
    """Books a seat on an upcoming flight with seats left (other tests of the session add
    departed and full flights to the catalogue)."""
    page = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(page_size=100), timeout=10)
    now = datetime.now(UTC)
    flight = next(
        f
        for f in page.flights
        if f.seats_available > 0 and f.departure_time.ToDatetime(tzinfo=UTC) > now
    )
    return stack.bookings.CreateBooking(
        booking_pb2.CreateBookingRequest(
            flight_id=flight.flight_id,
            seat_class=booking_pb2.Booking.ECONOMY,
            passenger_name="Ada",
            request_id=uuid.uuid4().hex,
        ),
        metadata=account.auth,
        timeout=10,
    )


def test_a_deleted_user_who_just_booked_is_refused_on_the_next_booking(stack: Stack) -> None:
    me = stack.sign_up()
    _book_any(stack, me)  # with a live-account cache, this answer would be remembered
    delete(stack, me)

    assert refusal(lambda: _book_any(stack, me)) == StatusCode.UNAUTHENTICATED


def test_a_deactivated_user_who_just_booked_is_refused_on_the_next_booking(stack: Stack) -> None:
    me = stack.sign_up()
    _book_any(stack, me)
    deactivate(stack, me)

    assert refusal(lambda: _book_any(stack, me)) == StatusCode.PERMISSION_DENIED

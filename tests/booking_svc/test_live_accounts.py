"""booking-svc refuses the still-valid tokens of deleted and deactivated accounts at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from grpc import StatusCode

from airline.booking.v1 import booking_pb2
from services.booking_svc.accounts import DEFAULT_TTL_SECONDS
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
            flight_id="any", seat_class=1, passenger_name="Ada", request_id="r1"
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


# --- CreateBooking remembers a live account for at most LIVE_ACCOUNT_CACHE_SECONDS ---------

# booking-svc's default bound (BookingConfig.live_account_cache_seconds), with room for
# a busy machine; the test polls, so it ends as soon as the refusal comes.
REFUSED_WITHIN_SECONDS = DEFAULT_TTL_SECONDS + 8.0


def _book_any(stack: Stack, account: Account) -> object:
    flight = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(page_size=1), timeout=10)
    return stack.bookings.CreateBooking(
        booking_pb2.CreateBookingRequest(
            flight_id=flight.flights[0].flight_id,
            seat_class=1,  # type: ignore[arg-type]
            passenger_name="Ada",
            request_id=uuid.uuid4().hex,
        ),
        metadata=account.auth,
        timeout=10,
    )


def _refused_within(seconds: float, call: Callable[[], object]) -> StatusCode:
    """The code `call` first fails with, calling it until it fails or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            call()
        except grpc.RpcError as err:
            return err.code()
        time.sleep(0.05)
    pytest.fail(f"still accepted {seconds} s after the change")


def test_a_deleted_user_who_just_booked_is_refused_within_the_bound(stack: Stack) -> None:
    me = stack.sign_up()
    _book_any(stack, me)  # the live answer is now remembered
    delete(stack, me)

    assert refusal(lambda: CALLS["list"](stack, me)) == StatusCode.UNAUTHENTICATED
    code = _refused_within(REFUSED_WITHIN_SECONDS, lambda: _book_any(stack, me))
    assert code == StatusCode.UNAUTHENTICATED


def test_a_deactivated_user_who_just_booked_is_refused_within_the_bound(stack: Stack) -> None:
    me = stack.sign_up()
    _book_any(stack, me)
    deactivate(stack, me)

    assert refusal(lambda: CALLS["list"](stack, me)) == StatusCode.PERMISSION_DENIED
    code = _refused_within(REFUSED_WITHIN_SECONDS, lambda: _book_any(stack, me))
    assert code == StatusCode.PERMISSION_DENIED

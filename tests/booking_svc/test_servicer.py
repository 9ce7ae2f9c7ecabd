"""BookingService over gRPC, with the real user-svc, auth-svc and predict-svc."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from airline.user.v1 import user_pb2
from services.booking_svc import server as booking_server
from services.booking_svc.domain import NewFlight
from services.booking_svc.servicer import flight_message
from services.booking_svc.store import BookingStore, FlightRecord
from services.runtime.db import make_engine
from services.runtime.errors import field_violations
from tests.conftest import Account, Stack, address, channel_to, make_config, serving
from tests.support import PREDICT_TIMEOUT_SECONDS

Booking = booking_pb2.Booking


def _code(call: object, request: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10, **kwargs)  # type: ignore[operator]
    return err.value.code()


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


def _new_flight(stack: Stack, seats: int = 10, price: int = 10_000) -> booking_pb2.Flight:
    assert stack.admin is not None
    departure = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    flight = booking_pb2.Flight(
        number="UA1545",
        origin="EWR",
        destination="IAH",
        departure_time=_ts(departure),
        arrival_time=_ts(departure + timedelta(hours=3)),
        seats_total=seats,
        price_cents=price,
        currency="USD",
    )
    return stack.bookings.CreateFlight(
        booking_pb2.CreateFlightRequest(flight=flight), metadata=stack.admin.auth, timeout=10
    )


def _book(
    stubs: booking_pb2_grpc.BookingServiceStub,
    who: Account,
    flight_id: str,
    request_id: str | None = None,
    seat_class: int = Booking.ECONOMY,
) -> Booking:
    return stubs.CreateBooking(
        booking_pb2.CreateBookingRequest(
            flight_id=flight_id,
            seat_class=seat_class,  # type: ignore[arg-type]
            passenger_name="Grace Hopper",
            request_id=request_id or uuid.uuid4().hex,
        ),
        metadata=who.auth,
        timeout=10,
    )


def _seats(stack: Stack, flight_id: str) -> int:
    flight = stack.bookings.GetFlight(booking_pb2.GetFlightRequest(flight_id=flight_id), timeout=10)
    return flight.seats_available


# --- flights -------------------------------------------------------------------------


def test_seeded_catalogue_lists_real_flights_twenty_to_a_page(stack: Stack) -> None:
    page = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(), timeout=10)
    assert len(page.flights) == 20
    assert page.next_page_token
    times = [f.departure_time.ToDatetime() for f in page.flights]
    assert times == sorted(times)
    assert all(f.origin in {"EWR", "JFK", "LGA"} for f in page.flights)


def test_a_listed_flight_is_the_message_get_flight_answers(stack: Stack) -> None:
    """Pages build their flights in place; each must be whole, every field as GetFlight's."""
    page = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(page_size=3), timeout=10)
    for listed in page.flights:
        got = stack.bookings.GetFlight(
            booking_pb2.GetFlightRequest(flight_id=listed.flight_id), timeout=10
        )
        assert listed == got
        assert listed.HasField("departure_time")
        assert listed.HasField("arrival_time")
        assert (listed.seats_total, listed.price_cents, listed.currency) != (0, 0, "")


def test_filters_and_price_order_apply_across_pages(stack: Stack) -> None:
    first = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(page_size=1), timeout=10)
    day = first.flights[0].departure_time.ToDatetime().date().isoformat()
    request = booking_pb2.ListFlightsRequest(
        origin="jfk", departure_date=day, order_by="price desc", page_size=50
    )
    flights: list[booking_pb2.Flight] = []
    while True:
        page = stack.bookings.ListFlights(request, timeout=10)
        flights += page.flights
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert flights
    assert {f.origin for f in flights} == {"JFK"}
    assert {f.departure_time.ToDatetime().date().isoformat() for f in flights} == {day}
    prices = [f.price_cents for f in flights]
    assert prices == sorted(prices, reverse=True)
    assert len({f.flight_id for f in flights}) == len(flights)


@pytest.mark.parametrize(
    ("field", "request_fields"),
    [
        ("order_by", {"order_by": "seats"}),
        ("origin", {"origin": "NEWARK"}),
        ("departure_date", {"departure_date": "2026-13-45"}),
        ("departure_date", {"departure_date": "9999-12-31"}),  # overflowed in the store
        ("departure_date", {"departure_date": "0001-01-01"}),
    ],
)
def test_bad_filters_are_invalid_argument_naming_the_field(
    stack: Stack, field: str, request_fields: dict[str, Any]
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(**request_fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in {f for f, _ in field_violations(err.value)}


def test_page_token_with_other_filters_or_tampered_is_invalid(stack: Stack) -> None:
    page = stack.bookings.ListFlights(booking_pb2.ListFlightsRequest(page_size=2), timeout=10)
    replayed = booking_pb2.ListFlightsRequest(page_token=page.next_page_token, order_by="price")
    assert _code(stack.bookings.ListFlights, replayed) == grpc.StatusCode.INVALID_ARGUMENT
    tampered = booking_pb2.ListFlightsRequest(page_token="A" + page.next_page_token[1:])
    assert _code(stack.bookings.ListFlights, tampered) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_flight_is_not_found(stack: Stack) -> None:
    request = booking_pb2.GetFlightRequest(flight_id=str(uuid.uuid4()))
    assert _code(stack.bookings.GetFlight, request) == grpc.StatusCode.NOT_FOUND


def test_not_found_messages_do_not_quote_the_id(stack: Stack) -> None:
    me = stack.sign_up()
    calls: list[tuple[Any, Message]] = [
        (stack.bookings.GetFlight, booking_pb2.GetFlightRequest(flight_id="no-such-id")),
        (stack.bookings.GetBooking, booking_pb2.GetBookingRequest(booking_id="no-such-id")),
        (stack.bookings.CancelBooking, booking_pb2.CancelBookingRequest(booking_id="no-such-id")),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=me.auth, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-id" not in str(err.value.details())


def test_admin_creates_a_flight_with_every_seat_available(stack: Stack) -> None:
    flight = _new_flight(stack, seats=7)
    assert (flight.seats_total, flight.seats_available) == (7, 7)
    got = stack.bookings.GetFlight(
        booking_pb2.GetFlightRequest(flight_id=flight.flight_id), timeout=10
    )
    assert got == flight


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 3, 10, 5, 7, 123456, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),  # before the epoch
        datetime(1970, 1, 1, tzinfo=UTC),
    ],
)
def test_a_flights_times_map_to_timestamps_to_the_microsecond(moment: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(moment)
    record = FlightRecord(
        "f-1", "UA1", "JFK", "LAX", moment, moment + timedelta(hours=6), 9, 8, 100, "USD", moment
    )
    message = flight_message(record)
    assert message.departure_time == expected
    assert message.arrival_time.ToDatetime(tzinfo=UTC) == moment + timedelta(hours=6)


def test_non_admin_cannot_create_a_flight(stack: Stack) -> None:
    me = stack.sign_up()
    request = booking_pb2.CreateFlightRequest(flight=booking_pb2.Flight(number="UA1"))
    assert _code(stack.bookings.CreateFlight, request, metadata=me.auth) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_bad_new_flight_names_each_field(stack: Stack) -> None:
    assert stack.admin is not None
    request = booking_pb2.CreateFlightRequest(
        flight=booking_pb2.Flight(
            number="??", origin="NOT-AN-AIRPORT", destination="EWR", seats_total=0
        )
    )
    with pytest.raises(grpc.RpcError) as err:
        stack.bookings.CreateFlight(request, metadata=stack.admin.auth, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in field_violations(err.value)}
    # A merely wrong code is within its length ceiling: every field is still named at once.
    assert {
        "flight.number",
        "flight.origin",
        "flight.seats_total",
        "flight.departure_time",
    } <= fields


# --- bookings ------------------------------------------------------------------------


def test_booking_takes_a_seat_prices_the_class_and_carries_delay_risk(stack: Stack) -> None:
    me, flight = stack.sign_up(), _new_flight(stack, seats=5, price=10_000)
    booking, call = stack.bookings.CreateBooking.with_call(
        booking_pb2.CreateBookingRequest(
            flight_id=flight.flight_id,
            seat_class=Booking.BUSINESS,
            passenger_name="Grace Hopper",
            request_id=uuid.uuid4().hex,
        ),
        metadata=me.auth,
        timeout=10,
    )
    assert (booking.state, booking.price_cents, booking.user_id) == (
        Booking.CONFIRMED,
        30_000,
        me.user.user_id,
    )
    assert booking.HasField("delay_risk")
    assert 0 <= booking.delay_risk <= 1
    headers = dict(call.initial_metadata())
    assert headers["location"] == f"/v1/bookings/{booking.booking_id}"
    assert _seats(stack, flight.flight_id) == 4


def test_same_request_id_returns_the_first_booking_and_takes_one_seat(stack: Stack) -> None:
    me, flight = stack.sign_up(), _new_flight(stack, seats=5)
    key = uuid.uuid4().hex
    first = _book(stack.bookings, me, flight.flight_id, key)
    with ThreadPoolExecutor(8) as pool:
        again = list(pool.map(lambda _: _book(stack.bookings, me, flight.flight_id, key), range(8)))
    assert {b.booking_id for b in again} == {first.booking_id}
    assert _seats(stack, flight.flight_id) == 4


def test_fifty_racing_bookings_for_the_last_seat_have_exactly_one_winner(stack: Stack) -> None:
    flight = _new_flight(stack, seats=1)
    racers = [stack.sign_up() for _ in range(50)]

    def attempt(who: Account) -> grpc.StatusCode:
        try:
            _book(stack.bookings, who, flight.flight_id)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(attempt, racers))
    assert outcomes.count(grpc.StatusCode.OK) == 1
    assert outcomes.count(grpc.StatusCode.ALREADY_EXISTS) == 49
    assert _seats(stack, flight.flight_id) == 0


def test_no_seat_left_is_already_exists(stack: Stack) -> None:
    me, flight = stack.sign_up(), _new_flight(stack, seats=1)
    _book(stack.bookings, me, flight.flight_id)
    with pytest.raises(grpc.RpcError) as err:
        _book(stack.bookings, me, flight.flight_id)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_booking_an_unknown_flight_is_not_found(stack: Stack) -> None:
    me = stack.sign_up()
    with pytest.raises(grpc.RpcError) as err:
        _book(stack.bookings, me, str(uuid.uuid4()))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_booking_without_a_token_is_unauthenticated(stack: Stack) -> None:
    request = booking_pb2.CreateBookingRequest(
        flight_id="x", seat_class=Booking.ECONOMY, passenger_name="A", request_id="r1"
    )
    assert _code(stack.bookings.CreateBooking, request) == grpc.StatusCode.UNAUTHENTICATED


def test_bad_booking_fields_are_each_named(stack: Stack) -> None:
    me = stack.sign_up()
    with pytest.raises(grpc.RpcError) as err:
        stack.bookings.CreateBooking(
            booking_pb2.CreateBookingRequest(flight_id="", passenger_name=" ", request_id="a b"),
            metadata=me.auth,
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(err.value)} >= {
        "flight_id",
        "seat_class",
        "passenger_name",
        "request_id",
    }


def test_deactivated_user_with_a_live_token_cannot_book(stack: Stack) -> None:
    assert stack.admin is not None
    me, flight = stack.sign_up(), _new_flight(stack)
    stack.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(user_id=me.user.user_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=stack.admin.auth,
        timeout=10,
    )
    with pytest.raises(grpc.RpcError) as err:
        _book(stack.bookings, me, flight.flight_id)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _seats(stack, flight.flight_id) == flight.seats_total


def test_users_list_their_own_bookings_newest_first(stack: Stack) -> None:
    me, other, flight = stack.sign_up(), stack.sign_up(), _new_flight(stack)
    mine = [_book(stack.bookings, me, flight.flight_id) for _ in range(3)]
    _book(stack.bookings, other, flight.flight_id)
    listed = stack.bookings.ListBookings(
        booking_pb2.ListBookingsRequest(page_size=2), metadata=me.auth, timeout=10
    )
    rest = stack.bookings.ListBookings(
        booking_pb2.ListBookingsRequest(page_size=2, page_token=listed.next_page_token),
        metadata=me.auth,
        timeout=10,
    )
    ids = [b.booking_id for b in [*listed.bookings, *rest.bookings]]
    assert ids == [b.booking_id for b in reversed(mine)]
    assert not rest.next_page_token


def test_admin_filters_bookings_by_user_and_others_may_not(stack: Stack) -> None:
    assert stack.admin is not None
    me, other, flight = stack.sign_up(), stack.sign_up(), _new_flight(stack)
    booking = _book(stack.bookings, other, flight.flight_id)
    listed = stack.bookings.ListBookings(
        booking_pb2.ListBookingsRequest(user_id=other.user.user_id),
        metadata=stack.admin.auth,
        timeout=10,
    )
    assert [b.booking_id for b in listed.bookings] == [booking.booking_id]
    request = booking_pb2.ListBookingsRequest(user_id=other.user.user_id)
    assert _code(stack.bookings.ListBookings, request, metadata=me.auth) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_another_users_booking_is_not_found_and_admin_sees_it(stack: Stack) -> None:
    assert stack.admin is not None
    me, other, flight = stack.sign_up(), stack.sign_up(), _new_flight(stack)
    booking = _book(stack.bookings, other, flight.flight_id)
    request = booking_pb2.GetBookingRequest(booking_id=booking.booking_id)
    assert _code(stack.bookings.GetBooking, request, metadata=me.auth) == grpc.StatusCode.NOT_FOUND
    cancel = booking_pb2.CancelBookingRequest(booking_id=booking.booking_id)
    assert _code(stack.bookings.CancelBooking, cancel, metadata=me.auth) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert stack.bookings.GetBooking(request, metadata=stack.admin.auth, timeout=10) == booking


def test_cancel_frees_the_seat_once_and_is_idempotent(stack: Stack) -> None:
    me, flight = stack.sign_up(), _new_flight(stack, seats=3)
    booking = _book(stack.bookings, me, flight.flight_id)
    request = booking_pb2.CancelBookingRequest(booking_id=booking.booking_id)
    first = stack.bookings.CancelBooking(request, metadata=me.auth, timeout=10)
    second = stack.bookings.CancelBooking(request, metadata=me.auth, timeout=10)
    assert first.state == Booking.CANCELLED
    assert second == first
    assert _seats(stack, flight.flight_id) == 3


# --- predict-svc down or slow ----------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung dependency."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("predict", ["down", "hung"])
def test_booking_succeeds_without_delay_risk_when_predict_svc_cannot_answer(
    stack: Stack, tmp_path: object, silent_port: int, predict: str
) -> None:
    settings = booking_server.BookingConfig(
        database_url=f"sqlite:///{tmp_path}/booking.db",
        auth_addr=address(stack.auth),
        user_addr=address(stack.user),
        predict_addr="127.0.0.1:1" if predict == "down" else f"127.0.0.1:{silent_port}",
        seed_days=0,
        predict_timeout_seconds=0.3,
    )
    build = partial(booking_server.build, settings=settings)
    assert stack.admin is not None
    with serving(make_config("booking-svc"), build) as server, channel_to(server) as channel:
        stubs = booking_pb2_grpc.BookingServiceStub(channel)
        departure = datetime.now(UTC) + timedelta(days=2)
        flight = stubs.CreateFlight(
            booking_pb2.CreateFlightRequest(
                flight=booking_pb2.Flight(
                    number="DL100",
                    origin="JFK",
                    destination="LAX",
                    departure_time=_ts(departure),
                    arrival_time=_ts(departure + timedelta(hours=6)),
                    seats_total=2,
                    price_cents=25_000,
                    currency="USD",
                )
            ),
            metadata=stack.admin.auth,
            timeout=10,
        )
        booking = _book(stubs, stack.sign_up(), flight.flight_id)
    assert booking.state == Booking.CONFIRMED
    assert not booking.HasField("delay_risk")


def test_a_booking_on_a_flight_with_no_stored_risk_asks_predict_svc_and_keeps_the_answer(
    stack: Stack, tmp_path: object
) -> None:
    """The risk is asked after the seat's write, then stored with the booking."""
    database_url = f"sqlite:///{tmp_path}/booking.db"
    settings = booking_server.BookingConfig(
        database_url=database_url,
        auth_addr=address(stack.auth),
        user_addr=address(stack.user),
        predict_addr=address(stack.predict),
        seed_days=0,
        risk_refresh_seconds=0,
        predict_timeout_seconds=PREDICT_TIMEOUT_SECONDS,
    )
    build = partial(booking_server.build, settings=settings)
    with serving(make_config("booking-svc"), build) as server, channel_to(server) as channel:
        departure = datetime.now(UTC) + timedelta(days=2)
        store = BookingStore(make_engine(database_url))
        flight = store.create_flight(  # straight into the table: no risk stored
            NewFlight("DL100", "JFK", "LAX", departure, departure + timedelta(hours=6), 2, 25_000)
        )
        stubs = booking_pb2_grpc.BookingServiceStub(channel)
        me = stack.sign_up()
        booking = _book(stubs, me, flight.flight_id)
        again = stubs.GetBooking(
            booking_pb2.GetBookingRequest(booking_id=booking.booking_id),
            metadata=me.auth,
            timeout=10,
        )
    assert booking.HasField("delay_risk")
    assert 0 <= booking.delay_risk <= 1
    assert again.delay_risk == booking.delay_risk


# --- times -----------------------------------------------------------------------------


def _flight_at(departure: datetime) -> booking_pb2.Flight:
    return booking_pb2.Flight(
        number="UA1545",
        origin="EWR",
        destination="IAH",
        departure_time=_ts(departure),
        arrival_time=_ts(departure + timedelta(hours=3)),
        seats_total=10,
        price_cents=10_000,
        currency="USD",
    )


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(10**12, 0), (-(10**12), 0), (0, 2 * 10**9), (253402300799, 0), (-62135596800, 0)],
)
def test_new_flight_with_an_out_of_range_time_is_invalid_argument(
    stack: Stack, seconds: int, nanos: int
) -> None:
    """A Timestamp beyond year 9999 failed to convert (INTERNAL); years 1 and 9999 too."""
    assert stack.admin is not None
    flight = _flight_at(datetime(2026, 6, 1, tzinfo=UTC))
    flight.departure_time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(grpc.RpcError) as err:
        stack.bookings.CreateFlight(
            booking_pb2.CreateFlightRequest(flight=flight), metadata=stack.admin.auth, timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "flight.departure_time" in {f for f, _ in field_violations(err.value)}


def _reason(err: grpc.RpcError) -> str:
    found = rpc_status.from_call(err)
    assert found is not None
    info = error_details_pb2.ErrorInfo()
    assert found.details[0].Unpack(info)
    return str(info.reason)


def test_a_flight_that_has_departed_cannot_be_booked(stack: Stack) -> None:
    assert stack.admin is not None
    departed = stack.bookings.CreateFlight(
        booking_pb2.CreateFlightRequest(flight=_flight_at(datetime.now(UTC) - timedelta(hours=1))),
        metadata=stack.admin.auth,
        timeout=10,
    )
    me = stack.sign_up()
    with pytest.raises(grpc.RpcError) as err:
        _book(stack.bookings, me, departed.flight_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(err.value) == "FLIGHT_DEPARTED"
    assert "departed" in str(err.value.details())
    assert _seats(stack, departed.flight_id) == 10

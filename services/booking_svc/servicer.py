"""BookingService: the RPC methods, thin over the booking domain and store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2
from prometheus_client import Counter

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from airline.predict.v1 import predict_pb2
from services.booking_svc import domain
from services.booking_svc.risks import DELAY_MODEL, features
from services.booking_svc.store import BookingRecord, BookingStore, FlightRecord
from services.runtime import context
from services.runtime.context import AccountLookup, Principal
from services.runtime.errors import InvalidArgument, PermissionDenied, required
from services.runtime.messages import timestamp, timestamp_fields
from services.runtime.pagination import PageTokens, page_size
from services.runtime.upstreams import PredictClient, UserClient

log = logging.getLogger(__name__)


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    def __init__(
        self,
        store: BookingStore,
        tokens: PageTokens,
        users: UserClient,
        predictions: PredictClient,
        risk_sources: Counter | None = None,
        booking_accounts: AccountLookup | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._users = users
        # CreateBooking's live-account check may be remembered for a moment if the
        # operator sets LIVE_ACCOUNT_CACHE_SECONDS (accounts.LiveAccounts; off by
        # default); every other method asks user-svc on every call.
        self._booking_accounts = booking_accounts or users.active
        self._predictions = predictions
        self._risk_sources = risk_sources

    def ListFlights(
        self, request: booking_pb2.ListFlightsRequest, _: grpc.ServicerContext
    ) -> booking_pb2.ListFlightsResponse:
        filters = domain.validate_flight_filters(
            request.origin, request.destination, request.departure_date
        )
        order = domain.parse_order_by(request.order_by)
        size = page_size(request.page_size)
        query = {
            "origin": filters.origin,
            "destination": filters.destination,
            "departure_date": str(filters.departure_date or ""),
            "order_by": [order.field, order.descending],
        }
        fields = self._tokens.decode(request.page_token, query)
        after = domain.FlightCursor.from_dict(fields) if fields else None
        flights, cursor = self._store.list_flights(filters, order, after, size)
        response = booking_pb2.ListFlightsResponse(
            next_page_token=self._tokens.encode(cursor.to_dict(), query) if cursor else ""
        )
        # Built in place in the page: a Flight built apart is copied in when appended.
        add = response.flights.add
        for flight in flights:
            flight_message(flight, add)
        return response

    def GetFlight(
        self, request: booking_pb2.GetFlightRequest, _: grpc.ServicerContext
    ) -> booking_pb2.Flight:
        return flight_message(self._store.get_flight(required("flight_id", request.flight_id)))

    def CreateFlight(
        self, request: booking_pb2.CreateFlightRequest, _: grpc.ServicerContext
    ) -> booking_pb2.Flight:
        ctx = context.require()
        ctx.require_live_admin(self._users.active)
        given = request.flight
        new = domain.validate_new_flight(
            number=given.number,
            origin=given.origin,
            destination=given.destination,
            departure_time=_datetime(given, "departure_time"),
            arrival_time=_datetime(given, "arrival_time"),
            seats_total=given.seats_total,
            price_cents=given.price_cents,
            currency=given.currency,
        )
        flight = self._store.create_flight(new)
        self._precompute_risk(flight)
        ctx.created(f"/v1/flights/{flight.flight_id}")
        return flight_message(flight)

    def CreateBooking(
        self, request: booking_pb2.CreateBookingRequest, _: grpc.ServicerContext
    ) -> booking_pb2.Booking:
        ctx = context.require()
        caller = ctx.require_live_principal(self._booking_accounts)
        new = domain.validate_new_booking(
            request.flight_id, request.seat_class, request.passenger_name, request.request_id
        )
        booking, created = self._store.create_booking(
            user_id=caller.user_id,
            request_id=new.request_id,
            flight_id=new.flight_id,
            seat_class=new.seat_class,
            passenger_name=new.passenger_name,
            price_for=domain.price_for,
            # Judged after the request_id lookup: a retry after departure gets its booking.
            bookable=lambda departs: domain.check_bookable(
                new.flight_id, departs, datetime.now(UTC)
            ),
            expires=time.monotonic() + ctx.time_remaining(),
        )
        source = "stored" if booking.delay_risk is not None else "absent"
        if created and booking.delay_risk is None:
            # No risk stored for the flight yet (a new flight, predict-svc was down):
            # asked after the write, so the wait for predict-svc holds no write turn.
            delay_risk = self._delay_risk(self._store.get_flight(new.flight_id))
            if delay_risk is not None:
                booking = self._store.record_booking_risk(booking, delay_risk)
                source = "asked"
        if self._risk_sources is not None:
            self._risk_sources.labels(source=source).inc()
        # A repeated request_id answers exactly as the first did.
        ctx.created(f"/v1/bookings/{booking.booking_id}")
        return booking_message(booking)

    def ListBookings(
        self, request: booking_pb2.ListBookingsRequest, _: grpc.ServicerContext
    ) -> booking_pb2.ListBookingsResponse:
        caller = context.require().require_live_principal(self._users.active)
        if caller.is_admin:
            user_id = request.user_id or None
        elif request.user_id in ("", caller.user_id):
            user_id = caller.user_id
        else:
            raise PermissionDenied("only an admin may list another user's bookings")
        size = page_size(request.page_size)
        query = {"user_id": user_id}
        fields = self._tokens.decode(request.page_token, query)
        after = domain.BookingCursor.from_dict(fields) if fields else None
        bookings, cursor = self._store.list_bookings(user_id, after, size)
        return booking_pb2.ListBookingsResponse(
            bookings=[booking_message(b) for b in bookings],
            next_page_token=self._tokens.encode(cursor.to_dict(), query) if cursor else "",
        )

    def GetBooking(
        self, request: booking_pb2.GetBookingRequest, _: grpc.ServicerContext
    ) -> booking_pb2.Booking:
        caller = context.require().require_live_principal(self._users.active)
        booking = self._store.get_booking(
            required("booking_id", request.booking_id), owner=_owner_filter(caller)
        )
        return booking_message(booking)

    def CancelBooking(
        self, request: booking_pb2.CancelBookingRequest, _: grpc.ServicerContext
    ) -> booking_pb2.Booking:
        caller = context.require().require_live_principal(self._users.active)
        booking = self._store.cancel_booking(
            required("booking_id", request.booking_id), owner=_owner_filter(caller)
        )
        return booking_message(booking)

    def _delay_risk(self, flight: FlightRecord) -> float | None:
        """The flight's delay probability, or None when predict-svc cannot answer in time.

        Optional: the booking must not wait on it or fail with it.
        """
        response = self._predict(flight)
        return None if response is None else float(response.predictions[0].delay_probability)

    def _precompute_risk(self, flight: FlightRecord) -> None:
        """Stores a new flight's delay risk now, so its first booking need not ask."""
        response = self._predict(flight)
        if response is not None:
            risk = float(response.predictions[0].delay_probability)
            self._store.record_risks(response.model_version, {flight.flight_id: risk})

    def _predict(self, flight: FlightRecord) -> predict_pb2.PredictResponse | None:
        try:
            return self._predictions.predict(
                DELAY_MODEL, [features(flight)], metadata=context.require().on_behalf_of_caller()
            )
        except grpc.RpcError as err:
            log.warning("delay risk unavailable", extra={"code": err.code().name})
            return None


def flight_message(
    flight: FlightRecord, make: Callable[..., booking_pb2.Flight] = booking_pb2.Flight
) -> booking_pb2.Flight:
    """`flight` as a message made by `make`: a new Flight, or a repeated field's `add`."""
    # Timestamps given as field dicts: a Timestamp built with FromDatetime and copied in
    # made this mapping 3x dearer, and ListFlights maps 20 flights per page.
    return make(
        flight_id=flight.flight_id,
        number=flight.number,
        origin=flight.origin,
        destination=flight.destination,
        departure_time=timestamp_fields(flight.departure_time),
        arrival_time=timestamp_fields(flight.arrival_time),
        seats_total=flight.seats_total,
        seats_available=flight.seats_available,
        price_cents=flight.price_cents,
        currency=flight.currency,
    )


def booking_message(booking: BookingRecord) -> booking_pb2.Booking:
    message = booking_pb2.Booking(
        booking_id=booking.booking_id,
        user_id=booking.user_id,
        flight_id=booking.flight_id,
        seat_class=int(booking.seat_class),  # type: ignore[arg-type]
        passenger_name=booking.passenger_name,
        state=int(booking.state),  # type: ignore[arg-type]
        price_cents=booking.price_cents,
        create_time=timestamp(booking.create_time),
    )
    if booking.delay_risk is not None:
        message.delay_risk = booking.delay_risk
    return message


def _owner_filter(caller: Principal) -> str | None:
    """Admins see every booking; anyone else only their own (others' are NOT_FOUND)."""
    return None if caller.is_admin else caller.user_id


def _datetime(flight: booking_pb2.Flight, field: str) -> datetime | None:
    if not flight.HasField(field):  # type: ignore[arg-type]
        return None
    value: timestamp_pb2.Timestamp = getattr(flight, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except ValueError:  # seconds or nanos outside what a Timestamp may hold
        raise InvalidArgument([(f"flight.{field}", "is not a valid timestamp")]) from None

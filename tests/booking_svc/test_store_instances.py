"""Two booking-svc instances started together on one database: one catalogue, one page-token key."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from services.booking_svc import server as booking_server
from services.runtime.pagination import MAX_PAGE_SIZE
from tests.conftest import channel_to, make_config, serving
from tests.instances import started_together

# Never dialled: listing flights needs no other service.
UNUSED_ADDR = "127.0.0.1:1"
PAGE = 5
Stub = booking_pb2_grpc.BookingServiceStub


@pytest.fixture
def pair(database_url: str) -> Iterator[tuple[Stub, Stub]]:
    settings = booking_server.BookingConfig(
        database_url, UNUSED_ADDR, UNUSED_ADDR, UNUSED_ADDR, seed_days=1
    )
    launches = [
        serving(make_config("booking-svc"), partial(booking_server.build, settings=settings))
        for _ in range(2)
    ]
    with (
        started_together(*launches) as (first, second),
        channel_to(first) as to_first,
        channel_to(second) as to_second,
    ):
        yield Stub(to_first), Stub(to_second)


def list_flights(
    stub: Stub, page_token: str = "", page_size: int = PAGE
) -> booking_pb2.ListFlightsResponse:
    request = booking_pb2.ListFlightsRequest(page_size=page_size, page_token=page_token)
    response: booking_pb2.ListFlightsResponse = stub.ListFlights(request, timeout=10)
    return response


def all_flight_ids(stub: Stub) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = list_flights(stub, token, MAX_PAGE_SIZE)
        ids += [flight.flight_id for flight in page.flights]
        if not (token := page.next_page_token):
            return ids


def test_catalogue_is_seeded_once_and_both_see_the_same_ids(pair: tuple[Stub, Stub]) -> None:
    first, second = pair
    ids = all_flight_ids(first)
    assert ids
    assert len(set(ids)) == len(ids)
    assert all_flight_ids(second) == ids


def test_page_token_from_one_instance_works_at_the_other(pair: tuple[Stub, Stub]) -> None:
    first, second = pair
    token = list_flights(first).next_page_token
    assert token
    assert list_flights(second, token) == list_flights(first, token)

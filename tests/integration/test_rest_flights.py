"""The Flights rows of API.md, proved with REST calls on the edge.

Flights a test creates get their own made-up route, so filters and seat counts are not
disturbed by the seeded catalogue or by other tests.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account
from tests.integration.rest import Catalogue
from tests.integration.rest import all_pages as _all_pages
from tests.integration.rest import bad_request_fields as _violated_fields
from tests.integration.rest import expect_rpc_status as _status
from tests.integration.rest import get_encoded as _get
from tests.integration.rest import is_integer as _is_integer
from tests.integration.rest import new_flight as _new_flight
from tests.integration.rest import new_route as _route
from tests.integration.rest import one_page as _page
from tests.integration.rest import tampered as _tampered
from tests.integration.rest import timestamp as _timestamp

pytestmark = pytest.mark.integration

FLIGHT_KEYS = {
    "flight_id",
    "number",
    "origin",
    "destination",
    "departure_time",
    "arrival_time",
    "seats_total",
    "seats_available",
    "price_cents",
    "currency",
}


# --- GET /v1/flights ---------------------------------------------------------------------


def test_flight_list_returns_twenty_flights_and_a_next_page_token_by_default(
    http: httpx.Client,
) -> None:
    response = http.get("/v1/flights")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"flights", "next_page_token"}
    assert len(body["flights"]) == 20
    assert isinstance(body["next_page_token"], str)
    assert body["next_page_token"]


def test_listed_flights_have_exactly_the_contract_keys_with_typed_values(
    http: httpx.Client,
) -> None:
    flights = _page(http, "/v1/flights", "flights", page_size=100)["flights"]

    assert flights
    for flight in flights:
        assert set(flight) == FLIGHT_KEYS, flight
        assert _timestamp(flight["arrival_time"]) > _timestamp(flight["departure_time"])
        for key in ("seats_total", "seats_available", "price_cents"):
            assert _is_integer(flight[key]), (key, flight)
        assert 0 <= flight["seats_available"] <= flight["seats_total"]
        for key in ("flight_id", "number", "origin", "destination", "currency"):
            assert isinstance(flight[key], str), (key, flight)
            assert flight[key]


def test_flight_list_filters_by_origin_and_destination(http: httpx.Client) -> None:
    everything = _all_pages(http, "/v1/flights", "flights", page_size=100)
    origin, destination = everything[0]["origin"], everything[0]["destination"]
    expected = {
        f["flight_id"]
        for f in everything
        if f["origin"] == origin and f["destination"] == destination
    }

    found = _all_pages(
        http, "/v1/flights", "flights", origin=origin, destination=destination, page_size=100
    )

    assert {f["flight_id"] for f in found} == expected


def test_flight_list_filters_by_origin_alone(http: httpx.Client) -> None:
    found = _all_pages(http, "/v1/flights", "flights", origin="JFK", page_size=100)

    assert found
    assert {f["origin"] for f in found} == {"JFK"}


def test_flight_list_filters_by_the_utc_date_of_departure(
    http: httpx.Client, catalogue: Catalogue
) -> None:
    """22:30 at UTC-5 on 10 March is 03:30 UTC on 11 March: the flight is on the 11th."""
    route = _route()
    late = catalogue.create(route=route, departure="2027-03-10T22:30:00-05:00")
    early = catalogue.create(route=route, departure="2027-03-10T12:00:00Z")
    origin, destination = route

    def on(day: str) -> set[str]:
        flights = _all_pages(
            http,
            "/v1/flights",
            "flights",
            origin=origin,
            destination=destination,
            departure_date=day,
        )
        return {f["flight_id"] for f in flights}

    assert on("2027-03-10") == {early["flight_id"]}
    assert on("2027-03-11") == {late["flight_id"]}
    assert on("2027-03-12") == set()


def test_flight_list_departure_date_filter_matches_the_seeded_catalogue(
    http: httpx.Client,
) -> None:
    everything = _all_pages(http, "/v1/flights", "flights", page_size=100)
    day = _timestamp(everything[0]["departure_time"]).astimezone(UTC).date().isoformat()
    expected = {
        f["flight_id"]
        for f in everything
        if _timestamp(f["departure_time"]).astimezone(UTC).date().isoformat() == day
    }

    found = _all_pages(http, "/v1/flights", "flights", departure_date=day, page_size=100)

    assert {f["flight_id"] for f in found} == expected


def test_flight_list_is_ordered_by_departure_time_by_default_across_pages(
    http: httpx.Client,
) -> None:
    first = _page(http, "/v1/flights", "flights", page_size=50)
    second = _page(
        http, "/v1/flights", "flights", page_size=50, page_token=first["next_page_token"]
    )

    times = [_timestamp(f["departure_time"]) for f in first["flights"] + second["flights"]]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("order_by", "descending"),
    [
        ("departure_time", False),
        ("departure_time desc", True),
        ("price", False),
        ("price desc", True),
    ],
)
def test_flight_list_is_ordered_as_order_by_asks_across_pages(
    http: httpx.Client, order_by: str, descending: bool
) -> None:
    key = "price_cents" if order_by.startswith("price") else "departure_time"
    query: dict[str, Any] = {"page_size": 50, "order_by": order_by}
    first = _page(http, "/v1/flights", "flights", **query)
    second = _page(http, "/v1/flights", "flights", **query, page_token=first["next_page_token"])

    flights = first["flights"] + second["flights"]
    values = [f[key] if key == "price_cents" else _timestamp(f[key]) for f in flights]
    assert len(flights) == 100
    assert values == sorted(values, reverse=descending)


def test_flight_list_reads_a_form_encoded_space_in_order_by(http: httpx.Client) -> None:
    """`order_by=price+desc` is how httpx, urllib's urlencode and HTML forms send `price desc`."""
    response = http.get("/v1/flights", params={"order_by": "price desc", "page_size": 20})

    assert response.status_code == 200, response.text
    prices = [f["price_cents"] for f in response.json()["flights"]]
    assert prices == sorted(prices, reverse=True)


def test_flight_list_page_size_over_one_hundred_is_clamped_to_one_hundred(
    http: httpx.Client,
) -> None:
    response = http.get("/v1/flights", params={"page_size": 500})

    assert response.status_code == 200, response.text
    assert len(response.json()["flights"]) == 100
    assert response.json()["next_page_token"]


def test_paging_through_every_flight_never_repeats_one(http: httpx.Client) -> None:
    flights = _all_pages(http, "/v1/flights", "flights", page_size=37)

    ids = [f["flight_id"] for f in flights]
    assert len(ids) > 100  # the seeded catalogue spans several pages
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("order_by", ["departure_time", "price desc"])
def test_paging_while_flights_are_added_never_skips_or_repeats_one(
    http: httpx.Client, catalogue: Catalogue, order_by: str
) -> None:
    route = _route()
    existing = {
        catalogue.create(
            route=route, departure=f"2027-04-0{day}T10:00:00Z", price_cents=day * 1000
        )["flight_id"]
        for day in range(2, 8)
    }
    query: dict[str, Any] = {
        "origin": route[0],
        "destination": route[1],
        "order_by": order_by,
        "page_size": 2,
    }
    first = _page(http, "/v1/flights", "flights", **query)
    seen = [f["flight_id"] for f in first["flights"]]
    token = first["next_page_token"]
    for day, price in ((1, 500), (9, 9000), (5, 4500)):
        catalogue.create(route=route, departure=f"2027-04-0{day}T11:00:00Z", price_cents=price)

    while token:
        page = _page(http, "/v1/flights", "flights", **query, page_token=token)
        seen.extend(f["flight_id"] for f in page["flights"])
        token = page["next_page_token"]

    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


def test_flight_list_refuses_an_unknown_query_parameter(http: httpx.Client) -> None:
    response = http.get("/v1/flights", params={"colour": "blue"})

    _status(response, 400, 3)


def test_flight_list_refuses_an_unknown_order_by_naming_the_field(http: httpx.Client) -> None:
    response = http.get("/v1/flights", params={"order_by": "seats_available"})

    body = _status(response, 400, 3)
    assert "order_by" in _violated_fields(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [("departure_date", "2026-13-01"), ("departure_date", "tomorrow"), ("origin", "J")],
)
def test_flight_list_refuses_a_bad_filter_value_naming_the_field(
    http: httpx.Client, field: str, value: str
) -> None:
    filters: dict[str, Any] = {field: value}
    response = _get(http, "/v1/flights", **filters)

    body = _status(response, 400, 3)
    assert field in _violated_fields(body)


def test_flight_list_refuses_a_tampered_page_token(http: httpx.Client) -> None:
    token = _page(http, "/v1/flights", "flights", page_size=5)["next_page_token"]

    response = _get(http, "/v1/flights", page_size=5, page_token=_tampered(token))

    _status(response, 400, 3)


def test_flight_list_refuses_a_page_token_that_is_not_one(http: httpx.Client) -> None:
    response = http.get("/v1/flights", params={"page_token": "not-a-token"})

    _status(response, 400, 3)


# --- GET /v1/flights/{flight_id} ---------------------------------------------------------


def test_a_listed_flight_can_be_read_by_id(http: httpx.Client) -> None:
    listed = _page(http, "/v1/flights", "flights", page_size=1)["flights"][0]

    response = http.get(f"/v1/flights/{listed['flight_id']}")

    assert response.status_code == 200, response.text
    assert response.json() == listed


def test_reading_an_unknown_flight_gives_404_not_found(http: httpx.Client) -> None:
    response = http.get(f"/v1/flights/{uuid.uuid4()}")

    _status(response, 404, 5)


# --- POST /v1/flights --------------------------------------------------------------------


def test_admin_creates_a_flight_with_201_and_its_location(
    http: httpx.Client, admin: Account
) -> None:
    sent = _new_flight()

    response = http.post("/v1/flights", json=sent, headers=admin.headers)

    assert response.status_code == 201, response.text
    flight = response.json()
    assert set(flight) == FLIGHT_KEYS
    assert response.headers["location"] == f"/v1/flights/{flight['flight_id']}"
    assert flight["seats_available"] == sent["seats_total"]
    assert {k: flight[k] for k in ("number", "origin", "destination", "price_cents")} == {
        k: sent[k] for k in ("number", "origin", "destination", "price_cents")
    }
    assert _timestamp(flight["departure_time"]) == _timestamp(sent["departure_time"])
    assert http.get(response.headers["location"]).json() == flight


def test_creating_a_flight_accepts_lower_camel_case_fields(
    http: httpx.Client, admin: Account
) -> None:
    sent = _new_flight()
    camel = {re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): v for k, v in sent.items()}

    response = http.post("/v1/flights", json=camel, headers=admin.headers)

    assert response.status_code == 201, response.text
    assert response.json()["seats_total"] == sent["seats_total"]


def test_non_admin_creating_a_flight_gets_403(http: httpx.Client, user: Account) -> None:
    response = http.post("/v1/flights", json=_new_flight(), headers=user.headers)

    _status(response, 403, 7)


def test_creating_a_flight_with_bad_fields_gets_400_naming_each(
    http: httpx.Client, admin: Account
) -> None:
    bad = {**_new_flight(), "origin": "NOT-AN-AIRPORT", "seats_total": 0, "price_cents": -5}

    response = http.post("/v1/flights", json=bad, headers=admin.headers)

    body = _status(response, 400, 3)
    named = {field.rsplit(".", 1)[-1] for field in _violated_fields(body)}
    assert named == {"origin", "seats_total", "price_cents"}

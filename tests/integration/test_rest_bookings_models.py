"""The Flights, Bookings and Predictions rows of API.md, proved with REST calls on the edge.

Every test talks to the running mesh only through its public HTTP address, as a client
would. Flights a test creates get their own made-up route, so filters and seat counts
are not disturbed by the seeded catalogue or by other tests.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.integration.conftest import Account, Mesh

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
BOOKING_KEYS = {
    "booking_id",
    "user_id",
    "flight_id",
    "seat_class",
    "passenger_name",
    "state",
    "price_cents",
    "delay_risk",
    "create_time",
}
MODEL_KEYS = {"model_id", "version", "description", "features", "metrics", "create_time"}
INSTANCE = {
    "carrier": "UA",
    "origin": "EWR",
    "destination": "ORD",
    "scheduled_departure": "2026-12-01T17:30:00-05:00",
}
RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
RACERS = 30
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


# --- helpers ----------------------------------------------------------------------------


def _timestamp(text: object) -> datetime:
    """An RFC 3339 timestamp string as an aware datetime; fails the test otherwise."""
    assert isinstance(text, str), text
    match = RFC3339.match(text)
    assert match, f"not an RFC 3339 timestamp: {text!r}"
    seconds, fraction, offset = match.groups()
    micros = (fraction or ".")[1:7].ljust(6, "0")
    zone = "+00:00" if offset.upper() == "Z" else offset
    return datetime.fromisoformat(f"{seconds}.{micros}{zone}")


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _status(response: httpx.Response, http_status: int, code: int) -> dict[str, Any]:
    """The google.rpc.Status body of an error response, checked against the codes."""
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    return dict(body)


def _violated_fields(body: dict[str, Any]) -> set[str]:
    """The fields named by the google.rpc.BadRequest details of a Status body."""
    return {
        violation["field"]
        for detail in body.get("details", [])
        if detail.get("@type") == "type.googleapis.com/google.rpc.BadRequest"
        for violation in detail.get("field_violations", [])
    }


def _route() -> tuple[str, str]:
    """A made-up pair of airport codes (Q.., Z..) that no seeded flight uses."""
    letters = uuid.uuid4().hex.upper().translate(str.maketrans("0123456789", "GHIJKLMNOP"))
    return f"Q{letters[:2]}", f"Z{letters[2:4]}"


def _get(
    http: httpx.Client, path: str, *, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    """GET with the query percent-encoded as RFC 3986 says: a space is %20."""
    query = urlencode(params, quote_via=quote)
    return http.get(f"{path}?{query}" if query else path, headers=headers)


def _page(
    http: httpx.Client,
    path: str,
    key: str,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One page of a list, checked to have the list shape."""
    response = _get(http, path, headers=headers, **params)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert set(body) == {key, "next_page_token"}, body
    assert isinstance(body["next_page_token"], str)
    return body


def _all_pages(
    http: httpx.Client,
    path: str,
    key: str,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_page_token to the end."""
    items: list[dict[str, Any]] = []
    token = ""
    for _ in range(1000):
        more = {"page_token": token} if token else {}
        body = _page(http, path, key, headers=headers, **params, **more)
        items.extend(body[key])
        token = body["next_page_token"]
        if not token:
            return items
    pytest.fail(f"{path} never reached its last page")


def _tampered(token: str) -> str:
    """`token` with one character in its middle changed."""
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def _at_once(mesh: Mesh, calls: list[Callable[[httpx.Client], int]]) -> list[int]:
    """Runs each call on its own client and thread, released together; their statuses."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[httpx.Client], int]) -> int:
        with mesh.client() as http:
            start.wait(timeout=30)
            return call(http)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return sorted(pool.map(run, calls))


def _booking_body(flight_id: str, seat_class: str = "ECONOMY") -> dict[str, str]:
    return {
        "flight_id": flight_id,
        "seat_class": seat_class,
        "passenger_name": "Ada Lovelace",
        "request_id": str(uuid.uuid4()),
    }


def _book(http: httpx.Client, account: Account, flight_id: str) -> dict[str, Any]:
    response = http.post("/v1/bookings", json=_booking_body(flight_id), headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _new_flight() -> dict[str, Any]:
    origin, destination = _route()
    return {
        "number": "AA100",
        "origin": origin,
        "destination": destination,
        "departure_time": "2027-05-01T08:00:00Z",
        "arrival_time": "2027-05-01T11:30:00Z",
        "seats_total": 120,
        "price_cents": 25_000,
        "currency": "USD",
    }


@dataclass
class Catalogue:
    """Creates flights as the admin and reads them back, all through the edge."""

    http: httpx.Client
    admin: Account

    def create(
        self,
        *,
        seats: int = 10,
        price_cents: int = 12_345,
        departure: str = "2027-03-01T10:00:00Z",
        route: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        origin, destination = route or _route()
        leaves = _timestamp(departure)
        body = {
            "number": "ZZ42",
            "origin": origin,
            "destination": destination,
            "departure_time": departure,
            "arrival_time": (leaves + timedelta(hours=3)).isoformat(),
            "seats_total": seats,
            "price_cents": price_cents,
            "currency": "USD",
        }
        created = self.http.post("/v1/flights", json=body, headers=self.admin.headers)
        assert created.status_code == 201, created.text
        return dict(created.json())

    def seats_available(self, flight_id: str) -> int:
        response = self.http.get(f"/v1/flights/{flight_id}")
        assert response.status_code == 200, response.text
        return int(response.json()["seats_available"])


@pytest.fixture
def http(mesh: Mesh) -> Iterator[httpx.Client]:
    with mesh.client() as client:
        yield client


@pytest.fixture
def catalogue(http: httpx.Client, admin: Account) -> Catalogue:
    return Catalogue(http, admin)


@pytest.fixture
def user(mesh: Mesh) -> Account:
    return mesh.sign_up()


@pytest.fixture
def other_user(mesh: Mesh) -> Account:
    return mesh.sign_up()


# --- who may call ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/flights", _new_flight()),
        ("POST", "/v1/bookings", _booking_body(UNKNOWN_ID)),
        ("GET", "/v1/bookings", None),
        ("GET", f"/v1/bookings/{UNKNOWN_ID}", None),
        ("POST", f"/v1/bookings/{UNKNOWN_ID}:cancel", {}),
        ("POST", "/v1/models/flight-delay:predict", {"instances": [INSTANCE]}),
    ],
    ids=["create-flight", "create-booking", "list-bookings", "get-booking", "cancel", "predict"],
)
def test_protected_route_without_a_token_gets_401_with_a_bearer_challenge(
    http: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = http.request(method, path, json=body)

    _status(response, 401, 16)
    assert response.headers["www-authenticate"].startswith("Bearer")


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


# --- POST /v1/bookings -------------------------------------------------------------------


@pytest.mark.parametrize("seat_class", ["ECONOMY", "PREMIUM_ECONOMY", "BUSINESS", "FIRST"])
def test_booking_a_seat_gives_201_a_location_and_a_confirmed_booking(
    http: httpx.Client, catalogue: Catalogue, user: Account, seat_class: str
) -> None:
    flight = catalogue.create()
    sent = _booking_body(flight["flight_id"], seat_class)

    response = http.post("/v1/bookings", json=sent, headers=user.headers)

    assert response.status_code == 201, response.text
    booking = response.json()
    assert set(booking) == BOOKING_KEYS
    assert response.headers["location"] == f"/v1/bookings/{booking['booking_id']}"
    assert booking["user_id"] == user.user["user_id"]
    assert booking["flight_id"] == flight["flight_id"]
    assert booking["seat_class"] == seat_class
    assert booking["passenger_name"] == sent["passenger_name"]
    assert booking["state"] == "CONFIRMED"
    assert _is_integer(booking["price_cents"])
    assert booking["price_cents"] >= flight["price_cents"]
    assert _timestamp(booking["create_time"])


def test_a_booking_carries_a_delay_risk_between_zero_and_one(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    booking = _book(http, user, catalogue.create()["flight_id"])

    risk = booking["delay_risk"]
    assert isinstance(risk, float | int)
    assert not isinstance(risk, bool)
    assert 0.0 <= risk <= 1.0


def test_booking_takes_one_seat(http: httpx.Client, catalogue: Catalogue, user: Account) -> None:
    flight = catalogue.create(seats=5)

    _book(http, user, flight["flight_id"])

    assert catalogue.seats_available(flight["flight_id"]) == 4


def test_second_booking_with_same_request_id_returns_first_and_takes_no_second_seat(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create(seats=5)
    sent = _booking_body(flight["flight_id"])
    first = http.post("/v1/bookings", json=sent, headers=user.headers)
    assert first.status_code == 201, first.text

    again = http.post("/v1/bookings", json=sent, headers=user.headers)

    assert again.status_code in (200, 201), again.text
    assert again.json() == first.json()
    assert catalogue.seats_available(flight["flight_id"]) == 4


def test_booking_a_flight_with_no_seat_left_gets_409(
    http: httpx.Client, catalogue: Catalogue, user: Account, other_user: Account
) -> None:
    flight = catalogue.create(seats=1)
    _book(http, user, flight["flight_id"])

    response = http.post(
        "/v1/bookings", json=_booking_body(flight["flight_id"]), headers=other_user.headers
    )

    body = _status(response, 409, 6)
    assert "details" in body
    assert catalogue.seats_available(flight["flight_id"]) == 0


def test_booking_an_unknown_flight_gets_404(http: httpx.Client, user: Account) -> None:
    response = http.post(
        "/v1/bookings", json=_booking_body(str(uuid.uuid4())), headers=user.headers
    )

    _status(response, 404, 5)


def test_booking_with_bad_fields_gets_400_naming_each(http: httpx.Client, user: Account) -> None:
    bad = {"flight_id": "", "seat_class": "SEAT_CLASS_UNSPECIFIED", "passenger_name": ""}

    response = http.post("/v1/bookings", json=bad, headers=user.headers)

    body = _status(response, 400, 3)
    assert {"flight_id", "seat_class", "passenger_name", "request_id"} <= _violated_fields(body)


def test_deactivated_user_booking_gets_403(
    http: httpx.Client, catalogue: Catalogue, admin: Account, user: Account
) -> None:
    flight = catalogue.create(seats=3)
    deactivated = http.patch(
        f"/v1/users/{user.user['user_id']}",
        params={"update_mask": "active"},
        json={"active": False},
        headers=admin.headers,
    )
    assert deactivated.status_code == 200, deactivated.text
    assert deactivated.json()["active"] is False

    response = http.post(
        "/v1/bookings", json=_booking_body(flight["flight_id"]), headers=user.headers
    )

    _status(response, 403, 7)
    assert catalogue.seats_available(flight["flight_id"]) == 3


def test_racing_bookings_for_the_last_seat_give_exactly_one_201_and_no_oversell(
    mesh: Mesh, catalogue: Catalogue
) -> None:
    flight = catalogue.create(seats=1)
    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        racers = list(pool.map(lambda _: mesh.sign_up(), range(RACERS)))

    def book_as(account: Account) -> Callable[[httpx.Client], int]:
        body = _booking_body(flight["flight_id"])
        return lambda http: (
            http.post("/v1/bookings", json=body, headers=account.headers).status_code
        )

    codes = _at_once(mesh, [book_as(account) for account in racers])

    assert codes == [201] + [409] * (RACERS - 1)
    assert catalogue.seats_available(flight["flight_id"]) == 0


def test_racing_repeats_of_one_request_id_give_one_booking_and_take_one_seat(
    mesh: Mesh, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create(seats=5)
    body = _booking_body(flight["flight_id"])
    ids: list[str] = []

    def book(http: httpx.Client) -> int:
        response = http.post("/v1/bookings", json=body, headers=user.headers)
        ids.append(response.json().get("booking_id", ""))
        return response.status_code

    codes = _at_once(mesh, [book] * 12)

    assert set(codes) <= {200, 201}, codes
    assert len(set(ids)) == 1
    assert catalogue.seats_available(flight["flight_id"]) == 4


def test_booking_request_accepts_lower_camel_case_fields(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create()
    sent = {
        "flightId": flight["flight_id"],
        "seatClass": "BUSINESS",
        "passengerName": "Grace Hopper",
        "requestId": str(uuid.uuid4()),
    }

    response = http.post("/v1/bookings", json=sent, headers=user.headers)

    assert response.status_code == 201, response.text
    assert response.json()["seat_class"] == "BUSINESS"
    assert response.json()["passenger_name"] == "Grace Hopper"


# --- GET /v1/bookings and /v1/bookings/{booking_id} -------------------------------------


def _bookings(http: httpx.Client, account: Account, **params: Any) -> list[dict[str, Any]]:
    return _all_pages(http, "/v1/bookings", "bookings", headers=account.headers, **params)


def test_a_user_lists_only_their_own_bookings(
    http: httpx.Client, catalogue: Catalogue, user: Account, other_user: Account
) -> None:
    flight = catalogue.create()
    mine = _book(http, user, flight["flight_id"])
    _book(http, other_user, flight["flight_id"])

    found = _bookings(http, user)

    assert found == [mine]


def test_a_users_bookings_come_in_pages_without_repeats(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create()
    made = {_book(http, user, flight["flight_id"])["booking_id"] for _ in range(5)}
    first = _page(http, "/v1/bookings", "bookings", headers=user.headers, page_size=2)

    found = _bookings(http, user, page_size=2)

    assert len(first["bookings"]) == 2
    assert first["next_page_token"]
    assert len(found) == 5
    assert {b["booking_id"] for b in found} == made


def test_paging_bookings_while_more_are_made_never_skips_or_repeats_one(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create()
    existing = {_book(http, user, flight["flight_id"])["booking_id"] for _ in range(5)}
    first = _page(http, "/v1/bookings", "bookings", headers=user.headers, page_size=2)
    seen = [b["booking_id"] for b in first["bookings"]]
    token = first["next_page_token"]
    for _ in range(3):
        _book(http, user, flight["flight_id"])

    while token:
        page = _page(
            http, "/v1/bookings", "bookings", headers=user.headers, page_size=2, page_token=token
        )
        seen.extend(b["booking_id"] for b in page["bookings"])
        token = page["next_page_token"]

    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


def test_listing_bookings_refuses_a_tampered_page_token(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create()
    for _ in range(3):
        _book(http, user, flight["flight_id"])
    token = _page(http, "/v1/bookings", "bookings", headers=user.headers, page_size=1)[
        "next_page_token"
    ]

    response = _get(
        http, "/v1/bookings", headers=user.headers, page_size=1, page_token=_tampered(token)
    )

    _status(response, 400, 3)


def test_admin_lists_every_users_bookings(
    http: httpx.Client, catalogue: Catalogue, admin: Account, user: Account, other_user: Account
) -> None:
    flight = catalogue.create()
    made = {_book(http, who, flight["flight_id"])["booking_id"] for who in (user, other_user)}

    found = _bookings(http, admin, page_size=100)

    assert made <= {b["booking_id"] for b in found}


def test_admin_filters_bookings_by_user_id(
    http: httpx.Client, catalogue: Catalogue, admin: Account, user: Account, other_user: Account
) -> None:
    flight = catalogue.create()
    mine = _book(http, user, flight["flight_id"])
    _book(http, other_user, flight["flight_id"])

    found = _bookings(http, admin, user_id=user.user["user_id"])

    assert found == [mine]


@pytest.mark.parametrize("reader", ["owner", "admin"])
def test_owner_and_admin_read_a_booking(
    http: httpx.Client, catalogue: Catalogue, admin: Account, user: Account, reader: str
) -> None:
    booking = _book(http, user, catalogue.create()["flight_id"])
    account = user if reader == "owner" else admin

    response = http.get(f"/v1/bookings/{booking['booking_id']}", headers=account.headers)

    assert response.status_code == 200, response.text
    assert response.json() == booking


def test_reading_another_users_booking_gets_404(
    http: httpx.Client, catalogue: Catalogue, user: Account, other_user: Account
) -> None:
    booking = _book(http, user, catalogue.create()["flight_id"])

    response = http.get(f"/v1/bookings/{booking['booking_id']}", headers=other_user.headers)

    _status(response, 404, 5)


def test_reading_an_unknown_booking_gets_404(http: httpx.Client, user: Account) -> None:
    response = http.get(f"/v1/bookings/{uuid.uuid4()}", headers=user.headers)

    _status(response, 404, 5)


# --- POST /v1/bookings/{booking_id}:cancel -------------------------------------------------


@pytest.mark.parametrize("canceller", ["owner", "admin"])
def test_cancelling_a_booking_marks_it_cancelled_and_frees_its_seat(
    http: httpx.Client, catalogue: Catalogue, admin: Account, user: Account, canceller: str
) -> None:
    flight = catalogue.create(seats=2)
    booking = _book(http, user, flight["flight_id"])
    assert catalogue.seats_available(flight["flight_id"]) == 1
    account = user if canceller == "owner" else admin

    response = http.post(
        f"/v1/bookings/{booking['booking_id']}:cancel", json={}, headers=account.headers
    )

    assert response.status_code == 200, response.text
    assert response.json() == {**booking, "state": "CANCELLED"}
    assert catalogue.seats_available(flight["flight_id"]) == 2


def test_cancelling_a_cancelled_booking_returns_it_and_frees_no_second_seat(
    http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create(seats=2)
    booking = _book(http, user, flight["flight_id"])
    path = f"/v1/bookings/{booking['booking_id']}:cancel"
    first = http.post(path, json={}, headers=user.headers)
    assert first.status_code == 200, first.text

    again = http.post(path, json={}, headers=user.headers)

    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert catalogue.seats_available(flight["flight_id"]) == 2


def test_racing_cancels_of_one_booking_free_its_seat_once(
    mesh: Mesh, http: httpx.Client, catalogue: Catalogue, user: Account
) -> None:
    flight = catalogue.create(seats=3)
    booking = _book(http, user, flight["flight_id"])
    _book(http, user, flight["flight_id"])
    path = f"/v1/bookings/{booking['booking_id']}:cancel"

    def cancel(client: httpx.Client) -> int:
        return client.post(path, json={}, headers=user.headers).status_code

    codes = _at_once(mesh, [cancel] * 12)

    assert codes == [200] * 12
    assert catalogue.seats_available(flight["flight_id"]) == 2


def test_cancelling_another_users_booking_gets_404_and_leaves_it_confirmed(
    http: httpx.Client, catalogue: Catalogue, user: Account, other_user: Account
) -> None:
    flight = catalogue.create(seats=2)
    booking = _book(http, user, flight["flight_id"])

    response = http.post(
        f"/v1/bookings/{booking['booking_id']}:cancel", json={}, headers=other_user.headers
    )

    _status(response, 404, 5)
    still = http.get(f"/v1/bookings/{booking['booking_id']}", headers=user.headers).json()
    assert still["state"] == "CONFIRMED"
    assert catalogue.seats_available(flight["flight_id"]) == 1


# --- GET /v1/models ----------------------------------------------------------------------


def _flight_delay_model(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/v1/models")
    assert response.status_code == 200, response.text
    found = [m for m in response.json()["models"] if m["model_id"] == "flight-delay"]
    assert len(found) == 1, response.text
    return dict(found[0])


def test_model_list_has_the_flight_delay_model(http: httpx.Client) -> None:
    response = http.get("/v1/models")

    assert response.status_code == 200, response.text
    assert "models" in response.json()
    model = _flight_delay_model(http)
    assert set(model) >= MODEL_KEYS
    assert model["version"]
    assert model["description"]
    assert _timestamp(model["create_time"])


def test_flight_delay_model_lists_its_features(http: httpx.Client) -> None:
    features = _flight_delay_model(http)["features"]

    assert {f["name"] for f in features} == set(INSTANCE)
    for feature in features:
        assert feature["type"] in {"STRING", "NUMBER", "TIMESTAMP"}, feature


def test_flight_delay_model_reports_its_evaluation_metrics(http: httpx.Client) -> None:
    metrics = _flight_delay_model(http)["metrics"]

    for name in ("roc_auc", "brier_score", "accuracy", "base_rate"):
        assert isinstance(metrics[name], float | int), (name, metrics)
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
    assert metrics["roc_auc"] > 0.5  # better than chance: it learned something


def test_flight_delay_model_can_be_read_by_id(http: httpx.Client) -> None:
    listed = _flight_delay_model(http)

    response = http.get("/v1/models/flight-delay")

    assert response.status_code == 200, response.text
    assert response.json() == listed


def test_reading_an_unknown_model_gets_404(http: httpx.Client) -> None:
    response = http.get("/v1/models/no-such-model")

    _status(response, 404, 5)


# --- POST /v1/models/{model_id}:predict ----------------------------------------------------


def test_predicting_gives_one_probability_per_instance_and_the_model_version(
    http: httpx.Client, user: Account
) -> None:
    version = _flight_delay_model(http)["version"]
    other = {**INSTANCE, "carrier": "DL", "origin": "JFK", "destination": "ATL"}

    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE, other]},
        headers=user.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        probability = prediction["delay_probability"]
        assert isinstance(probability, float | int)
        assert 0.0 <= probability <= 1.0


def test_predicting_accepts_one_thousand_instances(http: httpx.Client, user: Account) -> None:
    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE] * 1000},
        headers=user.headers,
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize("count", [0, 1001])
def test_predicting_refuses_an_instance_count_outside_one_to_a_thousand(
    http: httpx.Client, user: Account, count: int
) -> None:
    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE] * count},
        headers=user.headers,
    )

    _status(response, 400, 3)


def test_predicting_with_a_bad_feature_names_the_instance_and_field(
    http: httpx.Client, user: Account
) -> None:
    bad = {**INSTANCE, "origin": "not an airport"}

    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE, bad]},
        headers=user.headers,
    )

    body = _status(response, 400, 3)
    assert _violated_fields(body) == {"instances[1].origin"}


def test_predicting_with_an_unknown_model_gets_404(http: httpx.Client, user: Account) -> None:
    response = http.post(
        "/v1/models/no-such-model:predict", json={"instances": [INSTANCE]}, headers=user.headers
    )

    _status(response, 404, 5)

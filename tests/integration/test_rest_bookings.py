"""Booking and cancelling as API.md describes them, proved with REST calls on the edge.

Who may call the protected routes, seat accounting, idempotent request ids, and races for
the last seat. Each test books on flights it creates on a made-up route of its own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, Mesh
from tests.integration.rest import INSTANCE, Catalogue
from tests.integration.rest import bad_request_fields as _violated_fields
from tests.integration.rest import book as _book
from tests.integration.rest import booking_body as _booking_body
from tests.integration.rest import expect_rpc_status as _status
from tests.integration.rest import is_integer as _is_integer
from tests.integration.rest import new_flight as _new_flight
from tests.integration.rest import timestamp as _timestamp

pytestmark = pytest.mark.integration

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
RACERS = 30
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def _at_once(mesh: Mesh, calls: list[Callable[[httpx.Client], int]]) -> list[int]:
    """Runs each call on its own client and thread, released together; their statuses."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[httpx.Client], int]) -> int:
        with mesh.client() as http:
            start.wait(timeout=30)
            return call(http)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return sorted(pool.map(run, calls))


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

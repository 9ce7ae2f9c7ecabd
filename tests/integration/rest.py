"""What the REST integration tests share: test data, error-body checks, paging, flights.

Plain helpers, no fixtures: those live in conftest.py, which imports this module, so this
one imports conftest only for type hints. Every helper talks to the edge through httpx.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Account

PASSWORD = "correct horse battery"
USER_KEYS = {
    "user_id",
    "email",
    "display_name",
    "roles",
    "active",
    "create_time",
    "update_time",
}
TOKEN_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

INSTANCE = {
    "carrier": "UA",
    "origin": "EWR",
    "destination": "ORD",
    "scheduled_departure": "2026-12-01T17:30:00-05:00",
}
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)


# --- users and tokens -----------------------------------------------------------------


def new_email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


def create_user(http: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"email": new_email(), "password": PASSWORD, "display_name": "Flyer", **fields}
    return http.post("/v1/users", json=body)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def sign_in(http: httpx.Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = http.post("/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return dict(response.json())


def list_user_ids(http: httpx.Client, headers: dict[str, str], page_size: int = 100) -> list[str]:
    """Every user id, walking the list to its last page."""
    ids: list[str] = []
    token = ""
    for _ in range(1000):  # bounded: a list that never ends fails instead of hanging
        page = http.get(
            "/v1/users", params={"page_size": page_size, "page_token": token}, headers=headers
        )
        assert page.status_code == 200, page.text
        ids += [u["user_id"] for u in page.json()["users"]]
        token = page.json()["next_page_token"]
        if not token:
            return ids
    pytest.fail("GET /v1/users never returned an empty next_page_token")


# --- error bodies ---------------------------------------------------------------------
# Two strictnesses, kept as the tests were written: the Auth and Users tests check a
# Status's shape and expect exactly one BadRequest detail; the Flights, Bookings and
# Models tests check the HTTP status and gRPC code, and read any BadRequest details.


def rpc_status(response: httpx.Response) -> dict[str, Any]:
    """The google.rpc.Status an error response carries, checked for shape."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body["code"], int), body
    assert isinstance(body["message"], str), body
    assert set(body) <= {"code", "message", "details"}, body
    assert isinstance(body.get("details", []), list), body
    return body


def single_bad_request_fields(body: dict[str, Any]) -> set[str]:
    """The fields named by the google.rpc.BadRequest detail of a Status."""
    details = [d for d in body.get("details", []) if d.get("@type") == _BAD_REQUEST]
    assert len(details) == 1, body
    return {v["field"] for v in details[0]["field_violations"]}


def expect_rpc_status(response: httpx.Response, http_status: int, code: int) -> dict[str, Any]:
    """The google.rpc.Status body of an error response, checked against the codes."""
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    return dict(body)


def bad_request_fields(body: dict[str, Any]) -> set[str]:
    """The fields named by the google.rpc.BadRequest details of a Status body."""
    return {
        violation["field"]
        for detail in body.get("details", [])
        if detail.get("@type") == "type.googleapis.com/google.rpc.BadRequest"
        for violation in detail.get("field_violations", [])
    }


# --- timestamps, queries and pages ----------------------------------------------------


def timestamp(text: object) -> datetime:
    """An RFC 3339 timestamp string as an aware datetime; fails the test otherwise."""
    assert isinstance(text, str), text
    match = _RFC3339.match(text)
    assert match, f"not an RFC 3339 timestamp: {text!r}"
    seconds, fraction, offset = match.groups()
    micros = (fraction or ".")[1:7].ljust(6, "0")
    zone = "+00:00" if offset.upper() == "Z" else offset
    return datetime.fromisoformat(f"{seconds}.{micros}{zone}")


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def get_encoded(
    http: httpx.Client, path: str, *, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    """GET with the query percent-encoded as RFC 3986 says: a space is %20."""
    query = urlencode(params, quote_via=quote)
    return http.get(f"{path}?{query}" if query else path, headers=headers)


def one_page(
    http: httpx.Client,
    path: str,
    key: str,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """One page of a list, checked to have the list shape."""
    response = get_encoded(http, path, headers=headers, **params)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert set(body) == {key, "next_page_token"}, body
    assert isinstance(body["next_page_token"], str)
    return body


def all_pages(
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
        body = one_page(http, path, key, headers=headers, **params, **more)
        items.extend(body[key])
        token = body["next_page_token"]
        if not token:
            return items
    pytest.fail(f"{path} never reached its last page")


def tampered(token: str) -> str:
    """`token` with one character in its middle changed."""
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


# --- flights and bookings -------------------------------------------------------------


def new_route() -> tuple[str, str]:
    """A made-up pair of airport codes (Q.., Z..) that no seeded flight uses."""
    letters = uuid.uuid4().hex.upper().translate(str.maketrans("0123456789", "GHIJKLMNOP"))
    return f"Q{letters[:2]}", f"Z{letters[2:4]}"


def in_days(days: int, hour: int = 10) -> str:
    """An RFC 3339 UTC time `days` from today at `hour`:00: flights tests book must not
    have departed, whenever the suite runs."""
    day = datetime.now(UTC).date() + timedelta(days=days)
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def new_flight() -> dict[str, Any]:
    origin, destination = new_route()
    return {
        "number": "AA100",
        "origin": origin,
        "destination": destination,
        "departure_time": in_days(150, 8),
        "arrival_time": in_days(150, 11),
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
        departure: str | None = None,
        route: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        origin, destination = route or new_route()
        departure = departure or in_days(90)
        leaves = timestamp(departure)
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


def booking_body(flight_id: str, seat_class: str = "ECONOMY") -> dict[str, str]:
    return {
        "flight_id": flight_id,
        "seat_class": seat_class,
        "passenger_name": "Ada Lovelace",
        "request_id": str(uuid.uuid4()),
    }


def book(http: httpx.Client, account: Account, flight_id: str) -> dict[str, Any]:
    response = http.post("/v1/bookings", json=booking_body(flight_id), headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())

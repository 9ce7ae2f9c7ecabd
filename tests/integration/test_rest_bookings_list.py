"""Reading bookings as API.md describes it: a user's own, an admin's all, paged.

Proved with REST calls on the edge, on flights each test creates on a route of its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account
from tests.integration.rest import Catalogue
from tests.integration.rest import all_pages as _all_pages
from tests.integration.rest import book as _book
from tests.integration.rest import expect_rpc_status as _status
from tests.integration.rest import get_encoded as _get
from tests.integration.rest import one_page as _page
from tests.integration.rest import tampered as _tampered

pytestmark = pytest.mark.integration


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

"""GET /v1/users as API.md describes it: admin only, paged, and safe to page while it grows.

The `crowd` fixture makes sure more than one full page of users exists.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import Account
from tests.integration.rest import USER_KEYS
from tests.integration.rest import create_user as _create
from tests.integration.rest import list_user_ids as _list_ids
from tests.integration.rest import rpc_status as _status

pytestmark = pytest.mark.integration


def _flip(token: str, fraction: float) -> str:
    """`token` with one base64 character changed, about `fraction` of the way along."""
    index = int(len(token) * fraction)
    while token[index] in ".=" or token[index + 1 : index + 2] in {".", "=", ""}:
        index -= 1
    changed = "B" if token[index] == "A" else "A"
    return token[:index] + changed + token[index + 1 :]


# --- GET /v1/users -------------------------------------------------------------------


def test_listing_users_needs_the_admin_role(http: httpx.Client, flyer: Account) -> None:
    response = http.get("/v1/users", headers=flyer.headers)
    assert response.status_code == 403, response.text
    assert _status(response)["code"] == 7


def test_list_is_snake_case_users_and_next_page_token(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int
) -> None:
    body = http.get("/v1/users", headers=admin_headers).json()
    assert set(body) == {"users", "next_page_token"}
    assert all(set(user) == USER_KEYS for user in body["users"])


def test_list_page_size_defaults_to_20(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int
) -> None:
    response = http.get("/v1/users", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["users"]) == 20
    assert response.json()["next_page_token"]


@pytest.mark.parametrize("page_size", [101, 1000])
def test_list_page_size_over_100_is_clamped_to_100(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int, page_size: int
) -> None:
    response = http.get("/v1/users", params={"page_size": page_size}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["users"]) == 100
    assert response.json()["next_page_token"]


def test_last_page_has_an_empty_next_page_token(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int
) -> None:
    token = ""
    for _ in range(crowd):  # bounded: one user per page at the very least
        page = http.get(
            "/v1/users", params={"page_size": 100, "page_token": token}, headers=admin_headers
        )
        assert page.status_code == 200, page.text
        body = page.json()
        if len(body["users"]) < 100:  # the last page, whatever else is true
            assert body["next_page_token"] == "", body["next_page_token"]
            return
        token = body["next_page_token"]
        if not token:  # a full last page
            return
    pytest.fail("GET /v1/users never reached its last page")


def test_paging_while_users_are_added_never_skips_or_repeats(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int
) -> None:
    before = _list_ids(http, admin_headers)
    seen: list[str] = []
    added: list[str] = []
    token = ""
    for _ in range(len(before) + 100):  # bounded; the walk ends long before
        page = http.get(
            "/v1/users", params={"page_size": 25, "page_token": token}, headers=admin_headers
        )
        assert page.status_code == 200, page.text
        seen += [u["user_id"] for u in page.json()["users"]]
        token = page.json()["next_page_token"]
        if not token:
            break
        for _ in range(2):
            created = _create(http)
            assert created.status_code == 201, created.text
            added.append(created.json()["user_id"])
    assert token == ""
    assert added
    assert len(seen) == len(set(seen)), "a user was listed twice"
    assert set(before) <= set(seen), "a user that existed all along was skipped"
    # The list is oldest first, so users added mid-walk come after every cursor.
    assert set(added) <= set(seen), "a user added while paging was skipped"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda token: _flip(token, 0.25), id="first-half-changed"),
        pytest.param(lambda token: _flip(token, 0.9), id="end-changed"),
        pytest.param(lambda token: token[:-3], id="truncated"),
        pytest.param(lambda token: "not-a-page-token", id="made-up"),
    ],
)
def test_tampered_page_token_gives_400(
    http: httpx.Client,
    admin_headers: dict[str, str],
    crowd: int,
    tamper: Callable[[str], str],
) -> None:
    first = http.get("/v1/users", params={"page_size": 2}, headers=admin_headers)
    token = first.json()["next_page_token"]
    assert token
    response = http.get(
        "/v1/users", params={"page_size": 2, "page_token": tamper(token)}, headers=admin_headers
    )
    assert response.status_code == 400, response.text
    assert _status(response)["code"] == 3


def test_page_token_of_another_list_gives_400(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    flights = http.get("/v1/flights", params={"page_size": 1})
    token = flights.json()["next_page_token"]
    assert token, flights.text
    response = http.get("/v1/users", params={"page_token": token}, headers=admin_headers)
    assert response.status_code == 400, response.text
    assert _status(response)["code"] == 3

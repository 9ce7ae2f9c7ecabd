"""Users as API.md describes them, proven from outside: REST through the edge.

Creating, reading, changing (with an update mask) and deleting a user, who may do which,
and the internal-only methods that have no REST mapping. Listing is in test_rest_users_list.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.integration.conftest import Account, Mesh
from tests.integration.rest import PASSWORD, USER_KEYS
from tests.integration.rest import create_user as _create
from tests.integration.rest import new_email as _email
from tests.integration.rest import rpc_status as _status
from tests.integration.rest import sign_in as _sign_in
from tests.integration.rest import single_bad_request_fields as _violated_fields

pytestmark = pytest.mark.integration

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


# --- POST /v1/users ------------------------------------------------------------------


def test_create_user_returns_201_with_a_location_naming_it(http: httpx.Client) -> None:
    response = _create(http)
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]
    assert urlparse(response.headers["location"]).path == f"/v1/users/{user_id}"


def test_created_user_is_the_documented_snake_case_object(http: httpx.Client) -> None:
    email = _email()
    response = _create(http, email=email, display_name="Ada Lovelace")
    assert response.status_code == 201, response.text
    user = response.json()
    assert set(user) == USER_KEYS
    assert user["email"] == email
    assert user["display_name"] == "Ada Lovelace"
    assert user["roles"] == ["user"]
    assert user["active"] is True


def test_user_timestamps_are_rfc3339(http: httpx.Client) -> None:
    user = _create(http).json()
    for name in ("create_time", "update_time"):
        assert RFC3339.match(user[name]), user
        assert _when(user[name]).utcoffset() is not None, user


def test_location_of_a_created_user_can_be_read(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    created = _create(http)
    assert created.status_code == 201, created.text
    read = http.get(created.headers["location"], headers=admin_headers)
    assert read.status_code == 200, read.text
    assert read.json() == created.json()


def test_user_json_never_carries_the_password_or_its_hash(
    http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    created = _create(http)
    read = http.get(created.headers["location"], headers=admin_headers)
    listed = http.get("/v1/users", params={"page_size": 100}, headers=admin_headers)
    for response in (created, read, listed):
        assert response.status_code in {200, 201}, response.text
        assert PASSWORD not in response.text
        assert not re.search(r"\$2[aby]\$", response.text), "a bcrypt hash left the service"
    for user in [created.json(), read.json(), *listed.json()["users"]]:
        assert set(user) == USER_KEYS, user


def test_duplicate_email_differing_only_in_case_gives_409(http: httpx.Client) -> None:
    email = _email()
    assert _create(http, email=email).status_code == 201
    duplicate = _create(http, email=email.upper())
    assert duplicate.status_code == 409, duplicate.text
    assert _status(duplicate)["code"] in {6, 10}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"email": "not-an-email"}, {"email"}, id="invalid-email"),
        pytest.param({"password": "x" * 7}, {"password"}, id="password-7-chars"),
        pytest.param({"password": "x" * 129}, {"password"}, id="password-129-chars"),
        pytest.param(
            {"email": "not-an-email", "password": "x" * 7},
            {"email", "password"},
            id="email-and-password",
        ),
    ],
)
def test_invalid_fields_give_400_with_a_bad_request_detail_naming_each(
    http: httpx.Client, fields: dict[str, str], named: set[str]
) -> None:
    response = _create(http, **fields)
    assert response.status_code == 400, response.text
    body = _status(response)
    assert body["code"] == 3
    assert _violated_fields(body) == named


@pytest.mark.parametrize("length", [8, 128])
def test_password_at_either_length_bound_is_accepted_and_signs_in(
    http: httpx.Client, length: int
) -> None:
    email, password = _email(), "p" * length
    created = _create(http, email=email, password=password)
    assert created.status_code == 201, created.text
    _sign_in(http, email, password)


# --- GET /v1/users/{user_id} -------------------------------------------------------


def test_user_can_read_themselves_by_id(http: httpx.Client, flyer: Account) -> None:
    response = http.get(f"/v1/users/{flyer.user['user_id']}", headers=flyer.headers)
    assert response.status_code == 200, response.text
    assert response.json() == flyer.user


def test_admin_can_read_any_user(
    http: httpx.Client, flyer: Account, admin_headers: dict[str, str]
) -> None:
    response = http.get(f"/v1/users/{flyer.user['user_id']}", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == flyer.user


def test_another_users_id_gives_404_to_a_non_admin(
    mesh: Mesh, http: httpx.Client, flyer: Account
) -> None:
    other = mesh.sign_up()
    response = http.get(f"/v1/users/{other.user['user_id']}", headers=flyer.headers)
    assert response.status_code == 404, response.text
    assert _status(response)["code"] == 5


def test_unknown_user_id_gives_404(http: httpx.Client, admin_headers: dict[str, str]) -> None:
    response = http.get(f"/v1/users/{uuid.uuid4()}", headers=admin_headers)
    assert response.status_code == 404, response.text
    assert _status(response)["code"] == 5


# --- PATCH /v1/users/{user_id} -------------------------------------------------------


def _patch(http: httpx.Client, headers: dict[str, str], user_id: str, **kw: Any) -> httpx.Response:
    return http.patch(f"/v1/users/{user_id}", headers=headers, **kw)


def test_user_changes_their_display_name_with_update_mask(
    http: httpx.Client, flyer: Account
) -> None:
    user_id = flyer.user["user_id"]
    response = _patch(
        http,
        flyer.headers,
        user_id,
        params={"update_mask": "display_name"},
        json={"display_name": "Renamed"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Renamed"
    assert _when(response.json()["update_time"]) > _when(flyer.user["update_time"])
    reread = http.get(f"/v1/users/{user_id}", headers=flyer.headers)
    assert reread.json()["display_name"] == "Renamed"


def test_update_mask_in_lower_camel_case_works_too(http: httpx.Client, flyer: Account) -> None:
    response = _patch(
        http,
        flyer.headers,
        flyer.user["user_id"],
        params={"updateMask": "displayName"},
        json={"displayName": "Camel"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Camel"


def test_fields_outside_the_mask_are_left_alone(http: httpx.Client, flyer: Account) -> None:
    response = _patch(
        http,
        flyer.headers,
        flyer.user["user_id"],
        params={"update_mask": "display_name"},
        json={"display_name": "Masked", "active": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True


@pytest.mark.parametrize(
    ("mask", "body"),
    [
        pytest.param("roles", {"roles": ["user", "admin"]}, id="roles"),
        pytest.param("active", {"active": False}, id="active"),
        pytest.param(
            "display_name,roles", {"display_name": "X", "roles": ["user", "admin"]}, id="both"
        ),
    ],
)
def test_non_admin_changing_roles_or_active_gives_403(
    http: httpx.Client, flyer: Account, mask: str, body: dict[str, Any]
) -> None:
    response = _patch(
        http, flyer.headers, flyer.user["user_id"], params={"update_mask": mask}, json=body
    )
    assert response.status_code == 403, response.text
    assert _status(response)["code"] == 7
    unchanged = http.get("/v1/users/me", headers=flyer.headers).json()
    assert unchanged["roles"] == ["user"]
    assert unchanged["active"] is True
    assert unchanged["display_name"] == flyer.user["display_name"]


@pytest.mark.parametrize(
    ("mask", "body", "field", "value"),
    [
        pytest.param("roles", {"roles": ["user", "admin"]}, "roles", ["user", "admin"], id="roles"),
        pytest.param("active", {"active": False}, "active", False, id="active"),
    ],
)
def test_admin_may_change_roles_and_active(
    http: httpx.Client,
    flyer: Account,
    admin_headers: dict[str, str],
    mask: str,
    body: dict[str, Any],
    field: str,
    value: Any,
) -> None:
    user_id = flyer.user["user_id"]
    response = _patch(http, admin_headers, user_id, params={"update_mask": mask}, json=body)
    assert response.status_code == 200, response.text
    assert response.json()[field] == value
    assert http.get(f"/v1/users/{user_id}", headers=admin_headers).json()[field] == value


def test_changing_another_users_record_gives_404(
    mesh: Mesh, http: httpx.Client, flyer: Account
) -> None:
    other = mesh.sign_up()
    response = _patch(
        http,
        flyer.headers,
        other.user["user_id"],
        params={"update_mask": "display_name"},
        json={"display_name": "Hijacked"},
    )
    assert response.status_code == 404, response.text
    assert _status(response)["code"] == 5
    assert http.get("/v1/users/me", headers=other.headers).json()["display_name"] != "Hijacked"


@pytest.mark.parametrize(
    "params", [pytest.param({}, id="absent"), pytest.param({"update_mask": ""}, id="empty")]
)
def test_empty_update_mask_gives_400(
    http: httpx.Client, flyer: Account, params: dict[str, str]
) -> None:
    response = _patch(
        http, flyer.headers, flyer.user["user_id"], params=params, json={"display_name": "Nope"}
    )
    assert response.status_code == 400, response.text
    body = _status(response)
    assert body["code"] == 3
    assert _violated_fields(body) == {"update_mask"}


def test_patch_whose_body_names_another_user_than_the_path_is_refused(
    mesh: Mesh, http: httpx.Client, admin_headers: dict[str, str]
) -> None:
    """The path names the user that changes; a body naming another is a 400, not obeyed."""
    named, other = mesh.sign_up(), mesh.sign_up()
    response = _patch(
        http,
        admin_headers,
        named.user["user_id"],
        params={"update_mask": "display_name"},
        json={"display_name": "Changed", "user_id": other.user["user_id"]},
    )
    assert response.status_code == 400, response.text
    assert _violated_fields(_status(response)) == {"user.user_id"}
    for account in (named, other):
        current = http.get(f"/v1/users/{account.user['user_id']}", headers=admin_headers).json()
        assert current["display_name"] == account.user["display_name"]


# --- DELETE /v1/users/{user_id} ------------------------------------------------------


def test_delete_returns_204_with_no_body(http: httpx.Client, flyer: Account) -> None:
    response = http.delete(f"/v1/users/{flyer.user['user_id']}", headers=flyer.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""


def test_deleted_user_is_gone(
    http: httpx.Client, flyer: Account, admin_headers: dict[str, str]
) -> None:
    user_id = flyer.user["user_id"]
    assert http.delete(f"/v1/users/{user_id}", headers=flyer.headers).status_code == 204
    response = http.get(f"/v1/users/{user_id}", headers=admin_headers)
    assert response.status_code == 404, response.text
    assert _status(response)["code"] == 5


def test_admin_may_delete_any_user(
    http: httpx.Client, flyer: Account, admin_headers: dict[str, str]
) -> None:
    response = http.delete(f"/v1/users/{flyer.user['user_id']}", headers=admin_headers)
    assert response.status_code == 204, response.text


def test_deleting_another_users_record_gives_404(
    mesh: Mesh, http: httpx.Client, flyer: Account
) -> None:
    other = mesh.sign_up()
    response = http.delete(f"/v1/users/{other.user['user_id']}", headers=flyer.headers)
    assert response.status_code == 404, response.text
    assert http.get("/v1/users/me", headers=other.headers).status_code == 200


# --- internal-only methods -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/airline.user.v1.UserInternalService/VerifyPassword",
            {"email": "a@example.com", "password": PASSWORD},
        ),
        ("/airline.user.v1.UserInternalService/LookupUser", {"user_id": "me"}),
    ],
)
def test_internal_methods_have_no_rest_mapping(
    http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 404, response.text
    assert _status(response)["code"] == 5

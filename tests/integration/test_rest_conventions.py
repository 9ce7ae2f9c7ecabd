"""The conventions every REST route shares, proven from outside through the edge.

snake_case or lowerCamelCase in, unknown fields refused, x-request-id on every response,
the 1 MiB body limit, and error bodies that are google.rpc.Status JSON and leak nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, Mesh
from tests.integration.rest import PASSWORD, TOKEN_KEYS
from tests.integration.rest import create_user as _create
from tests.integration.rest import new_email as _email
from tests.integration.rest import rpc_status as _status
from tests.integration.rest import single_bad_request_fields as _violated_fields

pytestmark = pytest.mark.integration

# API.md: HTTP status from the gRPC code.
HTTP_FOR_CODE = {
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}
ONE_MIB = 1024 * 1024


# --- request field names -------------------------------------------------------------


def test_create_accepts_lower_camel_case_fields(http: httpx.Client) -> None:
    response = http.post(
        "/v1/users", json={"email": _email(), "password": PASSWORD, "displayName": "Camel"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "Camel"


def test_refresh_accepts_lower_camel_case_fields(http: httpx.Client, flyer: Account) -> None:
    response = http.post("/v1/auth/token:refresh", json={"refreshToken": flyer.refresh_token})
    assert response.status_code == 200, response.text
    assert set(response.json()) == TOKEN_KEYS


def test_list_accepts_lower_camel_case_query_parameters(
    http: httpx.Client, admin_headers: dict[str, str], crowd: int
) -> None:
    response = http.get("/v1/users", params={"pageSize": 3}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["users"]) == 3


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param(
            "POST",
            "/v1/users",
            {"email": "a@example.com", "password": PASSWORD, "display_name": "A", "nickname": 1},
            "nickname",
            id="create-user",
        ),
        pytest.param(
            "POST",
            "/v1/auth/token",
            {"email": "a@example.com", "password": PASSWORD, "remember_me": True},
            "remember_me",
            id="create-token",
        ),
    ],
)
def test_unknown_json_fields_are_refused_with_400_naming_them(
    http: httpx.Client, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    status = _status(response)
    assert status["code"] == 3
    assert field in _violated_fields(status)


def test_unknown_json_field_in_a_patch_body_is_refused_with_400(
    http: httpx.Client, flyer: Account
) -> None:
    response = http.patch(
        f"/v1/users/{flyer.user['user_id']}",
        params={"update_mask": "display_name"},
        json={"display_name": "New", "shoe_size": 44},
        headers=flyer.headers,
    )
    assert response.status_code == 400, response.text
    assert "shoe_size" in _violated_fields(_status(response))


# --- x-request-id, limits and error bodies -------------------------------------------


def _delete_self(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
    account = mesh.sign_up()
    return http.delete("/v1/users/me", headers={**account.headers, **kw.get("headers", {})})


def _me(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
    account = mesh.sign_up()
    return http.get("/v1/users/me", headers={**account.headers, **kw.get("headers", {})})


def _create_call(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
    body = {"email": _email(), "password": PASSWORD, "display_name": "New"}
    return http.post("/v1/users", json=body, **kw)


def _duplicate(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
    email = _email()
    assert _create(http, email=email).status_code == 201
    body = {"email": email, "password": PASSWORD, "display_name": "Twin"}
    return http.post("/v1/users", json=body, **kw)


def _raw(method: str, path: str, content: bytes) -> Callable[..., httpx.Response]:
    def call(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
        headers = {"content-type": "application/json", **kw.get("headers", {})}
        return http.request(method, path, content=content, headers=headers)

    return call


def _json(method: str, path: str, body: Any = None) -> Callable[..., httpx.Response]:
    def call(mesh: Mesh, http: httpx.Client, **kw: Any) -> httpx.Response:
        return http.request(method, path, json=body, **kw)

    return call


TOO_LARGE = b'{"email": "' + b"a" * (ONE_MIB + 1) + b'"}'
RESPONSES = [
    pytest.param(_me, 200, id="200-from-a-service"),
    pytest.param(_create_call, 201, id="201-created"),
    pytest.param(_json("POST", "/v1/users", {}), 400, id="400-from-a-service"),
    pytest.param(_delete_self, 204, id="204-deleted"),
    pytest.param(_duplicate, 409, id="409-from-a-service"),
    pytest.param(_raw("POST", "/v1/users", b"{not json"), 400, id="400-bad-json"),
    pytest.param(
        _json("POST", "/v1/auth/token", {"email": "a@example.com", "bogus": 1}),
        400,
        id="400-unknown-field-at-the-edge",
    ),
    pytest.param(_json("GET", "/v1/users/me"), 401, id="401-missing-token-at-the-edge"),
    pytest.param(_json("GET", "/v1/no-such-thing"), 404, id="404-unknown-path-from-envoy"),
    pytest.param(_raw("POST", "/v1/users", TOO_LARGE), 413, id="413-body-too-large"),
]


@pytest.mark.parametrize(("call", "expected"), RESPONSES)
def test_every_response_carries_the_clients_request_id(
    mesh: Mesh, http: httpx.Client, call: Callable[..., httpx.Response], expected: int
) -> None:
    request_id = f"test-{uuid.uuid4()}"
    response = call(mesh, http, headers={"x-request-id": request_id})
    assert response.status_code == expected, response.text
    assert response.headers.get("x-request-id") == request_id


@pytest.mark.parametrize(("call", "expected"), RESPONSES)
def test_every_response_carries_a_request_id_when_the_client_sent_none(
    mesh: Mesh, http: httpx.Client, call: Callable[..., httpx.Response], expected: int
) -> None:
    response = call(mesh, http)
    assert response.status_code == expected, response.text
    assert response.headers.get("x-request-id")


def test_body_over_1_mib_gives_413_with_a_json_status(http: httpx.Client) -> None:
    response = http.post(
        "/v1/users", content=TOO_LARGE, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    _status(response)


def test_body_just_under_1_mib_is_not_refused_for_its_size(http: httpx.Client) -> None:
    padding = "p" * (ONE_MIB - 200)
    body = json.dumps({"email": _email(), "password": PASSWORD, "display_name": padding})
    assert len(body) < ONE_MIB
    response = http.post("/v1/users", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text  # display_name too long, not 413
    assert _violated_fields(_status(response)) == {"display_name"}


def test_bad_json_gives_400_with_a_json_status(http: httpx.Client) -> None:
    response = http.post(
        "/v1/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert _status(response)["code"] == 3


ERRORS = [
    pytest.param(_json("POST", "/v1/users", {"email": "x"}), id="invalid-create"),
    pytest.param(
        _json("POST", "/v1/users", {"email": "a'; DROP TABLE users;--@x.com"}),
        id="sql-in-email",
    ),
    pytest.param(_duplicate, id="duplicate-email"),
    pytest.param(
        _json("POST", "/v1/auth/token", {"email": "' OR 1=1 --", "password": "x"}),
        id="sql-in-sign-in",
    ),
    pytest.param(
        _json("POST", "/v1/auth/token:refresh", {"refresh_token": "' OR 1=1 --"}),
        id="sql-in-refresh-token",
    ),
    pytest.param(_raw("POST", "/v1/users", b'{"email": "\xff"}'), id="not-utf8"),
    pytest.param(_raw("POST", "/v1/auth/token", b"[1, 2"), id="bad-json"),
    pytest.param(_raw("POST", "/v1/users", TOO_LARGE), id="too-large"),
    pytest.param(_json("GET", "/v1/users/me"), id="missing-token"),
    pytest.param(_json("GET", "/v1/users?page_size=abc"), id="page-size-not-a-number"),
    pytest.param(_json("GET", "/v1/no-such-thing"), id="unknown-path"),
]


@pytest.mark.parametrize("call", ERRORS)
def test_error_bodies_are_json_statuses_matching_the_http_status(
    mesh: Mesh, http: httpx.Client, call: Callable[..., httpx.Response]
) -> None:
    response = call(mesh, http)
    assert response.status_code >= 400, response.text
    body = _status(response)
    if response.status_code != 413:  # 413 has no gRPC code of its own in API.md
        assert HTTP_FOR_CODE[body["code"]] == response.status_code, body


@pytest.mark.parametrize("call", ERRORS)
def test_error_bodies_carry_no_traceback_sql_or_password_hash(
    mesh: Mesh, http: httpx.Client, call: Callable[..., httpx.Response]
) -> None:
    response = call(mesh, http)
    assert response.status_code >= 400, response.text
    text = response.text
    for leak in ("Traceback", 'File "', "SELECT ", "INSERT ", "sqlalchemy", "sqlite", "$2b$"):
        assert leak not in text, text


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "a@example.com", "password": "s3cret-Passw0rd" x}',
        b'{"email": nope, "password": "s3cret-Passw0rd"}',
        b'{"email": "a@example.com", "password": "s3cret-Passw0rd"',
    ],
)
def test_malformed_json_is_refused_without_quoting_the_body_back(
    http: httpx.Client, body: bytes
) -> None:
    response = http.post(
        "/v1/auth/token", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert _status(response)["code"] == 3
    assert "s3cret" not in response.text

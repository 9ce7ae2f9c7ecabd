"""Token issuing is rate-limited per client address, proved on a mesh of its own.

The session's mesh allows 1000 token requests a window, too many to reach cheaply, so
this module starts a second mesh (its own ports and state folder) allowing three. Each
test calls from its own loopback address (127.0.0.N), so each starts with a full
bucket: the limit is per client address, and Envoy sees the address the socket is
bound to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from tests.integration.conftest import Mesh, running_mesh
from tests.integration.rate_limits import (
    TOKEN,
    assert_limited,
    grpc_sign_in_code,
    limit_header,
    loopback_addresses,
    new_credentials,
    remaining,
    use_up_the_limit,
)

pytestmark = pytest.mark.integration

LIMIT = 3
# A window far longer than any test: the bucket refills on a timer, and a refill
# between two requests of one test would make it flaky.
WINDOW_SECONDS = 3600

Caller = Callable[[], httpx.Client]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A second whole mesh whose edge allows LIMIT token requests per client address."""
    with running_mesh(
        tmp_path_factory.mktemp("limited-mesh"),
        BOOKING_SEED_DAYS="1",
        TOKEN_RATE_LIMIT=str(LIMIT),
        TOKEN_RATE_WINDOW_SECONDS=str(WINDOW_SECONDS),
    ) as found:
        yield found


@pytest.fixture(scope="module")
def credentials(limited: Mesh) -> dict[str, str]:
    """A user's email and password; signing up is not rate-limited, signing in is."""
    return new_credentials(limited)


@pytest.fixture(scope="module")
def addresses() -> Iterator[str]:
    """Loopback addresses no other test of this module calls from (not 127.0.0.1)."""
    return loopback_addresses(0)


@pytest.fixture
def caller(limited: Mesh, addresses: Iterator[str]) -> Iterator[Caller]:
    """Opens clients on the limited edge that all call from one fresh client address."""
    address = next(addresses)
    opened: list[httpx.Client] = []

    def open_client() -> httpx.Client:
        client = limited.client(transport=httpx.HTTPTransport(local_address=address))
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def _use_up_the_limit(http: httpx.Client, credentials: dict[str, str]) -> list[httpx.Response]:
    return use_up_the_limit(http, credentials, LIMIT)


def test_token_requests_within_the_limit_succeed_and_count_down(
    caller: Caller, credentials: dict[str, str]
) -> None:
    responses = _use_up_the_limit(caller(), credentials)

    assert [limit_header(r) for r in responses] == [LIMIT] * 3
    assert [remaining(r) for r in responses] == [2, 1, 0]


def test_token_request_over_the_limit_gets_429_with_retry_after_and_ratelimit_headers(
    caller: Caller, credentials: dict[str, str]
) -> None:
    http = caller()
    _use_up_the_limit(http, credentials)

    response = http.post(TOKEN, json=credentials)

    assert_limited(response, LIMIT, WINDOW_SECONDS)
    assert remaining(response) == 0
    assert 1 <= int(response.headers["x-ratelimit-reset"]) <= WINDOW_SECONDS


def test_rate_limited_token_request_gets_a_resource_exhausted_status_body(
    caller: Caller, credentials: dict[str, str]
) -> None:
    http = caller()
    _use_up_the_limit(http, credentials)

    response = http.post(TOKEN, json=credentials)

    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 8
    assert isinstance(body["message"], str)
    assert "access_token" not in body


def test_failed_sign_ins_count_against_the_limit(
    caller: Caller, credentials: dict[str, str]
) -> None:
    """Guessing passwords uses up the bucket as fast as signing in does."""
    http = caller()
    wrong = {**credentials, "password": "not the password"}
    misses = [http.post(TOKEN, json=wrong).status_code for _ in range(LIMIT)]

    response = http.post(TOKEN, json=credentials)

    assert misses == [401] * LIMIT
    assert response.status_code == 429, response.text


def test_token_limit_is_counted_per_client_address(
    caller: Caller, addresses: Iterator[str], limited: Mesh, credentials: dict[str, str]
) -> None:
    http = caller()
    _use_up_the_limit(http, credentials)
    assert http.post(TOKEN, json=credentials).status_code == 429
    elsewhere = httpx.HTTPTransport(local_address=next(addresses))

    with limited.client(transport=elsewhere) as other:
        response = other.post(TOKEN, json=credentials)

    assert response.status_code == 200, response.text


def test_a_new_connection_from_a_limited_address_is_still_limited(
    caller: Caller, credentials: dict[str, str]
) -> None:
    """The bucket belongs to the address, not to the connection."""
    _use_up_the_limit(caller(), credentials)

    with caller() as fresh:
        response = fresh.post(TOKEN, json=credentials)

    assert response.status_code == 429, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/v1/flights", None, 200),
        ("GET", "/v1/models", None, 200),
        ("GET", "/v1/auth/jwks", None, 200),
        ("POST", "/v1/auth/token:refresh", {"refresh_token": "not-a-token"}, 401),
        ("POST", "/v1/users", {"email": "not-an-email", "password": "x"}, 400),
    ],
    ids=["flights", "models", "jwks", "refresh", "sign-up"],
)
def test_other_routes_are_not_limited_for_an_address_over_the_token_limit(
    caller: Caller,
    credentials: dict[str, str],
    method: str,
    path: str,
    body: dict[str, str] | None,
    expected: int,
) -> None:
    http = caller()
    _use_up_the_limit(http, credentials)
    assert http.post(TOKEN, json=credentials).status_code == 429

    codes = [http.request(method, path, json=body).status_code for _ in range(2 * LIMIT)]

    assert codes == [expected] * (2 * LIMIT)


def test_token_refresh_works_for_an_address_over_the_token_limit(
    caller: Caller, credentials: dict[str, str]
) -> None:
    http = caller()
    issued = _use_up_the_limit(http, credentials)
    assert http.post(TOKEN, json=credentials).status_code == 429

    response = http.post(
        "/v1/auth/token:refresh", json={"refresh_token": issued[-1].json()["refresh_token"]}
    )

    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_grpc_token_calls_share_the_rest_callers_bucket(
    limited: Mesh, credentials: dict[str, str]
) -> None:
    """gRPC clients on the edge are limited too, by the same per-address bucket.

    gRPC cannot choose its source address, so this is the only test calling from
    127.0.0.1.
    """
    with limited.client() as http:
        _use_up_the_limit(http, credentials)

    code = grpc_sign_in_code(limited.ports.edge, credentials)

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

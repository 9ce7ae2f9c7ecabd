"""What the rate limit tests share: a user to sign in as, fresh client addresses, using up
a limit, and what a refusal carries (429, Retry-After, x-ratelimit-*).

Plain helpers, no fixtures: test_rate_limit.py (one edge counting alone) and
test_global_rate_limit.py (edges sharing the rate limit service) build theirs from them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import httpx

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.integration.rest import PASSWORD

if TYPE_CHECKING:
    from tests.integration.conftest import Mesh

TOKEN = "/v1/auth/token"


def new_credentials(mesh: Mesh) -> dict[str, str]:
    """A new user's email and password, signed up through the edge (which is not sign-in)."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    with mesh.client() as http:
        created = http.post(
            "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "Flyer"}
        )
    assert created.status_code == 201, created.text
    return {"email": email, "password": PASSWORD}


def loopback_addresses(block: int) -> Iterator[str]:
    """Client addresses 127.0.`block`.10, .11, ...: each test's own fresh count."""
    return (f"127.0.{block}.{n}" for n in itertools.count(10))


def use_up_the_limit(
    http: httpx.Client, credentials: dict[str, str], limit: int
) -> list[httpx.Response]:
    """Makes `limit` token requests, each of which must succeed."""
    responses = [http.post(TOKEN, json=credentials) for _ in range(limit)]
    assert [r.status_code for r in responses] == [200] * limit, responses[-1].text
    return responses


def limit_header(response: httpx.Response) -> int:
    """x-ratelimit-limit's first value: the requests a window allows."""
    return int(response.headers["x-ratelimit-limit"].split(",")[0])


def remaining(response: httpx.Response) -> int:
    return int(response.headers["x-ratelimit-remaining"])


def assert_limited(response: httpx.Response, limit: int, window_seconds: int) -> None:
    """A refusal for the rate: 429, RESOURCE_EXHAUSTED, when to retry and the limit."""
    assert response.status_code == 429, response.text
    assert response.json()["code"] == 8
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds
    assert limit_header(response) == limit


def grpc_sign_in_code(port: int, credentials: dict[str, str]) -> grpc.StatusCode:
    """The status of CreateToken over gRPC on the edge at 127.0.0.1:`port`."""
    request = auth_pb2.CreateTokenRequest(**credentials)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            auth_pb2_grpc.AuthServiceStub(channel).CreateToken(request, timeout=10)
        except grpc.RpcError as refused:
            return refused.code()
    return grpc.StatusCode.OK

"""A token not valid for this API is UNAUTHENTICATED at a service, never PERMISSION_DENIED.

The token is signed with auth-svc's own current key, so only the claim under test
is wrong: the signature would verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import grpc
import pytest
from sqlalchemy import Engine

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.user.v1 import user_pb2
from services.auth_svc import server as auth_server
from services.auth_svc.keys import KeyRing
from services.auth_svc.tokens import issue_access_token
from tests.conftest import bearer, channel_to, make_config, serving

USER = user_pb2.User(user_id="u-1", email="a@example.com", roles=["user"])


@pytest.fixture
def tokens(db_url: str) -> Iterator[auth_pb2_grpc.AuthServiceStub]:
    settings = auth_server.AuthConfig(db_url, "127.0.0.1:1")
    build = partial(auth_server.build, settings=settings)
    with serving(make_config("auth-svc"), build) as server, channel_to(server) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


@pytest.mark.parametrize(
    ("issuer", "audience"),
    [("airline-auth", "another-api"), ("someone-else", "airline-api"), ("airline-auth", "")],
    ids=["wrong-aud", "wrong-iss", "empty-aud"],
)
def test_a_token_for_another_api_is_unauthenticated(
    tokens: auth_pb2_grpc.AuthServiceStub, engine: Engine, issuer: str, audience: str
) -> None:
    key = KeyRing(engine).current()
    token = issue_access_token(USER, key, issuer=issuer, audience=audience)

    with pytest.raises(grpc.RpcError) as refused:
        tokens.GetJwks(auth_pb2.GetJwksRequest(), metadata=bearer(token), timeout=10)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_for_this_api_is_accepted(
    tokens: auth_pb2_grpc.AuthServiceStub, engine: Engine
) -> None:
    token = issue_access_token(
        USER, KeyRing(engine).current(), issuer="airline-auth", audience="airline-api"
    )
    assert tokens.GetJwks(auth_pb2.GetJwksRequest(), metadata=bearer(token), timeout=10).keys

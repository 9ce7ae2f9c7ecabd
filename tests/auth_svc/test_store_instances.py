"""Two auth-svc instances on one database: one signing key, one JWKS, shared refresh tokens."""

from __future__ import annotations

from functools import partial

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth_svc import server as auth_server
from services.auth_svc.keys import KeyRing
from services.auth_svc.tokens import RefreshTokenStore
from services.runtime.db import make_engine
from tests.conftest import channel_to, make_config, serving
from tests.instances import started_together

# Never dialled: these tests call no method that needs user-svc.
UNUSED_ADDR = "127.0.0.1:1"


def test_two_instances_starting_together_publish_the_same_jwks(database_url: str) -> None:
    settings = auth_server.AuthConfig(database_url, UNUSED_ADDR)
    launches = [
        serving(make_config("auth-svc"), partial(auth_server.build, settings=settings))
        for _ in range(2)
    ]
    with started_together(*launches) as (first, second):
        documents = []
        for server in (first, second):
            with channel_to(server) as channel:
                stub = auth_pb2_grpc.AuthServiceStub(channel)
                documents.append(stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=10))
    assert len(documents[0].keys) == 1
    assert documents[0] == documents[1]


def test_refresh_token_issued_by_one_instance_rotates_at_the_other(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(2)]
    try:
        stores = [RefreshTokenStore(engine) for engine in engines]
        for store in stores:
            store.create_schema()
        KeyRing(engines[0]).create_schema()
        token = stores[0].issue("user-1")
        rotated = stores[1].rotate(token)
        assert rotated.user_id == "user-1"
    finally:
        for engine in engines:
            engine.dispose()

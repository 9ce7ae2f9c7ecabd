"""The server interceptor, seen from a real gRPC client."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime import context
from services.runtime.authn import JwksCache, TokenVerifier
from services.runtime.config import ServerConfig
from services.runtime.errors import InvalidArgument, field_violations
from services.runtime.server import Server, ServiceDefinition
from tests.conftest import channel_to, make_config, serving
from tests.runtime.test_authn import AUD, ISS, Keys


class Probe(auth_pb2_grpc.AuthServiceServicer):
    """Handlers that exercise each path of the interceptor."""

    def CreateToken(self, request: auth_pb2.CreateTokenRequest, ctx: object) -> object:
        raise InvalidArgument([("email", "must be a valid email"), ("password", "too short")])

    def RefreshToken(self, request: auth_pb2.RefreshTokenRequest, ctx: object) -> object:
        raise RuntimeError("SELECT password_hash FROM users -- must never leave the process")

    def RevokeToken(self, request: auth_pb2.RevokeTokenRequest, ctx: object) -> object:
        context.require().created("/v1/things/1")
        return auth_pb2.RevokeTokenResponse()

    def GetJwks(self, request: auth_pb2.GetJwksRequest, ctx: object) -> object:
        principal = context.require().require_principal()
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(kid=principal.user_id)])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys("probe")


@pytest.fixture(scope="module")
def stub(keys: Keys) -> Iterator[auth_pb2_grpc.AuthServiceStub]:
    verifier = TokenVerifier(JwksCache(lambda: [keys.jwk]), issuer=ISS, audience=AUD)

    def build(config: ServerConfig, registry: CollectorRegistry) -> ServiceDefinition:
        return ServiceDefinition(
            service_names=["airline.auth.v1.AuthService"],
            add_to_server=lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(Probe(), s),
            verifier=verifier,
        )

    with serving(make_config("probe"), build) as server, channel_to(server) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


def test_domain_error_carries_code_message_and_field_violations(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateToken(auth_pb2.CreateTokenRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [
        ("email", "must be a valid email"),
        ("password", "too short"),
    ]


def test_unexpected_error_is_internal_with_request_id_and_no_detail(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.RefreshToken(
            auth_pb2.RefreshTokenRequest(), metadata=[("x-request-id", "req-42")], timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "req-42" in err.value.details()
    assert "SELECT" not in err.value.details()
    status = rpc_status.from_call(err.value)
    assert status is not None
    assert "password_hash" not in str(status)


def test_request_id_is_echoed_and_created_headers_are_sent(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    _, call = stub.RevokeToken.with_call(
        auth_pb2.RevokeTokenRequest(), metadata=[("x-request-id", "abc-123")], timeout=5
    )
    headers = dict(call.initial_metadata())
    assert headers["x-request-id"] == "abc-123"
    assert (headers["x-http-status"], headers["location"]) == ("201", "/v1/things/1")


def test_request_id_is_generated_when_absent(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    _, call = stub.RevokeToken.with_call(auth_pb2.RevokeTokenRequest(), timeout=5)
    assert len(dict(call.initial_metadata())["x-request-id"]) == 32


def test_valid_bearer_token_reaches_the_handler_as_principal(
    stub: auth_pb2_grpc.AuthServiceStub, keys: Keys
) -> None:
    response = stub.GetJwks(
        auth_pb2.GetJwksRequest(),
        metadata=[("authorization", "Bearer " + keys.token(sub="user-7"))],
        timeout=5,
    )
    assert response.keys[0].kid == "user-7"


def test_missing_token_on_a_protected_method_is_unauthenticated(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_bad_token_is_unauthenticated_even_on_a_public_method(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.RevokeToken(
            auth_pb2.RevokeTokenRequest(), metadata=[("authorization", "Bearer junk")], timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_server_port_is_ephemeral_and_distinct() -> None:
    def build(config: ServerConfig, registry: CollectorRegistry) -> ServiceDefinition:
        return ServiceDefinition(service_names=[], add_to_server=lambda s: None)

    with serving(make_config("a"), build) as a, serving(make_config("b"), build) as b:
        assert isinstance(a, Server)
        assert a.port != b.port
        assert a.port > 0

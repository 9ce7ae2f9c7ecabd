"""The server interceptor, seen from a real gRPC client."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from services.runtime import context
from services.runtime.authn import JwksCache, TokenVerifier
from services.runtime.config import ServerConfig
from services.runtime.errors import InvalidArgument, Unauthenticated, field_violations
from services.runtime.interceptors import ServerInterceptor, VerifiedTokens
from services.runtime.metrics import ServerMetrics
from services.runtime.server import Server, ServiceDefinition
from tests.conftest import channel_to, make_config, serving
from tests.runtime.test_authn import AUD, ISS, Keys
from tests.support import wait_for


class Probe(auth_pb2_grpc.AuthServiceServicer):
    """Handlers that exercise each path of the interceptor."""

    def CreateToken(self, request: auth_pb2.CreateTokenRequest, ctx: grpc.ServicerContext) -> Any:
        raise InvalidArgument([("email", "must be a valid email"), ("password", "too short")])

    def RefreshToken(self, request: auth_pb2.RefreshTokenRequest, ctx: grpc.ServicerContext) -> Any:
        raise RuntimeError("SELECT password_hash FROM users -- must never leave the process")

    def RevokeToken(self, request: auth_pb2.RevokeTokenRequest, ctx: grpc.ServicerContext) -> Any:
        context.require().created("/v1/things/1")
        return auth_pb2.RevokeTokenResponse()

    def GetJwks(self, request: auth_pb2.GetJwksRequest, ctx: grpc.ServicerContext) -> Any:
        principal = context.require().require_principal()
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(kid=principal.user_id)])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys("probe")


@pytest.fixture(scope="module")
def stub(keys: Keys) -> Iterator[auth_pb2_grpc.AuthServiceStub]:
    verifier = TokenVerifier(JwksCache(lambda: [keys.jwk]), issuer=ISS, audience=AUD)
    build = _probe_build(verifier)
    with serving(make_config("probe"), build) as server, channel_to(server) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


def _probe_build(verifier: TokenVerifier | None) -> Callable[..., ServiceDefinition]:
    def build(config: ServerConfig, registry: CollectorRegistry) -> ServiceDefinition:
        return ServiceDefinition(
            service_names=["airline.auth.v1.AuthService"],
            add_to_server=lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(Probe(), s),
            verifier=verifier,
        )

    return build


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
            auth_pb2.RefreshTokenRequest(), metadata=(("x-request-id", "req-42"),), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "req-42" in str(err.value.details())
    assert "SELECT" not in str(err.value.details())
    status = rpc_status.from_call(err.value)
    assert status is not None
    assert "password_hash" not in str(status)


def test_request_id_is_echoed_and_created_headers_are_sent(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    _, call = stub.RevokeToken.with_call(
        auth_pb2.RevokeTokenRequest(), metadata=(("x-request-id", "abc-123"),), timeout=5
    )
    headers = dict(call.initial_metadata())
    assert headers["x-request-id"] == "abc-123"
    assert (headers["x-http-status"], headers["location"]) == ("201", "/v1/things/1")


def test_request_id_is_generated_when_absent(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    _, call = stub.RevokeToken.with_call(auth_pb2.RevokeTokenRequest(), timeout=5)
    assert len(dict(call.initial_metadata())["x-request-id"]) == 32


def test_a_plain_answer_carries_the_request_id_in_its_trailers_not_a_headers_batch(
    stub: auth_pb2_grpc.AuthServiceStub, keys: Keys
) -> None:
    """Without headers of its own, the answer leaves in one batch: request id in the trailers."""
    _, call = stub.GetJwks.with_call(
        auth_pb2.GetJwksRequest(),
        metadata=(("authorization", "Bearer " + keys.token()), ("x-request-id", "plain-1")),
        timeout=5,
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "plain-1"
    assert "x-request-id" not in dict(call.initial_metadata())


def test_each_method_is_wrapped_once_however_many_calls_it_gets() -> None:
    """The polling thread only looks the wrapped handler up; it builds nothing per call."""
    interceptor = ServerInterceptor(None, metrics=ServerMetrics(CollectorRegistry()))
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        lambda request, ctx: request
    )

    def details(method: str) -> grpc.HandlerCallDetails:
        return _Details(method, (("x-request-id", uuid.uuid4().hex),))

    first = interceptor.intercept_service(lambda _: handler, details("/pkg.Svc/A"))
    again = interceptor.intercept_service(lambda _: handler, details("/pkg.Svc/A"))
    other = interceptor.intercept_service(lambda _: handler, details("/pkg.Svc/B"))
    assert first is again
    assert other is not first


@dataclass(frozen=True)
class _Details(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


def test_valid_bearer_token_reaches_the_handler_as_principal(
    stub: auth_pb2_grpc.AuthServiceStub, keys: Keys
) -> None:
    response = stub.GetJwks(
        auth_pb2.GetJwksRequest(),
        metadata=(("authorization", "Bearer " + keys.token(sub="user-7")),),
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
            auth_pb2.RevokeTokenRequest(), metadata=(("authorization", "Bearer junk"),), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_server_port_is_ephemeral_and_distinct() -> None:
    def build(config: ServerConfig, registry: CollectorRegistry, **_: object) -> ServiceDefinition:
        return ServiceDefinition(service_names=[], add_to_server=lambda s: None)

    with serving(make_config("a"), build) as a, serving(make_config("b"), build) as b:
        assert isinstance(a, Server)
        assert a.port != b.port
        assert a.port > 0


class CountingVerifier(TokenVerifier):
    """The real verifier, counting how often it is asked."""

    calls = 0

    def verify(self, authorization: str) -> context.Principal:
        self.calls += 1
        return super().verify(authorization)


def _counting(keys: Keys) -> CountingVerifier:
    return CountingVerifier(JwksCache(lambda: [keys.jwk]), issuer=ISS, audience=AUD)


def test_a_token_is_verified_once_for_all_its_calls(keys: Keys) -> None:
    verifier = _counting(keys)
    tokens = VerifiedTokens(verifier)
    header = f"Bearer {keys.token()}"
    first = tokens.verify(header)
    assert [tokens.verify(header) for _ in range(5)] == [first] * 5
    assert verifier.calls == 1


def test_a_cached_token_past_its_expiry_is_verified_again_and_refused(keys: Keys) -> None:
    now = [time.time()]
    verifier = _counting(keys)
    tokens = VerifiedTokens(verifier, clock=lambda: now[0])
    header = f"Bearer {keys.token(exp=int(now[0]) + 60)}"
    tokens.verify(header)
    now[0] += 61
    tokens.verify(header)  # within the verifier's leeway: verified again, still valid
    assert verifier.calls == 2
    expired = f"Bearer {keys.token(exp=int(time.time()) - 60)}"
    with pytest.raises(Unauthenticated):
        tokens.verify(expired)
    assert len(tokens) == 1  # a refused token is not kept


def test_the_token_cache_is_bounded(keys: Keys) -> None:
    tokens = VerifiedTokens(_counting(keys), max_entries=3)
    for _ in range(7):
        tokens.verify(f"Bearer {keys.token()}")
    assert len(tokens) <= 3


def test_calls_are_counted_with_py_grpc_prometheus_names() -> None:
    with serving(make_config("probe"), _probe_build(None)) as server:
        with channel_to(server) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.CreateToken(auth_pb2.CreateTokenRequest(), timeout=5)
            stub.RevokeToken(auth_pb2.RevokeTokenRequest(), timeout=5)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = httpx.get(url, timeout=5).text
    labels = 'grpc_method="{}",grpc_service="airline.auth.v1.AuthService",grpc_type="UNARY"'
    assert f"grpc_server_started_total{{{labels.format('CreateToken')}}} 1.0" in text
    handled = 'grpc_server_handled_total{{grpc_code="{}",' + labels + "}} 1.0"
    assert handled.format("INVALID_ARGUMENT", "CreateToken") in text
    assert handled.format("OK", "RevokeToken") in text
    assert f"grpc_server_handling_seconds_count{{{labels.format('RevokeToken')}}} 1.0" in text


class Abandoned(Probe):
    """A handler that answers with headers of its own only after its client has gone."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.client_gone = threading.Event()

    def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, grpc_context: grpc.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        grpc_context.add_callback(self.client_gone.set)  # runs when the call ends, cancel too
        self.entered.set()
        assert self.client_gone.wait(timeout=10), "the client never cancelled"
        context.require().created("/v1/things/1")  # headers: send_initial_metadata now raises
        return auth_pb2.RevokeTokenResponse()


def test_a_call_its_client_cancelled_is_logged_and_counted_as_cancelled_not_internal(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """wrk stopping mid-call used to give an "unhandled error" traceback and an INTERNAL."""
    probe = Abandoned()

    def build(config: ServerConfig, registry: CollectorRegistry, **_: object) -> ServiceDefinition:
        return ServiceDefinition(
            service_names=["airline.auth.v1.AuthService"],
            add_to_server=lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(probe, s),
            verifier=None,
        )

    with serving(make_config("probe"), build) as server:
        caplog.set_level(logging.INFO, logger="rpc")  # `serving` logs WARNING and up only
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        labels = (
            'grpc_code="{}",grpc_method="RevokeToken",'
            'grpc_service="airline.auth.v1.AuthService",grpc_type="UNARY"'
        )
        with channel_to(server) as channel:
            call = auth_pb2_grpc.AuthServiceStub(channel).RevokeToken.future(
                auth_pb2.RevokeTokenRequest(), timeout=10
            )
            assert probe.entered.wait(timeout=10)
            call.cancel()
            counted = f"grpc_server_handled_total{{{labels.format('CANCELLED')}}} 1.0"
            wait_for(lambda: counted in httpx.get(url, timeout=5).text, "the cancel counted")
        text = httpx.get(url, timeout=5).text
    assert labels.format("INTERNAL") not in text
    # Only this call's lines: other servers of the test session log to the same stderr.
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    lines = [line for line in lines if "RevokeToken" in line.get("method", "")]
    assert [(line["logger"], line["event"], line["level"], line["code"]) for line in lines] == [
        ("rpc", "rpc", "info", "CANCELLED")
    ]
    assert "traceback" not in lines[0]

"""Outbound calls through `clients.dial`: deadlines, request ids and metrics, on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry

from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2
from services.runtime import context
from services.runtime.clients import ANSWER_MARGIN_SECONDS, client_metrics, dial
from tests.support import at_most_as_sent

SERVICE = "airline.user.v1.UserInternalService"


@dataclass
class Seen:
    """What the server saw of each call: its metadata and the time it had left."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    time_remaining: list[float] = field(default_factory=list)


class Users(user_internal_pb2_grpc.UserInternalServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self._seen = seen

    def LookupUser(
        self, request: user_internal_pb2.LookupUserRequest, grpc_context: grpc.ServicerContext
    ) -> user_internal_pb2.LookupUserResponse:
        self._seen.metadata.append(dict(cast(Any, grpc_context.invocation_metadata())))
        self._seen.time_remaining.append(grpc_context.time_remaining())
        if request.user_id == "nobody":
            grpc_context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        return user_internal_pb2.LookupUserResponse(user=user_pb2.User(user_id=request.user_id))

    def VerifyPassword(
        self, request: user_internal_pb2.VerifyPasswordRequest, grpc_context: grpc.ServicerContext
    ) -> user_internal_pb2.VerifyPasswordResponse:
        grpc_context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def target(seen: Seen) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    user_internal_pb2_grpc.add_UserInternalServiceServicer_to_server(Users(seen), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def lookup(channel: grpc.Channel, user_id: str) -> Any:
    stub = user_internal_pb2_grpc.UserInternalServiceStub(channel)
    return stub.LookupUser(user_internal_pb2.LookupUserRequest(user_id=user_id))


def test_outbound_calls_are_counted_with_py_grpc_prometheus_names(target: str) -> None:
    registry = CollectorRegistry()
    with dial(target, default_timeout=5, metrics=client_metrics(registry)) as channel:
        lookup(channel, "ada")
        lookup(channel, "ada")
        with pytest.raises(grpc.RpcError):
            lookup(channel, "nobody")
    labels = {"grpc_type": "UNARY", "grpc_service": SERVICE, "grpc_method": "LookupUser"}
    assert registry.get_sample_value("grpc_client_started_total", labels) == 3
    handled = "grpc_client_handled_total"
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "OK"}) == 2
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "NOT_FOUND"}) == 1


@dataclass
class Served:
    """The part of a served call's context an outbound call reads: its time left."""

    seconds_left: float

    def time_remaining(self) -> float:
        return self.seconds_left


def test_a_call_made_while_serving_carries_its_request_id_within_its_deadline(
    target: str, seen: Seen
) -> None:
    served = context.RequestContext(
        request_id="req-7", method="/x.Y/Z", grpc_context=cast(Any, Served(1.0)), caller=None
    )
    token = context.activate(served)
    try:
        with dial(target, default_timeout=5) as channel:
            lookup(channel, "ada")
    finally:
        context.deactivate(token)
    assert seen.metadata[0]["x-request-id"] == "req-7"
    assert 0 < seen.time_remaining[0] <= at_most_as_sent(1.0 - ANSWER_MARGIN_SECONDS)


def test_a_call_made_outside_a_served_call_has_the_channels_default_timeout(
    target: str, seen: Seen
) -> None:
    with dial(target, default_timeout=2) as channel:
        lookup(channel, "ada")
    assert 1 < seen.time_remaining[0] <= at_most_as_sent(2)
    assert "x-request-id" not in seen.metadata[0]

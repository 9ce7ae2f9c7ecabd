"""ShouldRateLimit over real gRPC, counted in a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, TypeAlias

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import CollectorRegistry

from ratelimit.server import RateLimitConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import Server
from tests.ratelimit.conftest import LIMITS
from tests.support import free_ports, wait_for_window_room

Response = rls_pb2.RateLimitResponse
# xds-protos ships no type stubs: its messages and stubs are Any to mypy.
Stub: TypeAlias = Any


def ask(stub: Stub, name: str, address: str, domain: str = LIMITS.domain) -> Any:
    descriptor = common_pb2.RateLimitDescriptor(
        entries=[
            common_pb2.RateLimitDescriptor.Entry(key="generic_key", value=name),
            common_pb2.RateLimitDescriptor.Entry(key="remote_address", value=address),
        ]
    )
    request = rls_pb2.RateLimitRequest(domain=domain, descriptors=[descriptor])
    answer = stub.ShouldRateLimit(request, timeout=5)
    return answer


@pytest.fixture(autouse=True)
def _room_in_the_minute() -> None:
    """create_token counts per minute on Redis's clock: a minute ending between two calls
    of a test would reset its count (the hour of create_user ends with a minute too)."""
    wait_for_window_room(60)


@pytest.fixture
def address() -> str:
    """A client address no other test counts for."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def test_calls_within_the_limit_are_ok_and_count_down(stub: Stub, address: str) -> None:
    answers = [ask(stub, "create_token", address) for _ in range(3)]

    assert [a.overall_code for a in answers] == [Response.OK] * 3
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0]
    limit = answers[0].statuses[0].current_limit
    assert (limit.requests_per_unit, limit.unit) == (3, Response.RateLimit.MINUTE)
    assert 1 <= answers[0].statuses[0].duration_until_reset.seconds <= 60


def test_the_call_over_the_limit_is_over_limit_with_retry_after(stub: Stub, address: str) -> None:
    for _ in range(3):
        ask(stub, "create_token", address)

    answer = ask(stub, "create_token", address)

    assert answer.overall_code == Response.OVER_LIMIT
    assert answer.statuses[0].limit_remaining == 0
    headers = {h.key: h.value for h in answer.response_headers_to_add}
    assert 1 <= int(headers["retry-after"]) <= 60
    assert int(headers["retry-after"]) == answer.statuses[0].duration_until_reset.seconds


def test_a_sliding_limit_refuses_the_call_over_it(stub: Stub, address: str) -> None:
    answers = [ask(stub, "create_user", address).overall_code for _ in range(3)]

    assert answers == [Response.OK, Response.OK, Response.OVER_LIMIT]


def test_a_descriptor_naming_no_limit_is_ok_without_a_count(stub: Stub, address: str) -> None:
    answers = [ask(stub, "list_flights", address) for _ in range(5)]

    assert [a.overall_code for a in answers] == [Response.OK] * 5
    assert not answers[0].statuses[0].HasField("current_limit")


def test_another_domains_descriptors_are_not_limited(stub: Stub, address: str) -> None:
    answers = [ask(stub, "create_token", address, domain="elsewhere") for _ in range(5)]

    assert [a.overall_code for a in answers] == [Response.OK] * 5


@pytest.fixture
def without_redis() -> Iterator[Stub]:
    """The service pointed at a port where no Redis listens."""
    config = ServerConfig("ratelimit", grace_seconds=1)
    settings = RateLimitConfig(redis_url=f"redis://127.0.0.1:{free_ports(1)[0]}/0", limits=LIMITS)
    registry = CollectorRegistry()
    server = Server(config, build(config, registry, settings), registry)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield rls_pb2_grpc.RateLimitServiceStub(channel)
    finally:
        server.stop()


def test_an_unreachable_redis_is_unavailable_not_ok(without_redis: Stub, address: str) -> None:
    """Envoy must see an error (and apply its failure mode), never a made-up OK."""
    with pytest.raises(grpc.RpcError) as failed:
        ask(without_redis, "create_token", address)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert address not in (failed.value.details() or "")

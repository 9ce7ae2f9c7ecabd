"""A real Redis per module and the rate limit service on an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from prometheus_client import CollectorRegistry

from ratelimit import limits
from ratelimit.server import RateLimitConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import Server
from tests.ratelimit.redis_server import RedisServer

LIMITS = limits.Limits(
    "test-edge",
    {
        "create_token": limits.Limit("create_token", 3, 60),
        "create_user": limits.Limit("create_user", 2, 3600, limits.Algorithm.SLIDING),
    },
)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Server]:
    """The rate limit service (the shared runtime's server) on an ephemeral port."""
    config = ServerConfig("ratelimit", port=0, metrics_port=0, grace_seconds=1)
    settings = RateLimitConfig(redis_url=redis_server.url, limits=LIMITS)
    registry = CollectorRegistry()
    server = Server(config, build(config, registry, settings), registry)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub(service: Server) -> Iterator[rls_pb2_grpc.RateLimitServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel)

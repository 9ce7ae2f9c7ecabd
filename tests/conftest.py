"""Fixtures shared by every test: real servers on ephemeral ports, stopped on teardown."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import CollectorRegistry

from services.runtime import logs
from services.runtime.config import ServerConfig
from services.runtime.server import Builder, Server


@contextmanager
def serving(config: ServerConfig, build: Builder) -> Iterator[Server]:
    """Runs a service instance in this process on 127.0.0.1:0 until the block ends."""
    logs.configure(config.service_name, "WARNING")
    registry = CollectorRegistry()
    server = Server(config, build(config, registry), registry)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_config(service_name: str, **overrides: object) -> ServerConfig:
    """A config for tests: ephemeral ports, short grace, cheap health polling."""
    fields: dict[str, object] = {
        "service_name": service_name,
        "grace_seconds": 2.0,
        "check_interval_seconds": 0.5,
    }
    fields.update(overrides)
    return ServerConfig(**fields)  # type: ignore[arg-type]


@contextmanager
def channel_to(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel

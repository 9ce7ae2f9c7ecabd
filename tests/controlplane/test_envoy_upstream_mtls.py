"""Envoy to instances over mutual TLS, with the identity of the cluster checked: against
a real Envoy, real Consul and real gRPC servers holding the mesh CA's certificates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.app import ControlPlane
from controlplane.ca import MeshCA, write_credentials
from controlplane.resources import ClusterPolicy
from services.runtime.identity import ReloadingServerCredentials
from tests.consul import ConsulAgent, running_control_plane
from tests.controlplane.conftest import (
    Envoy,
    GrpcInstance,
    unique_name,
)
from tests.controlplane.test_envoy_discovery import check_through
from tests.support import wait_for

pytestmark = pytest.mark.slow


class MtlsInstance:
    """A gRPC health server that accepts only mesh certificates, holding one for `identity`."""

    def __init__(self, ca: MeshCA, identity: str, directory: Path) -> None:
        issued = ca.issue(identity, ip_addresses=["127.0.0.1"])
        credentials = ReloadingServerCredentials(write_credentials(issued, directory))
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials.credentials)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def plane(
    consul: ConsulAgent, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    with running_control_plane(
        consul.http_addr,
        pki_dir=pki,
        policy=ClusterPolicy(upstream_tls=True),
        xds_socket=tmp_path_factory.mktemp("xds") / "ads.sock",
    ) as control_plane:
        yield control_plane


@pytest.fixture(scope="module")
def mtls_envoy(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    with Envoy(tmp_path_factory.mktemp("mtls-envoy"), plane.socket) as proxy:
        yield proxy


@pytest.fixture
def mtls_instances(pki: Path, tmp_path: Path) -> Iterator[Callable[[str], MtlsInstance]]:
    """Starts instances holding a certificate for the given name; stops them after."""
    ca = MeshCA.load_or_create(pki / "ca")  # The control plane's own CA.
    started: list[MtlsInstance] = []

    def start(identity: str) -> MtlsInstance:
        started.append(MtlsInstance(ca, identity, tmp_path / f"instance-{len(started)}"))
        return started[-1]

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()


def healthy(envoy: Envoy, name: str, port: int) -> None:
    wait_for(lambda: envoy.hosts(name) == {port: "HEALTHY"}, f"{name} known to envoy")


def counter(envoy: Envoy, cluster: str, stat: str) -> int:
    stats = envoy.get(f"/stats?filter=^cluster\\.{cluster}\\.{stat}$").text
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if ":" in line)


def verify_failures(envoy: Envoy, cluster: str) -> int:
    """Envoy's count of upstream handshakes refused for a SAN that did not match."""
    return counter(envoy, cluster, "ssl\\.fail_verify_san")


def codes_until_a_connection_is_tried(envoy: Envoy, cluster: str) -> set[object]:
    """What calls through Envoy to `cluster` answer, until one of them made Envoy open a
    connection to the host. Admin's view is the main thread's: a worker gets the new host
    a moment later, and a call before that fails for having no host at all, which would
    prove nothing about the host's certificate."""
    codes: set[object] = set()

    def tried() -> bool:
        codes.add(check_through(envoy, cluster))
        return counter(envoy, cluster, "upstream_cx_total") > 0

    wait_for(tried, f"envoy to open a connection to {cluster}'s host")
    return codes


def test_instance_with_the_clusters_certificate_is_reached_over_mtls(
    consul: ConsulAgent, mtls_envoy: Envoy, mtls_instances: Callable[[str], MtlsInstance]
) -> None:
    name = unique_name("mtls")
    instance = mtls_instances(name)
    consul.register(name, f"{name}-1", instance.port, checked=False)
    healthy(mtls_envoy, name, instance.port)
    wait_for(
        lambda: check_through(mtls_envoy, name) == health_pb2.HealthCheckResponse.SERVING,
        f"a call through envoy to reach {name}",
    )


def test_instance_registered_under_another_name_gets_no_traffic(
    consul: ConsulAgent, mtls_envoy: Envoy, mtls_instances: Callable[[str], MtlsInstance]
) -> None:
    """An impostor with a real mesh certificate, but not for the name it registered."""
    name = unique_name("victim")
    impostor = mtls_instances(unique_name("impostor"))
    consul.register(name, f"{name}-1", impostor.port, checked=False)
    healthy(mtls_envoy, name, impostor.port)
    assert codes_until_a_connection_is_tried(mtls_envoy, name) == {grpc.StatusCode.UNAVAILABLE}
    assert verify_failures(mtls_envoy, name) > 0


def test_plaintext_instance_gets_no_traffic(
    consul: ConsulAgent, mtls_envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    name, instance = unique_name("plain"), instances()
    consul.register(name, f"{name}-1", instance.port, checked=False)
    healthy(mtls_envoy, name, instance.port)
    assert codes_until_a_connection_is_tried(mtls_envoy, name) == {grpc.StatusCode.UNAVAILABLE}

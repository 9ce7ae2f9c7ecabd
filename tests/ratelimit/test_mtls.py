"""The rate limit service as a mesh workload: mutual TLS only, and only the edge may ask.

The real service (the shared runtime's server, the mesh's policy file) on an ephemeral
port, holding a certificate for `ratelimit` from a real CA; the clients hold real
certificates of that CA, or of another, or none.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from controlplane.ca import MeshCA, write_credentials
from ratelimit.server import SERVICE_NAME, RateLimitConfig, build
from services.runtime.authz import load_policy
from services.runtime.config import ServerConfig
from services.runtime.identity import CredentialFiles, FileSource, channel_credentials
from services.runtime.server import Server, Trust
from tests.ratelimit.conftest import LIMITS
from tests.ratelimit.redis_server import RedisServer

POLICY_FILE = Path(__file__).resolve().parents[2] / "mesh" / "policy.toml"
Response = rls_pb2.RateLimitResponse
# xds-protos ships no type stubs: its stubs are Any to mypy.
Stub = Any


@pytest.fixture(scope="module")
def mesh_ca(tmp_path_factory: pytest.TempPathFactory) -> MeshCA:
    return MeshCA.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def credentials(
    mesh_ca: MeshCA, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], CredentialFiles]:
    """Files of a certificate of the mesh CA for the named workload."""
    folder = tmp_path_factory.mktemp("pki")

    def issue(name: str) -> CredentialFiles:
        issued = mesh_ca.issue(name, ip_addresses=["127.0.0.1"])
        return write_credentials(issued, folder / name)

    return issue


@pytest.fixture(scope="module")
def secured(
    redis_server: RedisServer, credentials: Callable[[str], CredentialFiles]
) -> Iterator[Server]:
    """The rate limit service serving mutual TLS with its own certificate and the mesh policy."""
    config = ServerConfig(SERVICE_NAME, port=0, metrics_port=0, grace_seconds=1)
    settings = RateLimitConfig(redis_url=redis_server.url, limits=LIMITS)
    registry = CollectorRegistry()
    trust = Trust(FileSource(credentials(SERVICE_NAME)), load_policy(POLICY_FILE))
    identity = trust.identity
    server = Server(
        config, build(config, registry, settings, identity=identity), registry, None, trust
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(channel: grpc.Channel) -> Any:
    stub: Stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    descriptor = common_pb2.RateLimitDescriptor(
        entries=[
            common_pb2.RateLimitDescriptor.Entry(key="generic_key", value="create_token"),
            common_pb2.RateLimitDescriptor.Entry(
                key="remote_address", value=f"2001:db8::{uuid.uuid4().hex[:4]}"
            ),
        ]
    )
    request = rls_pb2.RateLimitRequest(domain=LIMITS.domain, descriptors=[descriptor])
    return stub.ShouldRateLimit(request, timeout=5)


def mtls_channel(server: Server, files: CredentialFiles) -> grpc.Channel:
    # The server's certificate names 127.0.0.1 (its IP SAN), as Consul and Envoy dial it.
    return grpc.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(files))


def test_the_edge_is_answered(
    secured: Server, credentials: Callable[[str], CredentialFiles]
) -> None:
    with mtls_channel(secured, credentials("edge")) as channel:
        answer = ask(channel)

    assert answer.overall_code == Response.OK
    assert answer.statuses[0].limit_remaining == LIMITS.by_name["create_token"].requests - 1


def test_another_workload_of_the_mesh_is_permission_denied(
    secured: Server, credentials: Callable[[str], CredentialFiles]
) -> None:
    """A real mesh certificate (user-svc's) is not enough: the policy names the edge only."""
    with (
        mtls_channel(secured, credentials("user-svc")) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        ask(channel)

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_operator_may_check_health_but_not_ask_for_decisions(
    secured: Server, credentials: Callable[[str], CredentialFiles]
) -> None:
    with mtls_channel(secured, credentials("operator")) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        with pytest.raises(grpc.RpcError) as refused:
            ask(channel)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_plaintext_client_is_refused(secured: Server) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        ask(channel)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_with_a_certificate_of_another_ca_is_refused(
    secured: Server, mesh_ca: MeshCA, tmp_path: Path
) -> None:
    """An `edge` certificate, but from a CA the mesh does not trust (its own CA trusted)."""
    other = MeshCA.load_or_create(tmp_path / "other-ca").issue("edge")
    files = write_credentials(other, tmp_path / "edge")
    files.ca.write_bytes(mesh_ca.cert_pem)  # The client trusts the server: only it is foreign.
    with mtls_channel(secured, files) as channel, pytest.raises(grpc.RpcError) as refused:
        ask(channel)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_service_shows_the_ratelimit_identity(
    secured: Server, credentials: Callable[[str], CredentialFiles]
) -> None:
    """What Envoy's cluster checks: the one URI SAN is the rate limit service's SPIFFE id."""
    edge = credentials("edge")
    context = ssl.create_default_context(cafile=str(edge.ca))
    context.check_hostname = False  # The IP SAN is not what is checked here.
    context.load_cert_chain(str(edge.cert), str(edge.key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", secured.port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )

    assert sans.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://airline.local/svc/ratelimit"
    ]

"""The rate limit service inside a whole mesh (`python -m mesh up`): a workload like the others.

Its certificate comes from the mesh CA through the CSR endpoint, proven with its own
Consul token; it serves mutual TLS only and answers ShouldRateLimit to the edge only;
Envoy reaches it over mutual TLS and sends nothing to a process on its port that holds
another workload's certificate.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from controlplane.ca import MeshCA, write_credentials
from ratelimit.limits import load
from ratelimit.server import LIMITS_FILE, SERVICE_NAME, RateLimitConfig, build
from services.runtime.authz import load_policy
from services.runtime.config import ServerConfig
from services.runtime.identity import CredentialFiles, FileSource, channel_credentials
from services.runtime.server import Server, Trust
from tests.integration.conftest import Mesh, running_mesh
from tests.support import wait_for, wait_for_window_room

pytestmark = pytest.mark.integration

LIMIT = 3
WINDOW_SECONDS = 86400
# Each call of sign_ins gets an address no other call used: a random pick could land on
# one whose count another call already spent.
ADDRESSES = (f"127.0.{3 + n // 250}.{n % 250 + 1}" for n in itertools.count())
SUPERVISORCTL = str(Path(sys.executable).parent / "supervisorctl")
POLICY_FILE = Path(__file__).resolve().parents[2] / "mesh" / "policy.toml"
RATELIMIT_ID = "spiffe://airline.local/svc/ratelimit"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(
        tmp_path_factory.mktemp("ratelimit-mesh"),
        BOOKING_SEED_DAYS="1",
        TOKEN_RATE_LIMIT=str(LIMIT),
        # A day: the test that counts waits until its window has room left.
        TOKEN_RATE_WINDOW_SECONDS=str(WINDOW_SECONDS),
    ) as found:
        yield found


def operator(mesh: Mesh) -> CredentialFiles:
    return CredentialFiles(
        mesh.pki / "operator.pem", mesh.pki / "operator-key.pem", mesh.pki / "ca.pem"
    )


def ratelimit_addr(mesh: Mesh) -> str:
    return f"127.0.0.1:{mesh.ports.ratelimit}"


def sign_ins(mesh: Mesh, count: int) -> list[int]:
    """Wrong passwords for new emails, from a client address no other call used."""
    address = next(ADDRESSES)
    with mesh.client(transport=httpx.HTTPTransport(local_address=address)) as http:
        return [
            http.post(
                "/v1/auth/token",
                json={"email": f"{uuid.uuid4().hex[:12]}@example.com", "password": "wrong-one"},
            ).status_code
            for _ in range(count)
        ]


def stat(mesh: Mesh, name: str) -> int:
    stats = httpx.get(f"{mesh.envoy_admin}/stats", params={"format": "json"}, timeout=5).json()
    return int({s["name"]: s.get("value", 0) for s in stats["stats"] if "name" in s}.get(name, 0))


def ask(channel: grpc.Channel) -> Any:
    descriptor = common_pb2.RateLimitDescriptor(
        entries=[
            common_pb2.RateLimitDescriptor.Entry(key="generic_key", value="create_token"),
            common_pb2.RateLimitDescriptor.Entry(key="remote_address", value="192.0.2.1"),
        ]
    )
    request = rls_pb2.RateLimitRequest(domain="airline-edge", descriptors=[descriptor])
    return rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request, timeout=5)


def test_the_edge_limits_sign_ins_through_its_mtls_cluster(mesh: Mesh) -> None:
    wait_for_window_room(WINDOW_SECONDS, 60)
    codes = sign_ins(mesh, LIMIT + 1)

    assert codes == [401] * LIMIT + [429]
    # The answers came over TLS: the cluster has no other way to its upstream.
    assert stat(mesh, "cluster.ratelimit.ssl.handshake") >= 1


def test_the_service_holds_a_ratelimit_certificate_of_the_mesh_ca(mesh: Mesh) -> None:
    """Issued through the CSR endpoint for the name its own Consul token names."""
    files = operator(mesh)
    context = ssl.create_default_context(cafile=str(files.ca))  # verifies the chain
    context.check_hostname = False
    context.load_cert_chain(str(files.cert), str(files.key))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", mesh.ports.ratelimit), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )

    assert sans.value.get_values_for_type(x509.UniformResourceIdentifier) == [RATELIMIT_ID]


def test_a_plaintext_client_is_refused(mesh: Mesh) -> None:
    with (
        grpc.insecure_channel(ratelimit_addr(mesh)) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        ask(channel)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_operator_checks_health_but_may_not_ask_for_decisions(mesh: Mesh) -> None:
    target = ratelimit_addr(mesh)
    with grpc.secure_channel(target, channel_credentials(operator(mesh))) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        with pytest.raises(grpc.RpcError) as refused:
            ask(channel)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _ctl(mesh: Mesh, *args: str) -> None:
    done = subprocess.run(
        [SUPERVISORCTL, "-c", str(mesh.var_dir / "supervisord.conf"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def impostor(mesh: Mesh, tmp_path: Path) -> Iterator[Server]:
    """On the rate limit service's port: the real service code with a real certificate of
    the mesh CA, but user-svc's, as a process that took the port would hold."""
    ca = MeshCA.load_or_create(mesh.pki / "ca")
    files = write_credentials(ca.issue("user-svc", ip_addresses=["127.0.0.1"]), tmp_path / "pki")
    config = ServerConfig(SERVICE_NAME, port=mesh.ports.ratelimit, grace_seconds=1)
    settings = RateLimitConfig(
        redis_url=f"redis://127.0.0.1:{mesh.ports.redis}/0", limits=load(LIMITS_FILE, {})
    )
    registry = CollectorRegistry()
    trust = Trust(FileSource(files), load_policy(POLICY_FILE))
    definition = build(config, registry, settings, identity=trust.identity)
    _ctl(mesh, "stop", "ratelimit")
    server = Server(config, definition, registry, None, trust)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _ctl(mesh, "start", "ratelimit")
        wait_for(lambda: sign_ins(mesh, 1) == [401], "sign-in to work again", 30)


def test_a_process_without_the_ratelimit_certificate_gets_no_questions(
    mesh: Mesh, impostor: Server
) -> None:
    """Envoy checks the SAN: the sign-in fails closed rather than ask an impostor."""
    refused_before = stat(mesh, "cluster.ratelimit.ssl.fail_verify_san")

    codes = sign_ins(mesh, 1)

    assert codes == [503]
    assert stat(mesh, "cluster.ratelimit.ssl.fail_verify_san") > refused_before

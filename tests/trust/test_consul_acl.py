"""Consul with ACLs on (default deny), set up by mesh/acl.py, and the CA's signing
endpoint that trusts a workload's Consul token for its name; all against real Consul."""

from __future__ import annotations

import stat
from collections.abc import Iterator

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airline.mesh.v1 import certificate_pb2, certificate_pb2_grpc
from contract import routes
from controlplane.app import SigningServer
from controlplane.ca import MeshCA
from controlplane.config import ControlPlaneConfig
from mesh.acl import ensure_tokens
from mesh.config import ROOT
from services.runtime.certificates import CaEndpoint, CertificateError, WorkloadIdentity
from tests.consul import ConsulAgent, require_consul
from tests.support import free_ports

SERVICES = routes.load(ROOT / "generated" / "airline.pb").workloads


@pytest.fixture(scope="module")
def acl_consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    binary = require_consul()
    agent = ConsulAgent(
        binary,
        tmp_path_factory.mktemp("consul-acl"),
        extra_config=(ROOT / "consul" / "acl.hcl",),
    )
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def tokens(acl_consul: ConsulAgent, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("var") / "tokens"
    files = ensure_tokens(acl_consul.http_addr, folder, SERVICES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files.values())
    return {name: path.read_text().strip() for name, path in files.items()}


def register(consul: ConsulAgent, name: str, token: str | None) -> httpx.Response:
    headers = {"X-Consul-Token": token} if token else {}
    body = {"ID": f"{name}-fake", "Name": name, "Address": "127.0.0.1", "Port": 1}
    return httpx.put(
        f"http://{consul.http_addr}/v1/agent/service/register", json=body, headers=headers
    )


def test_registration_without_a_token_is_refused(
    acl_consul: ConsulAgent, tokens: dict[str, str]
) -> None:
    assert register(acl_consul, "user-svc", None).status_code == 403


def test_registration_under_another_services_name_is_refused(
    acl_consul: ConsulAgent, tokens: dict[str, str]
) -> None:
    assert register(acl_consul, "user-svc", tokens["booking-svc"]).status_code == 403
    assert register(acl_consul, "user-svc", tokens["controlplane"]).status_code == 403


def test_a_services_token_registers_its_own_name(
    acl_consul: ConsulAgent, tokens: dict[str, str]
) -> None:
    assert register(acl_consul, "predict-svc", tokens["predict-svc"]).status_code == 200
    health = httpx.get(
        f"http://{acl_consul.http_addr}/v1/health/service/predict-svc",
        headers={"X-Consul-Token": tokens["controlplane"]},
    )
    assert [e["Service"]["Service"] for e in health.json()] == ["predict-svc"]


def test_ensure_tokens_again_keeps_the_tokens(
    acl_consul: ConsulAgent, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.getbasetemp() / "var0" / "tokens"
    again = ensure_tokens(acl_consul.http_addr, folder, SERVICES)
    assert {name: path.read_text().strip() for name, path in again.items()} == tokens


@pytest.fixture(scope="module")
def signing(
    acl_consul: ConsulAgent, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SigningServer, bytes]]:
    pki = tmp_path_factory.mktemp("pki")
    ca = MeshCA.load_or_create(pki / "ca")
    config = ControlPlaneConfig(
        consul_addr=acl_consul.http_addr, pki_dir=pki, ca_addr=f"127.0.0.1:{free_ports(1)[0]}"
    )
    server = SigningServer(config, ca)
    server.start()
    try:
        yield server, ca.cert_pem
    finally:
        server.stop(0)


def identity_with(signing: tuple[SigningServer, bytes], token: str) -> WorkloadIdentity:
    server, ca_pem = signing
    endpoint = CaEndpoint(f"127.0.0.1:{server.port}", ca_pem, token)
    return WorkloadIdentity(endpoint, ["127.0.0.1"], start_timeout=60)


def test_the_ca_signs_the_tokens_service_name_with_its_ip(
    signing: tuple[SigningServer, bytes], tokens: dict[str, str]
) -> None:
    identity = identity_with(signing, tokens["user-svc"])
    identity.start()
    try:
        cert = x509.load_pem_x509_certificate(identity.credentials().cert)
    finally:
        identity.stop()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://airline.local/svc/user-svc"
    ]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-token", "UNAUTHENTICATED"),
        ("controlplane", "PERMISSION_DENIED"),
        ("", "UNAUTHENTICATED"),
    ],
)
def test_the_ca_refuses_a_token_that_names_no_service(
    signing: tuple[SigningServer, bytes], tokens: dict[str, str], token: str, code: str
) -> None:
    secret = tokens.get(token, token)
    identity = identity_with(signing, secret)
    with pytest.raises(CertificateError, match=f"^{code}:") as raised:
        identity.start()
    assert not secret or secret not in str(raised.value)


def test_the_ca_endpoint_refuses_plaintext(signing: tuple[SigningServer, bytes]) -> None:
    server, _ = signing
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=1)


def test_a_user_svc_token_asking_for_booking_svc_gets_a_user_svc_certificate(
    signing: tuple[SigningServer, bytes], tokens: dict[str, str]
) -> None:
    """The CSR's subject and SANs name booking-svc; the certificate names the token's
    service, user-svc, and nothing of what the request asked for."""
    server, ca_pem = signing
    key = ec.generate_private_key(ec.SECP256R1())
    wanted = "spiffe://airline.local/svc/booking-svc"
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "booking-svc")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(wanted)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    request = certificate_pb2.SignCertificateRequest(
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode()
    )
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
        answer = certificate_pb2_grpc.CertificateServiceStub(channel).SignCertificate(
            request, timeout=60, metadata=(("x-consul-token", tokens["user-svc"]),)
        )
    cert = x509.load_pem_x509_certificate(answer.certificate_chain_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://airline.local/svc/user-svc"
    ]
    assert "booking-svc" not in cert.subject.rfc4514_string()
    assert cert.public_key() == key.public_key()

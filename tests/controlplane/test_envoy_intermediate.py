"""The control plane renews its own intermediate CA before it expires, against a real
Envoy: with an intermediate that lives 45 s (renewed at 30 s), Envoy's listener goes on
to serve a certificate from the new intermediate, a chain that verifies against the
unchanged root bundle, while a client connects without pause and never fails."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.app import ControlPlane
from controlplane.ca import write_credentials
from services.runtime.identity import CredentialFiles
from tests.consul import ConsulAgent, running_control_plane
from tests.controlplane.conftest import Envoy
from tests.support import wait_for

pytestmark = pytest.mark.slow

SDS_BOOTSTRAP = Path(__file__).with_name("envoy-sds-bootstrap.yaml")
INTERMEDIATE_SECONDS = 45.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def plane(consul: ConsulAgent, pki: Path) -> Iterator[ControlPlane]:
    with running_control_plane(
        consul.http_addr,
        pki_dir=pki,
        cert_lifetime_seconds=10.0,
        intermediate_lifetime_seconds=INTERMEDIATE_SECONDS,
    ) as control_plane:
        yield control_plane


@pytest.fixture(scope="module")
def sds_envoy(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    with Envoy(tmp_path_factory.mktemp("sds-envoy"), plane.socket, SDS_BOOTSTRAP) as proxy:
        yield proxy


def served_issuer(port: int, client: CredentialFiles) -> x509.Name:
    """The issuer of the leaf Envoy serves, its chain verified against the root bundle."""
    context = ssl.create_default_context(cafile=client.ca)
    context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer


def test_envoy_serves_a_chain_from_the_renewed_intermediate_with_no_failed_handshake(
    plane: ControlPlane, sds_envoy: Envoy, pki: Path, tmp_path: Path
) -> None:
    assert plane.authority is not None
    first = plane.authority.current
    # A client of its own (the operator's files are rewritten at each renewal), from
    # the first intermediate: it stays valid, under the same root, after the renewal.
    client = write_credentials(first.issue("operator"), tmp_path)
    bundle = (pki / "ca.pem").read_bytes()
    issuers = [served_issuer(sds_envoy.listener_port, client)]
    assert issuers[0] == first.cert.subject

    def from_a_new_intermediate() -> bool:
        # A steady stream of handshakes: any failure raises and fails the test.
        issuers.append(served_issuer(sds_envoy.listener_port, client))
        return issuers[-1] != first.cert.subject

    wait_for(from_a_new_intermediate, "a certificate from the renewed intermediate", 45, 0.2)
    renewed = plane.authority.current
    assert renewed.cert.subject != first.cert.subject
    assert issuers[-1] == renewed.cert.subject
    assert renewed.cert.public_key() != first.cert.public_key()
    assert renewed.cert.issuer == first.cert.issuer  # the same root signed both
    assert (pki / "ca.pem").read_bytes() == bundle
    assert len(issuers) > 20

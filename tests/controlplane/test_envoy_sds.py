"""Envoy's certificate through SDS over the ADS stream, against a real Envoy: the listener
serves the certificate the control plane issued, and a renewal is served without a restart."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.app import ControlPlane
from controlplane.ca import MeshCA, write_credentials
from services.runtime.identity import CredentialFiles
from tests.consul import ConsulAgent, running_control_plane
from tests.controlplane.conftest import Envoy
from tests.support import wait_for

pytestmark = pytest.mark.slow

SDS_BOOTSTRAP = Path(__file__).with_name("envoy-sds-bootstrap.yaml")


@dataclass
class Served:
    """What one TLS connection to Envoy's listener saw."""

    serial: int
    uris: list[str]
    answer: bytes


def connect(port: int, client: CredentialFiles | None, ca: Path) -> Served:
    """A TLS handshake (with `client`'s certificate, if any) and one HTTP request."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = tls.recv(4096)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    return Served(cert.serial_number, uris, answer)


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def plane(
    consul: ConsulAgent, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    ads_socket = tmp_path_factory.mktemp("xds") / "ads.sock"
    with running_control_plane(consul.http_addr, pki_dir=pki, xds_socket=ads_socket) as plane:
        yield plane


@pytest.fixture(scope="module")
def sds_envoy(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    with Envoy(tmp_path_factory.mktemp("sds-envoy"), plane.socket, SDS_BOOTSTRAP) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def operator(pki: Path) -> CredentialFiles:
    """The operator's files the control plane wrote at start."""
    return CredentialFiles(
        cert=pki / "operator.pem", key=pki / "operator-key.pem", ca=pki / "ca.pem"
    )


def test_listener_serves_the_certificate_the_control_plane_issued(
    plane: ControlPlane, sds_envoy: Envoy, operator: CredentialFiles
) -> None:
    assert plane.identity is not None
    served = connect(sds_envoy.listener_port, operator, operator.ca)
    assert served.serial == serial(plane.identity.current.cert_pem)
    assert served.uris == ["spiffe://airline.local/svc/edge"]
    assert served.answer.startswith(b"HTTP/1.1 200")


def test_client_without_a_certificate_gets_no_answer(
    sds_envoy: Envoy, operator: CredentialFiles
) -> None:
    """The CA bundle arrived too: the listener demands a client certificate."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect(sds_envoy.listener_port, None, operator.ca)


def test_client_with_a_certificate_of_another_ca_gets_no_answer(
    sds_envoy: Envoy, operator: CredentialFiles, tmp_path: Path
) -> None:
    stranger = write_credentials(MeshCA.create().issue("operator"), tmp_path / "stranger")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect(sds_envoy.listener_port, stranger, operator.ca)


def test_renewed_certificate_is_served_without_restarting_envoy(
    plane: ControlPlane, sds_envoy: Envoy, operator: CredentialFiles
) -> None:
    assert plane.identity is not None
    before = connect(sds_envoy.listener_port, operator, operator.ca).serial
    pid = sds_envoy.process.pid

    plane.renew_identity()
    renewed = serial(plane.identity.current.cert_pem)
    assert renewed != before
    wait_for(
        lambda: connect(sds_envoy.listener_port, operator, operator.ca).serial == renewed,
        "envoy to serve the renewed certificate",
    )
    assert sds_envoy.process.poll() is None
    assert sds_envoy.process.pid == pid

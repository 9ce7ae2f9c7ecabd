"""A workload's own certificate from the mesh CA, with no shared file: the key is made
in memory at start, only its public half goes to the control plane's CA endpoint
(over TLS, trusted through MESH_CA_FILE), and the caller proves its name with its
Consul ACL token. Renewed at the time the CA names (two thirds of the life).

`WorkloadIdentity` is a `CredentialSource` (identity.py): servers and channels built
on it pick up each renewal by themselves. The certificate it holds is a chain (its own,
then its host's intermediate CA); what it trusts is the root bundle the CA sent with it,
which is also what it trusts the CA endpoint by from then on, so a root rotation
(docs/trust.md) reaches every workload with its next certificate.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airline.mesh.v1 import certificate_pb2, certificate_pb2_grpc
from services.runtime.identity import Credentials, IdentityError

log = logging.getLogger(__name__)

MIN_RENEW_WAIT_SECONDS = 1.0
TOKEN_METADATA = "x-consul-token"  # noqa: S105 - a metadata key, not a secret
# Codes worth asking again for: the control plane is starting or restarting.
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class CertificateError(RuntimeError):
    """The CA refused us, or never answered in time."""


@dataclass(frozen=True)
class CaEndpoint:
    """Where the mesh CA signs, the bundle to trust it by, and the token we prove our name with."""

    addr: str
    ca_pem: bytes
    token: str = field(repr=False)


@dataclass(frozen=True)
class _Current:
    serial: int
    credentials: Credentials
    renew_at: datetime.datetime
    expires_at: datetime.datetime


class WorkloadIdentity:
    """This process's certificate: fetched at `start()`, renewed in the background."""

    def __init__(
        self,
        endpoint: CaEndpoint,
        ip_addresses: Iterable[str] = (),
        *,
        call_timeout: float = 5.0,
        start_timeout: float = 120.0,
    ) -> None:
        self._endpoint = endpoint
        # MESH_CA_FILE's bundle at first, then the one each certificate came with.
        self._trust = endpoint.ca_pem
        self._ips = tuple(ip_addresses)
        self._call_timeout = call_timeout
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._current: _Current | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="cert-renew", daemon=True)

    def start(self) -> None:
        """Gets the first certificate (waiting, bounded, for the CA to come up); renews after."""
        deadline = time.monotonic() + self._start_timeout
        pause = 0.2
        while True:
            try:
                self._install(self._fetch())
                break
            except CertificateError as exc:
                if time.monotonic() + pause > deadline or not _transient(exc):
                    raise
                log.warning("mesh CA not ready", extra={"error": str(exc)})
                self._stop.wait(pause)
                pause = min(pause * 2, 3.0)
        self._renewer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join(2.0)

    # CredentialSource
    def version(self) -> object:
        return self._now().serial

    def credentials(self) -> Credentials:
        return self._now().credentials

    def _now(self) -> _Current:
        with self._lock:
            if self._current is None:
                raise IdentityError("no certificate yet")
            return self._current

    def _install(self, current: _Current) -> None:
        with self._lock:
            self._current = current
            if current.credentials.ca:
                self._trust = current.credentials.ca
        log.info(
            "certificate issued",
            extra={"serial": current.serial, "renew_at": current.renew_at.isoformat()},
        )

    def _renew_loop(self) -> None:
        while True:
            current = self._now()
            wait = (current.renew_at - _utcnow()).total_seconds()
            # Never a tight loop, whatever time the CA named.
            if self._stop.wait(max(wait, MIN_RENEW_WAIT_SECONDS)):
                return
            try:
                self._install(self._fetch())
            except CertificateError as exc:
                # Keep the one we have; try again at a tenth of what is left of its life.
                left = (current.expires_at - _utcnow()).total_seconds()
                log.error("certificate renewal failed", extra={"error": str(exc)})
                if self._stop.wait(min(max(left / 10, 0.5), 30.0)):
                    return

    def _fetch(self) -> _Current:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload")]))
            .sign(key, hashes.SHA256())
        )
        request = certificate_pb2.SignCertificateRequest(
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
            ip_addresses=list(self._ips),
        )
        with self._lock:
            trust = self._trust
        creds = grpc.ssl_channel_credentials(root_certificates=trust)
        try:
            with grpc.secure_channel(self._endpoint.addr, creds) as channel:
                stub = certificate_pb2_grpc.CertificateServiceStub(channel)
                response = stub.SignCertificate(
                    request,
                    timeout=self._call_timeout,
                    metadata=((TOKEN_METADATA, self._endpoint.token),),
                )
        except grpc.RpcError as err:
            raise CertificateError(f"{err.code().name}: {err.details()}") from None
        cert_pem = response.certificate_chain_pem.encode()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return _Current(
            serial=cert.serial_number,
            credentials=Credentials(cert_pem, key_pem, response.ca_pem.encode()),
            renew_at=response.renew_time.ToDatetime(datetime.UTC),
            expires_at=response.expire_time.ToDatetime(datetime.UTC),
        )


def _transient(exc: CertificateError) -> bool:
    return any(str(exc).startswith(code.name) for code in _TRANSIENT)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

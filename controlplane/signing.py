"""The mesh CA's signing endpoint (`airline.mesh.v1.CertificateService`).

A workload sends a CSR and its Consul ACL token; Consul says which service the token
belongs to (`GET /v1/acl/token/self`: its one service identity), and that name, never
anything in the CSR, becomes the certificate's SPIFFE id. The token is the same
credential that lets the workload register that name in Consul, so a process can get a
certificate for exactly the name it may register, and for no other.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import grpc
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import timestamp_pb2

from airline.mesh.v1 import certificate_pb2, certificate_pb2_grpc
from controlplane.ca import MeshCA, renew_time
from controlplane.rotation import HostAuthority
from services.runtime.identity import IdentityError, validate_workload_name
from services.runtime.limits import CSR_CHARS

log = logging.getLogger(__name__)

TOKEN_METADATA = "x-consul-token"  # noqa: S105 - a metadata key, not a secret


class Refused(Exception):
    """A request we answer with `code` and a message that quotes nothing it sent."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConsulTokens:
    """Asks Consul which service a token may act as."""

    def __init__(self, consul_addr: str, timeout: float = 3.0) -> None:
        self._http = httpx.Client(base_url=f"http://{consul_addr}", timeout=timeout)

    def service_of(self, token: str) -> str:
        try:
            response = self._http.get("/v1/acl/token/self", headers={"X-Consul-Token": token})
        except httpx.HTTPError as exc:
            log.warning("consul unreachable for a token check", extra={"error": type(exc).__name__})
            raise Refused(grpc.StatusCode.UNAVAILABLE, "cannot check the token now") from None
        if response.status_code == httpx.codes.FORBIDDEN:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if response.status_code != httpx.codes.OK:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "cannot check the token now")
        return _one_service(response.json())

    def close(self) -> None:
        self._http.close()


def _one_service(token: Any) -> str:
    identities = (token.get("ServiceIdentities") or []) if isinstance(token, dict) else []
    names = [i.get("ServiceName") for i in identities if isinstance(i, dict)]
    if len(names) != 1 or not isinstance(names[0], str):
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, "the token names no single service")
    try:
        return validate_workload_name(names[0])
    except IdentityError:
        message = "the token's service is no workload name"
        raise Refused(grpc.StatusCode.PERMISSION_DENIED, message) from None


class CertificateServicer(certificate_pb2_grpc.CertificateServiceServicer):
    """Signs CSRs for the service the caller's token names."""

    def __init__(
        self,
        ca: MeshCA | HostAuthority,
        service_of: Callable[[str], str],
        lifetime: datetime.timedelta,
    ) -> None:
        self._ca = ca
        self._service_of = service_of
        self._lifetime = lifetime

    def SignCertificate(
        self, request: certificate_pb2.SignCertificateRequest, context: grpc.ServicerContext
    ) -> certificate_pb2.SignCertificateResponse:
        try:
            return self._sign(request, _token(context))
        except Refused as refused:
            log.warning("certificate refused", extra={"code": refused.code.name})
            context.abort(refused.code, str(refused))

    def _sign(
        self, request: certificate_pb2.SignCertificateRequest, token: str
    ) -> certificate_pb2.SignCertificateResponse:
        key = _public_key(request.csr_pem)
        ips = [_ip(raw) for raw in request.ip_addresses]
        name = self._service_of(token)
        ca = self._ca.current  # One intermediate for the certificate, its chain and bundle.
        cert = ca.sign(name, key, ip_addresses=ips, lifetime=self._lifetime)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        log.info("certificate issued", extra={"workload": name, "not_after": end.isoformat()})
        renew, expire = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        renew.FromDatetime(renew_time(start, end))
        expire.FromDatetime(end)
        return certificate_pb2.SignCertificateResponse(
            # The leaf, then the intermediate: peers trust the root bundle only.
            certificate_chain_pem=(
                cert.public_bytes(serialization.Encoding.PEM) + ca.chain_pem
            ).decode(),
            ca_pem=ca.bundle_pem.decode(),
            renew_time=renew,
            expire_time=expire,
        )


def _token(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == TOKEN_METADATA and isinstance(value, str) and value:
            return value
    raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"{TOKEN_METADATA} metadata is required")


def _public_key(csr_pem: str) -> ec.EllipticCurvePublicKey:
    if not csr_pem or len(csr_pem) > CSR_CHARS:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem must be a PEM CSR")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem must be a PEM CSR") from None
    key = csr.public_key()
    if not csr.is_signature_valid or not isinstance(key, ec.EllipticCurvePublicKey):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem must be a signed P-256 CSR")
    if not isinstance(key.curve, ec.SECP256R1):
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "csr_pem must be a signed P-256 CSR")
    return key


def _ip(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        message = "ip_addresses must be IP addresses"
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, message) from None

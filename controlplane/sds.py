"""Envoy's own identity as SDS secrets, served over the same ADS stream as CDS and EDS.

Two secrets: `mesh-identity` (Envoy's certificate chain, leaf then its host's
intermediate, and key, a `tls_certificate`) and `mesh-ca` (the root bundle, a
`validation_context`). A listener or cluster names
them with `sds_config: {ads: {}}`; a renewal is a new snapshot, and Envoy uses the new
certificate for new connections with no restart.

`EnvoyIdentity` holds the current certificate and says when it is due; building the
secrets is pure. The key is made here, kept in memory only, and reaches Envoy over the
ADS stream, which is as sensitive as the key itself: hence a Unix socket only its owner
may open (ads.py's `XdsServer`), never a TCP port any local process could dial.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane.ca import DEFAULT_WORKLOAD_LIFETIME, IssuedCertificate, MeshCA
from controlplane.resources import CA_SECRET, IDENTITY_SECRET, SECRET_TYPE
from controlplane.rotation import HostAuthority

__all__ = ["CA_SECRET", "IDENTITY_SECRET", "SECRET_TYPE", "EnvoyIdentity", "make_secrets"]


def make_certificate_secret(
    issued: IssuedCertificate, name: str = IDENTITY_SECRET
) -> secret_pb2.Secret:
    """Envoy's certificate chain and private key, inline."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=issued.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=issued.key_pem),
        ),
    )


def make_validation_secret(ca_pem: bytes, name: str = CA_SECRET) -> secret_pb2.Secret:
    """The CA bundle peers' certificates must chain to.

    No SAN matcher here: which identity a peer must have depends on where the secret
    is used (any mesh identity on the mesh listener, RBAC decides; exactly the
    cluster's service upstream), so that belongs to the listener or cluster, in a
    `combined_validation_context`.
    """
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=ca_pem)
        ),
    )


def make_secrets(issued: IssuedCertificate) -> list[secret_pb2.Secret]:
    """Both secrets for one issued certificate."""
    return [make_certificate_secret(issued), make_validation_secret(issued.ca_pem)]


class EnvoyIdentity:
    """The certificate the control plane keeps for its Envoys, renewed when due."""

    def __init__(
        self,
        ca: MeshCA | HostAuthority,
        name: str = "edge",
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        lifetime: datetime.timedelta = DEFAULT_WORKLOAD_LIFETIME,
    ) -> None:
        self._ca = ca
        self._name = name
        self._dns_names = tuple(dns_names)
        self._ip_addresses = tuple(ip_addresses)
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._current = self._issue()

    def _issue(self) -> IssuedCertificate:
        return self._ca.current.issue(
            self._name,
            dns_names=self._dns_names,
            ip_addresses=self._ip_addresses,
            lifetime=self._lifetime,
        )

    @property
    def current(self) -> IssuedCertificate:
        with self._lock:
            return self._current

    def renew(self) -> IssuedCertificate:
        """A new key and certificate, from now on the current ones."""
        issued = self._issue()
        with self._lock:
            self._current = issued
        return issued

    def secrets(self) -> list[secret_pb2.Secret]:
        return make_secrets(self.current)

"""The running control plane: an ADS server fed by a Consul watcher and, when the mesh
has a CA, Envoy's identity (SDS) and the CA's signing endpoint for the services, each
certificate renewed before it expires. It signs with this host's intermediate CA,
renewed (or reloaded, and the root bundle with it) by `rotation.HostAuthority`."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path

import grpc

from airline.mesh.v1 import certificate_pb2_grpc
from controlplane.ads import XdsServer
from controlplane.ca import MeshCA, write_operator_credentials
from controlplane.config import ControlPlaneConfig
from controlplane.consul import ConsulWatcher, Instances
from controlplane.resources import make_snapshot
from controlplane.rotation import HostAuthority
from controlplane.sds import EnvoyIdentity
from controlplane.signing import CertificateServicer, ConsulTokens
from controlplane.store import SnapshotStore
from services.runtime.identity import Credentials, ReloadingServerCredentials

log = logging.getLogger("controlplane")


class ControlPlane:
    """Every view of Consul becomes a snapshot; every snapshot goes to every Envoy."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.store = SnapshotStore()
        self.server = XdsServer(self.store, config.xds_socket)
        self.watcher = ConsulWatcher(config, self._publish)
        ca = _mesh_ca(config)
        self.authority = ca
        self.identity = _envoy_identity(config, ca)
        self._lock = threading.Lock()
        self._view: Mapping[str, Instances] | None = None
        self._stop = threading.Event()
        self._renewers: list[threading.Thread] = []
        if self.identity is not None:
            self._renewers.append(self._renewer(self.identity, self._push, "renew-envoy"))
        self.signing = _signing_server(config, ca) if ca is not None and config.ca_addr else None
        if self.signing is not None:
            self._renewers.append(self._renewer(self.signing.identity, lambda: None, "renew-ca"))
        if ca is not None:
            self._renewers.append(threading.Thread(target=self._watch_ca, name="ca", daemon=True))

    @property
    def socket(self) -> Path:
        """ADS's Unix socket, where Envoy connects (its bootstrap's `pipe`)."""
        return self.server.socket

    def start(self) -> None:
        if self.config.ignored:
            log.warning(
                "ignored settings: ADS is served on XDS_SOCKET only (docs/trust.md)",
                extra={"ignored": list(self.config.ignored)},
            )
        self.server.start()
        if self.signing is not None:
            self.signing.start()
        self.watcher.start()
        for renewer in self._renewers:
            renewer.start()
        log.info(
            "serving",
            extra={
                "xds_socket": str(self.socket),
                "consul": self.config.consul_addr,
                "sds": self.identity is not None,
                "ca_addr": self.config.ca_addr if self.signing is not None else None,
            },
        )

    def stop(self, watcher_timeout: float = 1.0) -> None:
        """Stops watching Consul, then closes the streams after the grace period."""
        log.info("stopping", extra={"grace_seconds": self.config.grace_seconds})
        self._stop.set()
        self.watcher.stop(watcher_timeout)
        for renewer in self._renewers:
            if renewer.is_alive():
                renewer.join(watcher_timeout)
        if self.signing is not None:
            self.signing.stop(self.config.grace_seconds)
        self.server.stop(self.config.grace_seconds)
        log.info("stopped")

    def renew_identity(self) -> None:
        """Issues Envoy a new certificate now and pushes it (SDS)."""
        if self.identity is None:
            raise RuntimeError("no mesh CA configured (MESH_PKI_DIR)")
        issued = self.identity.renew()
        log.info("envoy certificate renewed", extra={"not_after": issued.not_after.isoformat()})
        self._push()

    def _renewer(
        self, identity: EnvoyIdentity, then: Callable[[], None], name: str
    ) -> threading.Thread:
        """A thread renewing `identity` when due, calling `then` after each renewal."""

        def run() -> None:
            while True:
                due = identity.current.renew_at - datetime.datetime.now(datetime.UTC)
                if self._stop.wait(max(due.total_seconds(), 1.0)):  # never a tight loop
                    return
                issued = identity.renew()
                log.info(
                    "certificate renewed",
                    extra={"identity": name, "not_after": issued.not_after.isoformat()},
                )
                then()

        return threading.Thread(target=run, name=name, daemon=True)

    def _watch_ca(self) -> None:
        """Every second: a renewed intermediate or a new root bundle is used at once,
        for Envoy's certificate and bundle (SDS), the CA endpoint's and the operator's."""
        assert self.authority is not None
        while not self._stop.wait(CA_POLL_SECONDS):
            if not self.authority.refresh():
                continue
            _write_operator(self.config, self.authority)
            if self.signing is not None:
                self.signing.identity.renew()
            if self.identity is not None:
                self.renew_identity()

    def _publish(self, view: Mapping[str, Instances]) -> None:
        with self._lock:
            self._view = view
        self._push()
        self.server.mark_serving()

    def _push(self) -> None:
        """A snapshot of the latest view and the current secrets, once Consul was seen."""
        with self._lock:
            if self._view is None:
                return
            secrets = self.identity.secrets() if self.identity is not None else None
            self.store.set(make_snapshot(self._view, self.config.policy, secrets))


def _mesh_ca(config: ControlPlaneConfig) -> HostAuthority | None:
    """This host's intermediate CA (and the root, created on first start where it is
    kept), when configured.

    The operator's credentials are written beside the CA at every start and whenever
    the CA changes, so `var/pki/operator.pem` is always a fresh one and `ca.pem` the
    current root bundle.
    """
    if config.pki_dir is None:
        return None
    lifetime = datetime.timedelta(seconds=config.intermediate_lifetime_seconds)
    ca = HostAuthority(config.pki_dir / "ca", lifetime=lifetime)
    _write_operator(config, ca)
    return ca


def _write_operator(config: ControlPlaneConfig, ca: HostAuthority) -> None:
    assert config.pki_dir is not None
    lifetime = datetime.timedelta(seconds=config.cert_lifetime_seconds)
    write_operator_credentials(ca.current, config.pki_dir, max(lifetime, OPERATOR_LIFETIME))


# How often the CA folder is looked at: a new bundle reaches Envoy within a second or so.
CA_POLL_SECONDS = 1.0


# The operator's files are not renewed while the mesh runs: they live a day at least.
OPERATOR_LIFETIME = datetime.timedelta(hours=24)


def _envoy_identity(config: ControlPlaneConfig, ca: HostAuthority | None) -> EnvoyIdentity | None:
    """Envoy's certificate, when the mesh has a CA."""
    if ca is None:
        return None
    lifetime = datetime.timedelta(seconds=config.cert_lifetime_seconds)
    return EnvoyIdentity(
        ca,
        config.envoy_identity,
        dns_names=config.envoy_dns,
        ip_addresses=config.envoy_ips,
        lifetime=lifetime,
    )


class _IssuedSource:
    """An `EnvoyIdentity`'s current certificate as a `CredentialSource`."""

    def __init__(self, identity: EnvoyIdentity) -> None:
        self._identity = identity

    def version(self) -> object:
        return self._identity.current.not_before, self._identity.current.cert_pem

    def credentials(self) -> Credentials:
        issued = self._identity.current
        return Credentials(issued.cert_pem, issued.key_pem, issued.ca_pem)


class SigningServer:
    """`CertificateService` on its own TLS address, with the control plane's own certificate.

    No client certificate is asked for: a workload comes here before it has one,
    and proves its name with its Consul token instead.
    """

    def __init__(self, config: ControlPlaneConfig, ca: MeshCA | HostAuthority) -> None:
        host = config.ca_addr.rpartition(":")[0].strip("[]")
        self.identity = EnvoyIdentity(
            ca,
            "controlplane",
            dns_names=("localhost",),
            ip_addresses=sorted({"127.0.0.1", host} - {"", "0.0.0.0", "::"}),
            lifetime=datetime.timedelta(seconds=config.cert_lifetime_seconds),
        )
        self.tokens = ConsulTokens(config.consul_addr)
        pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ca")
        self.server = grpc.server(pool)
        servicer = CertificateServicer(
            ca, self.tokens.service_of, datetime.timedelta(seconds=config.cert_lifetime_seconds)
        )
        certificate_pb2_grpc.add_CertificateServiceServicer_to_server(servicer, self.server)
        creds = ReloadingServerCredentials(_IssuedSource(self.identity), require_client_auth=False)
        bind = config.ca_bind_addr or config.ca_addr
        self.port = self.server.add_secure_port(bind, creds.credentials)
        if self.port == 0:
            raise OSError(f"cannot bind the CA endpoint at {bind}")

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float) -> None:
        self.server.stop(grace).wait()
        self.tokens.close()


def _signing_server(config: ControlPlaneConfig, ca: HostAuthority) -> SigningServer:
    return SigningServer(config, ca)

"""The running control plane: an ADS server fed by a Consul watcher and, when the mesh
has a CA, Envoy's identity (SDS), renewed before it expires."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping

from controlplane.ads import XdsServer
from controlplane.ca import MeshCA, write_operator_credentials
from controlplane.config import ControlPlaneConfig
from controlplane.consul import ConsulWatcher, Instances
from controlplane.resources import make_snapshot
from controlplane.sds import EnvoyIdentity
from controlplane.store import SnapshotStore

log = logging.getLogger("controlplane")


class ControlPlane:
    """Every view of Consul becomes a snapshot; every snapshot goes to every Envoy."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.store = SnapshotStore()
        self.server = XdsServer(self.store, config.xds_host, config.xds_port)
        self.watcher = ConsulWatcher(config, self._publish)
        self.identity = _envoy_identity(config)
        self._lock = threading.Lock()
        self._view: Mapping[str, Instances] | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_when_due, name="renew", daemon=True)

    @property
    def port(self) -> int:
        """The bound ADS port (the configured one, or the one picked for port 0)."""
        return self.server.port

    def start(self) -> None:
        self.server.start()
        self.watcher.start()
        if self.identity is not None:
            self._renewer.start()
        log.info(
            "serving",
            extra={
                "xds_addr": f"{self.config.xds_host}:{self.port}",
                "consul": self.config.consul_addr,
                "sds": self.identity is not None,
            },
        )

    def stop(self, watcher_timeout: float = 1.0) -> None:
        """Stops watching Consul, then closes the streams after the grace period."""
        log.info("stopping", extra={"grace_seconds": self.config.grace_seconds})
        self._stop.set()
        self.watcher.stop(watcher_timeout)
        if self._renewer.is_alive():
            self._renewer.join(watcher_timeout)
        self.server.stop(self.config.grace_seconds)
        log.info("stopped")

    def renew_identity(self) -> None:
        """Issues Envoy a new certificate now and pushes it (SDS)."""
        if self.identity is None:
            raise RuntimeError("no mesh CA configured (MESH_PKI_DIR)")
        issued = self.identity.renew()
        log.info("envoy certificate renewed", extra={"not_after": issued.not_after.isoformat()})
        self._push()

    def _renew_when_due(self) -> None:
        assert self.identity is not None  # Started only with an identity.
        while True:
            due = self.identity.current.renew_at - datetime.datetime.now(datetime.UTC)
            if self._stop.wait(max(due.total_seconds(), 0.0)):
                return
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


def _envoy_identity(config: ControlPlaneConfig) -> EnvoyIdentity | None:
    """The mesh CA (created on first start) and Envoy's certificate, when configured.

    The operator's credentials are written beside the CA at every start, so
    `var/pki/operator.pem` is always a fresh one.
    """
    if config.pki_dir is None:
        return None
    ca = MeshCA.load_or_create(config.pki_dir / "ca")
    lifetime = datetime.timedelta(seconds=config.cert_lifetime_seconds)
    write_operator_credentials(ca, config.pki_dir, lifetime)
    return EnvoyIdentity(
        ca,
        config.envoy_identity,
        dns_names=config.envoy_dns,
        ip_addresses=config.envoy_ips,
        lifetime=lifetime,
    )

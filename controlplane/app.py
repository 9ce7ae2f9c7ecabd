"""The running control plane: an ADS server fed by a Consul watcher."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from controlplane.ads import XdsServer
from controlplane.config import ControlPlaneConfig
from controlplane.consul import ConsulWatcher, Instances
from controlplane.resources import make_snapshot
from controlplane.store import SnapshotStore

log = logging.getLogger("controlplane")


class ControlPlane:
    """Every view of Consul becomes a snapshot; every snapshot goes to every Envoy."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.store = SnapshotStore()
        self.server = XdsServer(self.store, config.xds_host, config.xds_port)
        self.watcher = ConsulWatcher(config, self._publish)

    @property
    def port(self) -> int:
        """The bound ADS port (the configured one, or the one picked for port 0)."""
        return self.server.port

    def start(self) -> None:
        self.server.start()
        self.watcher.start()
        log.info(
            "serving",
            extra={
                "xds_addr": f"{self.config.xds_host}:{self.port}",
                "consul": self.config.consul_addr,
            },
        )

    def stop(self, watcher_timeout: float = 1.0) -> None:
        """Stops watching Consul, then closes the streams after the grace period."""
        log.info("stopping", extra={"grace_seconds": self.config.grace_seconds})
        self.watcher.stop(watcher_timeout)
        self.server.stop(self.config.grace_seconds)
        log.info("stopped")

    def _publish(self, view: Mapping[str, Instances]) -> None:
        self.store.set(make_snapshot(view, self.config.policy))
        self.server.mark_serving()

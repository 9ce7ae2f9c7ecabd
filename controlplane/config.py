"""The control plane's configuration, read from the environment once at start.

| variable | default | what |
|---|---|---|
| `CONSUL_HTTP_ADDR` | `127.0.0.1:8500` | Consul agent's HTTP API (`http://` prefix allowed) |
| `XDS_HOST` / `XDS_PORT` | `127.0.0.1` / `18000` | where Envoy's ADS stream connects (`0`: any) |
| `CONSUL_WAIT_SECONDS` | `30` | how long one blocking query may wait for a change |
| `CONTROLPLANE_EXCLUDE` | `consul` | services in the catalog never turned into clusters |
| `CONTROLPLANE_SERVICES` | (none) | services that always get a cluster, even with no instance |
| `LOG_LEVEL` | `INFO` | |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from controlplane.resources import DEFAULT_POLICY, ClusterPolicy
from services.runtime.config import ConfigError, env_float, env_int, env_str

__all__ = ["ConfigError", "ControlPlaneConfig"]


def _names(raw: str) -> frozenset[str]:
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Where Consul is, where Envoy connects, and how patiently we watch."""

    consul_addr: str = "127.0.0.1:8500"
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    wait_seconds: float = 30.0
    # Every Consul call has a timeout: connecting must be quick even when a blocking
    # read may legitimately take `wait_seconds` plus Consul's jitter (wait / 16).
    connect_timeout_seconds: float = 2.0
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 5.0
    exclude: frozenset[str] = frozenset({"consul"})
    required: frozenset[str] = frozenset()
    grace_seconds: float = 2.0
    # After an outage a restarted agent re-syncs its services into a catalog that
    # starts empty; the last view stands until then (real removals wait this long).
    recovery_settle_seconds: float = 5.0
    log_level: str = "INFO"
    policy: ClusterPolicy = field(default=DEFAULT_POLICY)

    @property
    def read_timeout_seconds(self) -> float:
        return self.wait_seconds * 17 / 16 + 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlPlaneConfig:
        env = os.environ if env is None else env
        consul_addr = env_str(env, "CONSUL_HTTP_ADDR", cls.consul_addr)
        wait = env_float(env, "CONSUL_WAIT_SECONDS", cls.wait_seconds)
        if not 1.0 <= wait <= 600.0:  # Consul caps a blocking query at 10 minutes.
            raise ConfigError(f"CONSUL_WAIT_SECONDS={wait} is not between 1 and 600")
        return cls(
            consul_addr=consul_addr.removeprefix("http://").rstrip("/"),
            xds_host=env_str(env, "XDS_HOST", cls.xds_host),
            xds_port=env_int(env, "XDS_PORT", cls.xds_port),
            wait_seconds=wait,
            exclude=_names(env_str(env, "CONTROLPLANE_EXCLUDE", "consul")),
            required=_names(env.get("CONTROLPLANE_SERVICES", "")),
            log_level=env_str(env, "LOG_LEVEL", cls.log_level).upper(),
            recovery_settle_seconds=env_float(
                env, "CONSUL_RECOVERY_SETTLE_SECONDS", cls.recovery_settle_seconds
            ),
        )

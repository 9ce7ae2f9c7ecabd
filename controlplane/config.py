"""The control plane's configuration, read from the environment once at start.

| variable | default | what |
|---|---|---|
| `CONSUL_HTTP_ADDRS` | `CONSUL_HTTP_ADDR` | agents to watch, local first; one down: the next |
| `CONSUL_HTTP_ADDR` | `127.0.0.1:8500` | the local agent's plain HTTP API (`http://` allowed) |
| `CONSUL_CACERT` | (none) | for `https://` agents: the mesh CA their certificates chain to |
| `CONSUL_CLIENT_CERT` | (none) | for `https://` agents: the client certificate they ask for |
| `CONSUL_CLIENT_KEY` | (none) | its key: refused unless only its owner may read it (0600) |
| `XDS_SOCKET` | `$MESH_VAR_DIR/xds/ads.sock` | ADS's Unix socket, 0600 in a 0700 folder |
| `MESH_VAR_DIR` | `var` | the state folder, for XDS_SOCKET's default |
| `MESH_CA_BIND_ADDR` | `MESH_CA_ADDR` | CA endpoint's bind address, apart from the dialed one |
| `CONSUL_WAIT_SECONDS` | `30` | how long one blocking query may wait for a change |
| `CONTROLPLANE_EXCLUDE` | `consul` | services in the catalog never turned into clusters |
| `CONTROLPLANE_SERVICES` | (none) | services that always get a cluster, even with no instance |
| `MESH_PKI_DIR` | (none) | CA in `<dir>/ca`, operator files in `<dir>`, SDS on; unset: none |
| `ENVOY_IDENTITY` | `edge` | the workload name in Envoy's certificate (SDS) |
| `ENVOY_IDENTITY_IPS` | `127.0.0.1` | IP SANs: the addresses services dial Envoy at |
| `ENVOY_IDENTITY_DNS` | `localhost` | DNS SANs, likewise |
| `UPSTREAM_MTLS` | `0` | `1`: clusters speak mTLS to instances, checking their SPIFFE id |
| `WORKLOAD_CERT_HOURS` | `24` | life of the certificates it issues; renewed at two thirds |
| `CERT_LIFETIME_SECONDS` | (none) | the same in seconds (at least 10), for tests; wins |
| `INTERMEDIATE_LIFETIME_SECONDS` | `604800` | its intermediate CA's life (7 days, at least 30) |
| `MESH_CA_ADDR` | (none) | where it serves `CertificateService` over TLS (needs `MESH_PKI_DIR`) |
| `CONSUL_HTTP_TOKEN_FILE` | (none) | its Consul ACL token (read-only), read once at start |
| `LOG_LEVEL` | `INFO` | |

ADS carries Envoy's private key (SDS), so it is served on a Unix socket only, as
Istio's agent serves its Envoy: the socket file's permissions decide who may connect,
where any local process could reach a TCP port. There is no TCP option
(`XDS_HOST`/`XDS_PORT` are gone: set, they are ignored and the start is logged with a
warning naming them): Envoy runs next to its control plane on every host.

Consul's API carries the control plane's ACL token: the local agent is read over plain
HTTP on loopback, any other over HTTPS only (Consul's own variable names, as its CLI
reads them). Under `make hosts-up` the client certificate is the host's Consul agent's
(`consul-health`, docs/deploy.md: why that one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.resources import DEFAULT_POLICY, ClusterPolicy
from services.runtime.config import ConfigError, consul_token, env_float, env_str

__all__ = ["ConfigError", "ControlPlaneConfig", "xds_socket"]

ROOT = Path(__file__).resolve().parents[1]
# Settings of earlier versions that nothing reads any more (ADS over TCP).
OBSOLETE = ("XDS_HOST", "XDS_PORT")
# sockaddr_un's sun_path holds 108 bytes, the last a NUL: longer paths cannot be bound.
MAX_SOCKET_PATH_BYTES = 107


def xds_socket(env: Mapping[str, str]) -> Path:
    """XDS_SOCKET, else `$MESH_VAR_DIR/xds/ads.sock`: the control plane binds it, Envoy's
    bootstrap (envoy_bootstrap/render.py) names it, both from this one function."""
    var_dir = env_str(env, "MESH_VAR_DIR", str(ROOT / "var"))
    path = Path(env_str(env, "XDS_SOCKET", str(Path(var_dir) / "xds" / "ads.sock"))).resolve()
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            f"XDS_SOCKET {path} is longer than a Unix socket path may be "
            f"({MAX_SOCKET_PATH_BYTES} bytes): choose a shorter one"
        )
    return path


def _names(raw: str) -> frozenset[str]:
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _list(raw: str) -> tuple[str, ...]:
    return tuple(sorted(_names(raw)))


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Where Consul is, where Envoy connects, and how patiently we watch."""

    consul_addr: str = "127.0.0.1:8500"
    # Every agent the watcher may ask, `consul_addr` first; empty means just that one.
    consul_addrs: tuple[str, ...] = ()
    xds_socket: Path = ROOT / "var" / "xds" / "ads.sock"
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
    pki_dir: Path | None = None
    envoy_identity: str = "edge"
    envoy_ips: tuple[str, ...] = ("127.0.0.1",)
    envoy_dns: tuple[str, ...] = ("localhost",)
    cert_lifetime_seconds: float = 24 * 3600.0
    intermediate_lifetime_seconds: float = 7 * 24 * 3600.0
    ca_addr: str = ""
    # Where the CA endpoint binds; empty: `ca_addr` (which its certificate names).
    ca_bind_addr: str = ""
    consul_token: str = field(default="", repr=False)
    # For `https://` agents: the CA that signed theirs, and the client certificate.
    consul_ca_file: Path | None = None
    consul_cert_file: Path | None = None
    consul_key_file: Path | None = None
    # OBSOLETE settings found in the environment: warned about at start.
    ignored: tuple[str, ...] = ()

    @property
    def consul_agents(self) -> tuple[str, ...]:
        """The agents' base URLs, in order: `consul_addrs`, else `consul_addr` alone
        (`HOST:PORT` is plain HTTP)."""
        return tuple(_agent_url(addr) for addr in self.consul_addrs or (self.consul_addr,))

    @property
    def read_timeout_seconds(self) -> float:
        return self.wait_seconds * 17 / 16 + 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlPlaneConfig:
        env = os.environ if env is None else env
        local = env_str(env, "CONSUL_HTTP_ADDR", cls.consul_addr)
        addrs = _consul_addrs(env, local)
        wait = env_float(env, "CONSUL_WAIT_SECONDS", cls.wait_seconds)
        if not 1.0 <= wait <= 600.0:  # Consul caps a blocking query at 10 minutes.
            raise ConfigError(f"CONSUL_WAIT_SECONDS={wait} is not between 1 and 600")
        tls = _consul_tls(env, needed=any(a.startswith("https://") for a in addrs))
        return cls(
            consul_addr=_local_addr(local),
            consul_addrs=addrs,
            consul_ca_file=tls[0],
            consul_cert_file=tls[1],
            consul_key_file=tls[2],
            xds_socket=xds_socket(env),
            wait_seconds=wait,
            exclude=_names(env_str(env, "CONTROLPLANE_EXCLUDE", "consul")),
            required=_names(env.get("CONTROLPLANE_SERVICES", "")),
            log_level=env_str(env, "LOG_LEVEL", cls.log_level).upper(),
            recovery_settle_seconds=env_float(
                env, "CONSUL_RECOVERY_SETTLE_SECONDS", cls.recovery_settle_seconds
            ),
            pki_dir=Path(pki) if (pki := env.get("MESH_PKI_DIR", "").strip()) else None,
            envoy_identity=env_str(env, "ENVOY_IDENTITY", cls.envoy_identity),
            envoy_ips=_list(env_str(env, "ENVOY_IDENTITY_IPS", ",".join(cls.envoy_ips))),
            envoy_dns=_list(env_str(env, "ENVOY_IDENTITY_DNS", ",".join(cls.envoy_dns))),
            cert_lifetime_seconds=_lifetime_seconds(env),
            intermediate_lifetime_seconds=_intermediate_seconds(env),
            ca_addr=env_str(env, "MESH_CA_ADDR", ""),
            ca_bind_addr=env_str(env, "MESH_CA_BIND_ADDR", ""),
            consul_token=consul_token(env),
            policy=ClusterPolicy(upstream_tls=_flag(env, "UPSTREAM_MTLS")),
            ignored=tuple(name for name in OBSOLETE if env.get(name, "").strip()),
        )


def _agent_url(addr: str) -> str:
    """`http://HOST:PORT` or `https://HOST:PORT`; a bare `HOST:PORT` is plain HTTP."""
    addr = addr.strip().rstrip("/")
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


def _local_addr(raw: str) -> str:
    """CONSUL_HTTP_ADDR as HOST:PORT: the local agent, asked over plain HTTP only (the
    CA endpoint checks tokens with it too), so `https://` is refused here."""
    addr = raw.strip().rstrip("/")
    if addr.startswith("https://"):
        raise ConfigError(
            "CONSUL_HTTP_ADDR is the local agent's plain HTTP API on loopback; "
            "put HTTPS agents in CONSUL_HTTP_ADDRS"
        )
    return addr.removeprefix("http://")


def _consul_addrs(env: Mapping[str, str], single: str) -> tuple[str, ...]:
    """CONSUL_HTTP_ADDRS as base URLs in order, duplicates dropped; else
    CONSUL_HTTP_ADDR alone."""
    raw = env_str(env, "CONSUL_HTTP_ADDRS", single)
    unique = tuple(dict.fromkeys(_agent_url(a) for a in raw.split(",") if a.strip()))
    if not unique:
        raise ConfigError("CONSUL_HTTP_ADDRS names no address")
    return unique


def _consul_tls(env: Mapping[str, str], *, needed: bool) -> tuple[Path | None, ...]:
    """CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY: all three when an agent is
    asked over HTTPS, each an existing file, the key readable by its owner only."""
    names = ("CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY")
    paths = [Path(raw) if (raw := env.get(name, "").strip()) else None for name in names]
    if not needed:
        return tuple(paths)
    for name, path in zip(names, paths, strict=True):
        if path is None:
            raise ConfigError(f"CONSUL_HTTP_ADDRS has an https:// agent: set {name}")
        if not path.is_file():
            raise ConfigError(f"{name}: no such file")
    key = paths[2]
    if key is not None and key.stat().st_mode & 0o077:
        raise ConfigError("CONSUL_CLIENT_KEY may be readable by its owner only (chmod 600)")
    return tuple(paths)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in ("", "0", "1", "true", "false"):
        raise ConfigError(f"{name} must be 0 or 1")
    return raw in ("1", "true")


def _lifetime_seconds(env: Mapping[str, str]) -> float:
    seconds = env_float(env, "CERT_LIFETIME_SECONDS", 0.0)
    if seconds:
        if seconds < 10:
            raise ConfigError(f"CERT_LIFETIME_SECONDS={seconds} is below 10")
        return seconds
    return _lifetime_hours(env) * 3600.0


def _intermediate_seconds(env: Mapping[str, str]) -> float:
    seconds = env_float(env, "INTERMEDIATE_LIFETIME_SECONDS", 7 * 24 * 3600.0)
    if seconds < 30:
        raise ConfigError(f"INTERMEDIATE_LIFETIME_SECONDS={seconds} is below 30")
    return seconds


def _lifetime_hours(env: Mapping[str, str]) -> float:
    hours = env_float(env, "WORKLOAD_CERT_HOURS", 24.0)
    if not 0.1 <= hours <= 24 * 90:
        raise ConfigError(f"WORKLOAD_CERT_HOURS={hours} is not between 0.1 and 2160")
    return hours

"""Process configuration read from the environment once, at start, and passed down.

Every service process has a `ServerConfig`; services add their own frozen
dataclass beside it (database URL, addresses of the services they call).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MESH_ADDR_DEFAULT = "127.0.0.1:15001"


class ConfigError(ValueError):
    """An environment variable holds a value the process cannot start with."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value} is negative")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """How one service instance serves: ports, pools, shutdown and identity."""

    service_name: str
    # Where the server listens (may be a wildcard) and the address it registers in
    # Consul, others dial and its certificate names: apart, so that an instance can
    # bind 0.0.0.0 on a host and be reached at that host's address.
    host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    max_workers: int = 32
    max_concurrent_rpcs: int = 256
    cpu_slots: int = 2
    cpu_queue: int = 16
    # The longest CPU-heavy work (bcrypt) may wait for a slot before it is refused.
    cpu_max_wait_seconds: float = 0.5
    grace_seconds: float = 10.0
    drain_seconds: float = 0.0
    log_level: str = "INFO"
    # JSON lines to this file (owner-only, rotated past log_max_bytes) instead of stderr.
    log_file: str = ""
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 2
    version: str = "0.1.0"
    instance_id: str = ""
    consul_addr: str = ""
    check_interval_seconds: float = 2.0
    jwt_issuer: str = "airline-auth"
    jwt_audience: str = "airline-api"
    # Mutual TLS and per-method authorization: on when the mesh CA's address is set.
    mesh_ca_addr: str = ""
    mesh_ca_file: str = ""
    policy_file: str = "mesh/policy.toml"
    consul_token: str = field(default="", repr=False)
    # Standalone identity: certificate, key and CA bundle files (python -m controlplane.pki),
    # reloaded when they change. The other way to serve mutual TLS, without a mesh CA.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # Plaintext with no authorization: only when asked for by name (INSECURE_PLAINTEXT=1).
    insecure_plaintext: bool = False

    @property
    def mtls(self) -> bool:
        return bool(self.mesh_ca_addr)

    @property
    def tls_files(self) -> bool:
        return bool(self.tls_cert_file)

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        cpus = os.cpu_count() or 2
        consul_addr = env.get("CONSUL_HTTP_ADDR", "").strip()
        check_interval = env_float(env, "CHECK_INTERVAL_SECONDS", 2.0)
        # Registered instances wait for Consul's next check plus the control
        # plane's push before they stop taking calls.
        default_drain = check_interval + 1.0 if consul_addr else 0.0
        host = env_str(env, "GRPC_HOST", "127.0.0.1")
        return cls(
            service_name=service_name,
            host=host,
            advertise_host=advertise_host(env, host, registered=bool(consul_addr)),
            port=env_int(env, "GRPC_PORT", 0),
            metrics_port=env_int(env, "METRICS_PORT", 0),
            max_workers=env_int(env, "GRPC_MAX_WORKERS", 32, minimum=1),
            max_concurrent_rpcs=env_int(env, "GRPC_MAX_CONCURRENT_RPCS", 256, minimum=1),
            cpu_slots=env_int(env, "CPU_SLOTS", cpus, minimum=1),
            cpu_queue=env_int(env, "CPU_QUEUE", 16, minimum=0),
            cpu_max_wait_seconds=env_float(env, "CPU_MAX_WAIT_SECONDS", 0.5),
            grace_seconds=env_float(env, "SHUTDOWN_GRACE_SECONDS", 10.0),
            drain_seconds=env_float(env, "SHUTDOWN_DRAIN_SECONDS", default_drain),
            log_level=env_str(env, "LOG_LEVEL", "INFO").upper(),
            log_file=env_str(env, "LOG_FILE", ""),
            log_max_bytes=env_int(env, "LOG_MAX_BYTES", 20 * 1024 * 1024),
            log_backups=env_int(env, "LOG_BACKUPS", 2),
            version=env_str(env, "SERVICE_VERSION", "0.1.0"),
            instance_id=env_str(env, "INSTANCE_ID", ""),
            consul_addr=consul_addr,
            check_interval_seconds=check_interval,
            jwt_issuer=env_str(env, "JWT_ISSUER", "airline-auth"),
            jwt_audience=env_str(env, "JWT_AUDIENCE", "airline-api"),
            mesh_ca_addr=_mesh_ca_addr(env),
            mesh_ca_file=env_str(env, "MESH_CA_FILE", ""),
            policy_file=env_str(env, "MESH_POLICY_FILE", "mesh/policy.toml"),
            consul_token=consul_token(env),
            **_tls_files(env),
            insecure_plaintext=_flag(env, "INSECURE_PLAINTEXT"),
        )


def advertise_host(env: Mapping[str, str], host: str, *, registered: bool) -> str:
    """GRPC_ADVERTISE_HOST, else the bind address when that is one others can dial."""
    advertised = env_str(env, "GRPC_ADVERTISE_HOST", "")
    if advertised:
        return advertised
    if host in WILDCARDS and registered:
        # Consul would hand out 0.0.0.0, which reaches nobody's instance.
        raise ConfigError("GRPC_HOST is a wildcard: set GRPC_ADVERTISE_HOST to register")
    return host


WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})


def _tls_files(env: Mapping[str, str]) -> dict[str, str]:
    """TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE: all three or none, and not with MESH_CA_ADDR."""
    names = {"TLS_CERT_FILE": "tls_cert_file", "TLS_KEY_FILE": "tls_key_file"}
    names["TLS_CA_FILE"] = "tls_ca_file"
    given = {field: env_str(env, name, "") for name, field in names.items()}
    if not any(given.values()):
        return given
    if not all(given.values()):
        raise ConfigError("TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE go together: set all three")
    if env_str(env, "MESH_CA_ADDR", ""):
        raise ConfigError("set MESH_CA_ADDR or the TLS_*_FILE variables, not both")
    return given


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env_str(env, name, "0").lower()
    if raw not in {"0", "1", "true", "false"}:
        raise ConfigError(f"{name} must be 1 or 0")
    return raw in {"1", "true"}


def _mesh_ca_addr(env: Mapping[str, str]) -> str:
    addr = env_str(env, "MESH_CA_ADDR", "")
    if addr and not env_str(env, "MESH_CA_FILE", ""):
        raise ConfigError("MESH_CA_ADDR needs MESH_CA_FILE: the CA bundle to trust it by")
    return addr


def consul_token(env: Mapping[str, str]) -> str:
    """CONSUL_HTTP_TOKEN_FILE's token, else CONSUL_HTTP_TOKEN, else none (Consul's own names)."""
    path = env.get("CONSUL_HTTP_TOKEN_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"CONSUL_HTTP_TOKEN_FILE: {exc.strerror}") from None
    return env.get("CONSUL_HTTP_TOKEN", "").strip()


def database_url(env: Mapping[str, str], service_name: str) -> str:
    """DATABASE_URL, or a SQLite file of the service's own under ./var."""
    default = f"sqlite:///var/{service_name}.db"
    url = env_str(env, "DATABASE_URL", default)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        os.makedirs(os.path.dirname(url.removeprefix("sqlite:///")) or ".", exist_ok=True)
    return url


def upstream_addr(env: Mapping[str, str], name: str) -> str:
    """Address of another service: its own variable, else the mesh listener."""
    return env_str(env, name, env_str(env, "MESH_ADDR", MESH_ADDR_DEFAULT))

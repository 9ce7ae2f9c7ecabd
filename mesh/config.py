"""Where everything of one local mesh runs: ports, instance counts, the state folder.

Read from the environment once; every port can be moved so that two meshes (a
developer's and a test run's) never clash.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract import routes
from services.runtime.config import env_int, env_str

ROOT = Path(__file__).resolve().parents[1]

# The services come from the contracts (contract/routes.py's workloads); more than one
# instance of these, so that load balancing and failover are real.
MORE_INSTANCES = {"user-svc": 2, "booking-svc": 2}
DATABASES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Ports:
    edge: int = 8080
    edge_tls: int = 8443
    mesh: int = 15001
    # The control plane's CA endpoint (CertificateService over TLS): MESH_CA_ADDR.
    ca: int = 18001
    admin: int = 9901
    consul_http: int = 8500
    # Consul's HTTPS API: what other hosts' clients use (mesh/hosts.py); unused by `make up`.
    consul_https: int = 8501
    consul_dns: int = 8600
    consul_server: int = 8300
    consul_serf_lan: int = 8301
    consul_serf_wan: int = 8302
    # Global rate limits: Redis (loopback only) and the rate limit service, at
    # fixed ports because Envoy reaches the service through a static cluster.
    redis: int = 6380
    ratelimit: int = 18081
    # PostgreSQL, when MESH_DATABASE=postgres; not 5432, so a system server may run too.
    postgres: int = 15432

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        defaults = cls()
        return cls(
            **{
                name: env_int(env, f"{name.upper()}_PORT", getattr(defaults, name), minimum=1)
                for name in cls.__dataclass_fields__
            }
        )


@dataclass(frozen=True)
class MeshConfig:
    """One local mesh: its ports, its state folder and how many of each service."""

    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    # Where processes bind (MESH_HOST; may be a wildcard) and the address others dial,
    # that Consul registers and certificates name (MESH_ADVERTISE_HOST; defaults to
    # the bind address). `make up` keeps both on loopback; `make hosts-up` binds
    # services and listeners to 0.0.0.0 inside each host and advertises its address.
    host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    # Listeners for this host alone (Envoy's admin, the rate limit service Envoy asks):
    # never on the network, wherever the rest binds (MESH_LOCAL_HOST).
    local_host: str = "127.0.0.1"
    # More than one machine (mesh/hosts.py): this host's Consul node name, the servers'
    # addresses it joins (empty: one server alone, as `make up`), the agents the control
    # plane may ask (empty: the local one), and where PostgreSQL and Redis run (empty:
    # on this host).
    node_name: str = ""
    consul_server: bool = True
    consul_join: tuple[str, ...] = ()
    consul_addrs: tuple[str, ...] = ()
    postgres_host: str = ""
    redis_host: str = ""
    # Service (workload) name -> instances to run: every service of the contracts.
    instances: Mapping[str, int] = field(default_factory=dict)
    cors_origins: str = "http://localhost:3000"
    token_rate_limit: int = 10
    token_rate_window_seconds: int = 60
    service_env: Mapping[str, str] = field(default_factory=dict)
    # Life of workload certificates; short in tests to see them rotate.
    cert_lifetime_seconds: int = 24 * 3600
    edge_tls_cert_file: str = ""
    edge_tls_key_file: str = ""
    ratelimit_env: Mapping[str, str] = field(default_factory=dict)
    up_timeout_seconds: float = 180.0
    # "sqlite" (a file per service under var/db) or "postgres" (a local server).
    database: str = "sqlite"
    # The PostgreSQL cluster; apart from var/ so that, run as root, the server's own
    # user can reach it (MESH_PG_DIR), while the pgpass files stay in var/.
    pg_dir: Path = ROOT / "var" / "pg"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MeshConfig:
        env = os.environ if env is None else env
        defaults = cls(var_dir=ROOT / "var")
        var_dir = Path(env_str(env, "MESH_VAR_DIR", str(ROOT / "var"))).resolve()
        database = env_str(env, "MESH_DATABASE", defaults.database).lower()
        if database not in DATABASES:
            raise ValueError(f"MESH_DATABASE must be one of {', '.join(DATABASES)}")
        host = env_str(env, "MESH_HOST", defaults.host)
        return cls(
            var_dir=var_dir,
            ports=Ports.from_env(env),
            host=host,
            advertise_host=env_str(env, "MESH_ADVERTISE_HOST", host),
            local_host=env_str(env, "MESH_LOCAL_HOST", defaults.local_host),
            instances={
                name: env_int(
                    env,
                    f"{name.upper().replace('-', '_')}_INSTANCES",
                    MORE_INSTANCES.get(name, 1),
                    minimum=1,
                )
                for name in routes.load(ROOT / "generated" / "airline.pb").workloads
            },
            cors_origins=env_str(env, "CORS_ORIGINS", defaults.cors_origins),
            token_rate_limit=env_int(env, "TOKEN_RATE_LIMIT", defaults.token_rate_limit, minimum=1),
            token_rate_window_seconds=env_int(
                env, "TOKEN_RATE_WINDOW_SECONDS", defaults.token_rate_window_seconds, minimum=1
            ),
            database=database,
            pg_dir=Path(env_str(env, "MESH_PG_DIR", str(var_dir / "pg"))).resolve(),
            # Passed through to every service instance (e.g. BCRYPT_COST in tests).
            service_env={k: v for k, v in env.items() if k in _SERVICE_KEYS},
            cert_lifetime_seconds=env_int(
                env, "CERT_LIFETIME_SECONDS", defaults.cert_lifetime_seconds, minimum=10
            ),
            edge_tls_cert_file=env_str(env, "EDGE_TLS_CERT_FILE", ""),
            edge_tls_key_file=env_str(env, "EDGE_TLS_KEY_FILE", ""),
            # The rate limit service's overrides of ratelimit/limits.toml.
            ratelimit_env={k: v for k, v in env.items() if k in _RATELIMIT_KEYS},
        )

    @property
    def services(self) -> tuple[str, ...]:
        """Every service this mesh runs (Consul names, cluster names, `services.<name>`)."""
        return tuple(self.instances)

    @property
    def consul_addr(self) -> str:
        """This host's own agent: plain HTTP, which it serves on loopback only."""
        return f"{self.local_host}:{self.ports.consul_http}"

    @property
    def ca_addr(self) -> str:
        """The CA endpoint as workloads dial it (its certificate names this address)."""
        return f"{self.advertise_host}:{self.ports.ca}"

    def dial(self, port: int) -> str:
        """HOST:PORT of one of this host's listeners, as a client reaches it."""
        return f"{self.advertise_host}:{port}"

    def bind(self, port: int) -> str:
        return f"{self.host}:{port}"

    def local(self, port: int) -> str:
        """HOST:PORT of a listener this host's own processes alone reach."""
        return f"{self.local_host}:{port}"

    def path(self, *parts: str) -> Path:
        return self.var_dir.joinpath(*parts)

    def token_file(self, name: str) -> Path:
        """The Consul ACL token of `name` (a service, `controlplane`, `operator`), 0600."""
        return self.path("tokens", f"{name}.token")

    @property
    def xds_socket(self) -> Path:
        """The control plane's ADS socket, which this host's Envoy connects to (0600 in a
        0700 folder: the stream carries Envoy's key). In the host's own folder, so on
        `make hosts-up` each host's Envoy reaches its own control plane only."""
        return self.path("xds", "ads.sock")

    @property
    def pki_dir(self) -> Path:
        """The CA (ca/), the operator's files, Consul's check certificate (consul/)."""
        return self.path("pki")


_SERVICE_KEYS = frozenset(
    {
        "BCRYPT_COST",
        "BOOKING_SEED_DAYS",
        "PREDICT_TRAIN_ROWS",
        "LOG_LEVEL",
        "CHECK_INTERVAL_SECONDS",
        "SHUTDOWN_GRACE_SECONDS",
        "SHUTDOWN_DRAIN_SECONDS",
        "CPU_SLOTS",
        "CPU_MAX_WAIT_SECONDS",
        "GRPC_MAX_WORKERS",
        "PREDICT_TIMEOUT_SECONDS",
        "LIVE_ACCOUNT_CACHE_SECONDS",
        # Encrypts auth-svc's signing keys at rest; supervisord.conf holding it is 0600.
        "SIGNING_KEY_PASSPHRASE",
    }
)
_RATELIMIT_KEYS = frozenset(
    {
        "TOKEN_RATE_LIMIT",
        "TOKEN_RATE_WINDOW_SECONDS",
        "SIGNUP_RATE_LIMIT",
        "SIGNUP_RATE_WINDOW_SECONDS",
        "RATELIMIT_LIMITS_FILE",
        "REDIS_TIMEOUT_SECONDS",
        "LOG_LEVEL",
        "CHECK_INTERVAL_SECONDS",
    }
)

"""supervisord's configuration for one local mesh: every process, its order and logs.

PostgreSQL (with MESH_DATABASE=postgres) and Consul start with supervisord;
everything else waits for `mesh up` to have set up Consul's ACLs (the tokens they
start with), then starts in order: Redis, the control plane (with the CA endpoint the
services get their certificates from) and the rate limit service, Envoy, the services.
Services wait, bounded, for the CA and retry their registration, supervisord restarts
one that found its database not yet up, and Envoy keeps asking the control plane, so
the order is a courtesy, not a dependency.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from mesh import postgres, redis_server
from mesh.acl import RATELIMIT
from mesh.config import ROOT, MeshConfig

BIN = ROOT / ".venv" / "bin"
CONSUL = ROOT / ".tools" / "bin" / "consul"


def render(cfg: MeshConfig) -> str:
    """The supervisord.conf text for `cfg`."""
    blocks = [_header(cfg), _consul(cfg), _redis(cfg), _controlplane(cfg), _ratelimit(cfg)]
    blocks.append(_envoy(cfg))
    if cfg.database == "postgres":
        blocks.append(_postgres(cfg))
    blocks += [_service(cfg, name) for name in cfg.services]
    return "\n".join(blocks)


def render_app_host(cfg: MeshConfig) -> str:
    """One app host of several (mesh/hosts.py): a Consul server of the cluster, its
    control plane, rate limit service and Envoy, and one instance of every service."""
    blocks = [_header(cfg), _consul(cfg), _controlplane(cfg), _ratelimit(cfg), _envoy(cfg)]
    blocks += [_service(cfg, name) for name in cfg.services]
    return "\n".join(blocks)


def render_database_host(cfg: MeshConfig) -> str:
    """The database host: a Consul client agent, PostgreSQL and Redis."""
    return "\n".join([_header(cfg), _consul(cfg), _postgres(cfg), _redis(cfg, autostart=True)])


def _header(cfg: MeshConfig) -> str:
    return f"""\
[unix_http_server]
file={cfg.path("supervisor.sock")}
chmod=0700

[supervisord]
logfile={cfg.path("log", "supervisord.log")}
pidfile={cfg.path("supervisord.pid")}
directory={ROOT}
childlogdir={cfg.path("log")}
; files the mesh creates (databases, logs, keys) are the owner's only
umask=077
; a process that dies is restarted; a stop is SIGTERM, then SIGKILL after stopwaitsecs
minfds=4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{cfg.path("supervisor.sock")}
"""


def _program(
    name: str,
    command: str,
    cfg: MeshConfig,
    *,
    priority: int,
    env: Mapping[str, str] | None = None,
    numprocs: int = 1,
    stopwaitsecs: int = 15,
    autostart: bool = False,
    stopsignal: str = "TERM",
    extra: Mapping[str, str] | None = None,
    writes_own_log: bool = False,
) -> str:
    process_name = "%(program_name)s-%(process_num)d" if numprocs > 1 else "%(program_name)s"
    log = f"{cfg.path('log')}/{process_name}.log"
    own_log = ""
    if writes_own_log:
        # The process writes its JSON lines to <process>.log itself (LOG_FILE):
        # through supervisord's pipe every line cost supervisord a wake-up, a read
        # and a write (~90 us of CPU per request under load). What still reaches
        # stdout or stderr (a crash before logging is set up) goes to <process>.out.
        own_log = f"{_escape(str(cfg.path('log')))}/{process_name}.log"
        log = f"{cfg.path('log')}/{process_name}.out"
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"process_name={process_name}",
        f"numprocs={numprocs}",
        f"priority={priority}",
        f"autostart={'true' if autostart else 'false'}",
        "autorestart=true",
        "startsecs=1",
        f"stopsignal={stopsignal}",
        f"stopwaitsecs={stopwaitsecs}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={log}",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=2",
    ]
    lines += [f"{key}={value}" for key, value in (extra or {}).items()]
    if env:
        pairs = [f'{k}="{_escape(v)}"' for k, v in sorted(env.items())]
        if own_log:
            pairs.append(f'LOG_FILE="{own_log}"')  # supervisord fills in the process name
        lines.append(f"environment={','.join(pairs)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')


def _consul(cfg: MeshConfig) -> str:
    # One server that keeps its state in its data dir, not a -dev agent: ACLs are
    # server state, and a -dev agent restarted by supervisord would come back with
    # none (every token unknown, nothing could register until the next `make up`).
    p = cfg.ports
    command = (
        f"{CONSUL} agent {_consul_role(cfg)}"
        f" -data-dir={cfg.path('consul')} -http-port={p.consul_http} -dns-port={p.consul_dns}"
        f" -server-port={p.consul_server} -serf-lan-port={p.consul_serf_lan}"
        f" -serf-wan-port={p.consul_serf_wan}"
        f" -config-file={ROOT / 'consul' / 'acl.hcl'} -config-file={cfg.path('consul-tls.hcl')}"
    )
    return _program("consul", command, cfg, priority=10, autostart=True)


def _consul_role(cfg: MeshConfig) -> str:
    """One server alone (`make up`), or one server of a cluster joining its peers."""
    if not cfg.consul_join:
        return f"-server -bootstrap-expect=1 -config-file={ROOT / 'consul' / 'agent.hcl'}"
    joins = "".join(f" -retry-join={peer}" for peer in cfg.consul_join)
    role = "server.hcl" if cfg.consul_server else "client.hcl"
    # The node name: hosts sharing a kernel (namespaces) share a host name too.
    return (
        f"-config-file={ROOT / 'consul' / role} -node={cfg.node_name}"
        f" -bind={cfg.advertise_host} -client='127.0.0.1 {cfg.advertise_host}'{joins}"
    )


def consul_tls(cfg: MeshConfig) -> str:
    """The agent's TLS for its gRPC checks: it presents the `consul-health` certificate."""
    folder = cfg.pki_dir / "consul"
    return f"""\
# Rendered by `make up`. Consul checks instances over TLS (GRPCUseTLS) and, with
# enable_agent_tls_for_checks, presents this certificate: identity consul-health,
# which the mesh policy lets call grpc.health.v1.Health only.
ca_file   = "{folder / "ca.pem"}"
cert_file = "{folder / "consul-health.pem"}"
key_file  = "{folder / "consul-health-key.pem"}"
enable_agent_tls_for_checks = true
# The name checked in an instance's certificate; Consul would use its node name.
# Instances are registered, and their certificates issued, for this address (IP SAN).
server_name = "{cfg.advertise_host}"

# Elect at once (a single server on loopback, as -dev would) and fail over in seconds
# (servers on one LAN); the default multiplier of 5 is for slow, shared machines.
performance {{
  raft_multiplier = 1
}}
"""


def _postgres(cfg: MeshConfig) -> str:
    # SIGINT is PostgreSQL's fast shutdown: open sessions end, the data is consistent.
    # As root, supervisord runs it as its own user: the server refuses to run as root.
    extra = {"user": postgres.SERVER_USER} if os.geteuid() == 0 else None
    return _program(
        "postgres",
        postgres.server_command(cfg),
        cfg,
        priority=5,
        stopwaitsecs=30,
        stopsignal="INT",
        extra=extra,
        autostart=True,
    )


def _redis(cfg: MeshConfig, *, autostart: bool = False) -> str:
    # The rate limit counts: loopback only under `make up`, the database host's address
    # across hosts (reachable only on the hosts' private network); nothing persisted (a
    # restart forgets counts of at most one window; docs/ratelimit.md).
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    protected = "yes" if cfg.host in ("127.0.0.1", "::1") else "no"
    command = (
        f"{binary} --bind {cfg.host} --port {cfg.ports.redis} --protected-mode {protected}"
        f" --save '' --appendonly no --dir {cfg.var_dir}{redis_server.server_args(cfg)}"
    )
    return _program("redis", command, cfg, priority=15, autostart=autostart)


def _ratelimit(cfg: MeshConfig) -> str:
    env = {
        **cfg.ratelimit_env,
        "GRPC_HOST": cfg.local_host,
        "GRPC_PORT": str(cfg.ports.ratelimit),
        "METRICS_PORT": "0",
        # Not registered in Consul: the control plane would make a cluster of it
        # beside the edge's static one (docs/ratelimit.md: why static).
        "REDIS_URL": redis_server.client_url(cfg),
        # A workload like the services: its certificate (identity `ratelimit`) from the
        # CA endpoint, proving the name with its own token; mutual TLS only, and the
        # policy lets only the edge ask it (docs/trust.md).
        "CONSUL_HTTP_TOKEN_FILE": str(cfg.token_file(RATELIMIT)),
        "MESH_CA_ADDR": cfg.ca_addr,
        "MESH_CA_FILE": str(cfg.pki_dir / "ca.pem"),
        "MESH_POLICY_FILE": str(ROOT / "mesh" / "policy.toml"),
    }
    return _program("ratelimit", f"{sys.executable} -m ratelimit", cfg, priority=25, env=env)


def _controlplane(cfg: MeshConfig) -> str:
    env = {
        "CONSUL_HTTP_ADDR": cfg.consul_addr,
        "CONSUL_HTTP_ADDRS": ",".join(cfg.consul_addrs or (cfg.consul_addr,)),
        "XDS_SOCKET": str(cfg.xds_socket),
        "CONTROLPLANE_SERVICES": ",".join(cfg.services),
        # The rate limit service's token may register its name: never a cluster over
        # CDS beside (and clashing with) the edge's static `ratelimit` cluster.
        "CONTROLPLANE_EXCLUDE": f"consul,{RATELIMIT}",
        "CONSUL_HTTP_TOKEN_FILE": str(cfg.token_file("controlplane")),
        "MESH_PKI_DIR": str(cfg.pki_dir),
        "MESH_CA_ADDR": cfg.ca_addr,
        "MESH_CA_BIND_ADDR": cfg.bind(cfg.ports.ca),
        # Services dial Envoy's mesh listener and clients its TLS edge at this address.
        "ENVOY_IDENTITY_IPS": ",".join(sorted({"127.0.0.1", cfg.advertise_host})),
        "CERT_LIFETIME_SECONDS": str(cfg.cert_lifetime_seconds),
        "UPSTREAM_MTLS": "1",
    }
    if any(addr.startswith("https://") for addr in cfg.consul_addrs):
        # Other hosts' agents over HTTPS, showing this host's Consul agent certificate
        # (docs/deploy.md: why that one).
        folder = cfg.pki_dir / "consul"
        env["CONSUL_CACERT"] = str(folder / "ca.pem")
        env["CONSUL_CLIENT_CERT"] = str(folder / "consul-health.pem")
        env["CONSUL_CLIENT_KEY"] = str(folder / "consul-health-key.pem")
    return _program("controlplane", f"{sys.executable} -m controlplane", cfg, priority=20, env=env)


def _envoy(cfg: MeshConfig) -> str:
    command = (
        f"{BIN / 'envoy'} -c {cfg.path('envoy.yaml')} --disable-hot-restart"
        " --log-level info --log-format '%%Y-%%m-%%dT%%T.%%eZ %%l [%%n] %%v'"
    )
    return _program("envoy", command, cfg, priority=30)


def _service(cfg: MeshConfig, name: str) -> str:
    module = "services." + name.replace("-", "_")
    env = {
        # The instances of a service on this host share its cores: CPU-heavy work
        # (bcrypt) gets one slot per core across them, so an admitted hash runs at full
        # speed instead of time-slicing with its siblings, and a flood is refused sooner
        # (CPU_SLOTS in the environment overrides it).
        "CPU_SLOTS": str(max(1, (os.cpu_count() or 2) // max(1, cfg.instances.get(name, 1)))),
        **cfg.service_env,
        "GRPC_HOST": cfg.host,
        "GRPC_ADVERTISE_HOST": cfg.advertise_host,
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "CONSUL_HTTP_ADDR": cfg.consul_addr,
        "MESH_ADDR": cfg.dial(cfg.ports.mesh),
        "DATABASE_URL": _database_url(cfg, name),
        "CONSUL_HTTP_TOKEN_FILE": str(cfg.token_file(name)),
        "MESH_CA_ADDR": cfg.ca_addr,
        "MESH_CA_FILE": str(cfg.pki_dir / "ca.pem"),
        "MESH_POLICY_FILE": str(ROOT / "mesh" / "policy.toml"),
    }
    # Drain (check interval + push) plus the grace for calls in flight, with room.
    return _program(
        name,
        f"{sys.executable} -m {module}",
        cfg,
        priority=40,
        env=env,
        numprocs=cfg.instances[name],
        stopwaitsecs=30,
        writes_own_log=True,
        # A service that starts before PostgreSQL accepts connections exits; supervisord
        # starts it again (1 s, 2 s, ... later) until the server is up.
        extra={"startretries": "10"} if cfg.database == "postgres" else None,
    )


def _database_url(cfg: MeshConfig, name: str) -> str:
    if cfg.database == "postgres":
        return postgres.database_url(cfg, name)
    return f"sqlite:///{cfg.path('db', name + '.db')}"

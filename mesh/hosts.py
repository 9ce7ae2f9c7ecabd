"""The mesh across simulated hosts: `python -m mesh.hosts up|down|status|kill|start|renew-ca`.

`up` (HOSTS=3 app hosts) makes network namespaces on a bridge (mesh/netns.py), one per
host, each with its own address in HOSTS_SUBNET (198.18.0.0/24, the benchmarking range)
and its own state folder and supervisord: every app host a Consul server of one cluster,
a control plane, a rate limit service, an Envoy and one instance of every service; the
database host a Consul client, PostgreSQL (a database and role per service) and Redis.
Nothing passes between hosts through the filesystem once they run: what `up` hands a
host before it starts (its own intermediate CA and the root bundle, Consul tokens,
pgpass files) it writes into that host's folder only, as a provisioning tool would; the
root's key stays in the provisioner's folder. `renew-ca` issues every running host a
new intermediate (and the current bundle). It returns when every edge answers
/healthz and writes `<var>/hosts.json`.
`down` stops every host's supervisord, SIGKILLs by PID whatever is left in the hosts'
namespaces, deletes the namespaces (their links go with them) and checks nothing is left.
`kill HOST` SIGKILLs every process of one host; `start HOST` starts it again.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from controlplane.ca import (
    IssuedCertificate,
    MeshCA,
    private_dir,
    write_credentials,
    write_private,
)
from controlplane.consul import consul_tls_context
from mesh import acl, envoy_config, netns, postgres, redis_server, supervisord
from mesh.config import ROOT, MeshConfig
from services.runtime.config import env_int, env_str

SUPERVISORD = supervisord.BIN / "supervisord"
SUPERVISORCTL = supervisord.BIN / "supervisorctl"
APP_ROLES = ("consul-server", "controlplane", "envoy", "ratelimit")
DATABASE_ROLES = ("consul-client", "postgres", "redis")
# Small, so that three hosts' worth of services start on two cores.
LIGHT_SERVICE_ENV = {"BCRYPT_COST": "4", "PREDICT_TRAIN_ROWS": "20000", "BOOKING_SEED_DAYS": "2"}
# The benchmarking range (RFC 2544): routed nowhere, so it can clash with nothing real.
DEFAULT_SUBNET = "198.18.0.0/24"
# What the provisioner issues to servers (Consul agents, PostgreSQL, Redis): renewed by
# provisioning again, long before it ends (a leaf never outlives its intermediate).
SERVER_CERT_LIFETIME = datetime.timedelta(days=30)
# Renewed by `renew-ca` (cron, config management) well before two thirds of it.
INTERMEDIATE_LIFETIME = datetime.timedelta(days=7)
STOP_TIMEOUT_SECONDS = 90.0
# consul/server.hcl's and client.hcl's datacenter; a server's certificate names
# server.<datacenter>.consul (verify_server_hostname).
CONSUL_DATACENTER = "dc1"
CONSUL_SERVER_NAME = f"server.{CONSUL_DATACENTER}.consul"
# The identity of the provisioner's certificate for Consul's HTTPS API: no policy names
# it, so it can call no service (Consul checks only that the mesh CA signed it).
PROVISIONER = "provisioner"


@dataclass(frozen=True)
class Host:
    """One simulated machine: its namespace, address, roles and mesh configuration."""

    name: str
    netns: str
    address: str
    roles: tuple[str, ...]
    cfg: MeshConfig

    @property
    def is_app(self) -> bool:
        return "envoy" in self.roles

    @property
    def edge(self) -> str:
        return f"http://{self.address}:{self.cfg.ports.edge}"

    def entry(self) -> dict[str, Any]:
        """This host's line in hosts.json."""
        out: dict[str, Any] = {
            "name": self.name,
            "netns": self.netns,
            "address": self.address,
            # Its agent's API as other machines reach it: HTTPS, with a mesh certificate.
            "consul": f"https://{self.cfg.dial(self.cfg.ports.consul_https)}",
            "roles": list(self.roles),
            "var_dir": str(self.cfg.var_dir),
        }
        if self.is_app:
            out["edge"] = self.edge
        return out


@dataclass(frozen=True)
class HostsConfig:
    """How many hosts, their names' prefix, their network and where their state lives."""

    var_dir: Path
    count: int = 3
    prefix: str = "airline"
    subnet: IPv4Network = field(default_factory=lambda: IPv4Network("198.18.0.0/24"))
    base: MeshConfig = field(default_factory=lambda: MeshConfig(var_dir=ROOT / "var"))
    up_timeout_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HostsConfig:
        env = os.environ if env is None else env
        base = MeshConfig.from_env(env)
        prefix = env_str(env, "HOSTS_PREFIX", cls.prefix)
        # Interface and namespace names stay short; `ip` refuses long ones.
        if not (prefix.isalnum() and len(prefix) <= 10):
            raise ValueError("HOSTS_PREFIX must be 1 to 10 letters or digits")
        light = {k: v for k, v in LIGHT_SERVICE_ENV.items() if k not in base.service_env}
        return cls(
            var_dir=base.var_dir,
            count=env_int(env, "HOSTS", cls.count, minimum=3),
            prefix=prefix,
            subnet=IPv4Network(env_str(env, "HOSTS_SUBNET", DEFAULT_SUBNET)),
            base=dataclasses.replace(base, service_env={**light, **base.service_env}),
        )

    @property
    def hosts_dir(self) -> Path:
        return self.var_dir / "hosts"

    @property
    def provision_dir(self) -> Path:
        """The provisioner's own: the root CA and the bootstrap token; no host's."""
        return self.hosts_dir / "provision"

    @property
    def provisioner_pki_dir(self) -> Path:
        """The provisioner's client certificate for the agents' HTTPS APIs (and the CA's)."""
        return self.provision_dir / "consul-client"

    @property
    def json_path(self) -> Path:
        return self.var_dir / "hosts.json"

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-net"

    @property
    def client_ns(self) -> str:
        """Where the operator's and the tests' requests come from: a machine of its own."""
        return f"{self.prefix}-client"

    @property
    def client_addresses(self) -> tuple[IPv4Address, IPv4Address]:
        return self.subnet[200], self.subnet[201]

    def plan(self) -> list[Host]:
        """The database host, then app hosts host-1..host-N."""
        db_address = str(self.subnet[2])
        apps = [str(self.subnet[10 + n]) for n in range(1, self.count + 1)]
        hosts = [self._host("db", db_address, DATABASE_ROLES, apps, db_address)]
        roles = (*APP_ROLES, *self.base.services)
        hosts += [
            self._host(f"host-{n}", address, roles, apps, db_address)
            for n, address in enumerate(apps, start=1)
        ]
        return hosts

    def _host(
        self, name: str, address: str, roles: tuple[str, ...], apps: list[str], db: str
    ) -> Host:
        is_app = "envoy" in roles
        https = self.base.ports.consul_https
        cfg = dataclasses.replace(
            self.base,
            var_dir=self.hosts_dir / name,
            # App hosts bind every listener to all their addresses and advertise one.
            host="0.0.0.0" if is_app else address,  # inside its namespace only
            advertise_host=address,
            node_name=name,
            consul_server=is_app,
            consul_join=tuple(a for a in apps if a != address),
            # Its own agent first, on loopback; then the other servers' agents, over HTTPS.
            consul_addrs=(
                f"http://{self.base.consul_addr}",
                *(f"https://{a}:{https}" for a in apps if a != address),
            ),
            postgres_host=db,
            redis_host=db,
            database="postgres",
            pg_dir=self.hosts_dir / name / "pg",
            instances=dict.fromkeys(self.base.services, 1),
        )
        return Host(name, f"{self.prefix}-{name}", address, roles, cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.hosts")
    parser.add_argument("command", choices=["up", "down", "status", "kill", "start", "renew-ca"])
    parser.add_argument("host", nargs="?", help="kill / start: the host's name (host-2)")
    args = parser.parse_args(argv)
    config = HostsConfig.from_env()
    if args.command in ("kill", "start"):
        host = next((h for h in config.plan() if h.name == args.host), None)
        if host is None:
            parser.error(f"{args.command} needs a host name: host-1 .. host-{config.count}, db")
        return kill(host) if args.command == "kill" else start(config, host)
    commands = {"up": up, "down": down, "status": status, "renew-ca": renew_ca}
    return commands[args.command](config)


def up(config: HostsConfig) -> int:
    if netns.listed(config.prefix):
        print(f"hosts {config.prefix}-* exist already: `make hosts-down` first")
        return 1
    if os.geteuid() != 0:
        print("hosts-up makes network namespaces: run it as root")
        return 1
    shutil.rmtree(config.hosts_dir, ignore_errors=True)
    config.json_path.unlink(missing_ok=True)
    hosts = config.plan()
    _folders(config, hosts)
    members = [(h.netns, [IPv4Address(h.address)]) for h in hosts]
    members.append((config.client_ns, list(config.client_addresses)))
    print(f"hosts up: namespaces {config.prefix}-* on {config.subnet}")
    netns.create_network(config.bridge_ns, config.subnet, members)
    _provision_pki(config, hosts)
    _provision_consul(config, hosts)
    _provision_database(config, hosts)
    _provision_redis(config, hosts)
    for host in hosts:
        _render(host)
        _start_supervisord(host)
    print("hosts up: Consul cluster (3 servers), ACLs, one token per workload")
    netns.run_in(config.client_ns, lambda: _bootstrap_acls(config, hosts))
    for host in hosts:
        _ctl(host, "start", "all", check=False)
    print(f"hosts up: waiting for every edge (at most {config.up_timeout_seconds:.0f} s)")
    apps = [h for h in hosts if h.is_app]
    if not netns.run_in(config.client_ns, lambda: _wait_edges(apps, config.up_timeout_seconds)):
        print(f"an edge did not become healthy; see {config.hosts_dir}/*/log/")
        return 1
    _write_json(config, hosts)
    for host in hosts:
        print(f"  {host.name:<7} {host.address:<13} {host.netns:<16} {' '.join(host.roles)}")
    print(f"hosts are up: {config.json_path}; `make hosts-down` removes them")
    return 0


def _folders(config: HostsConfig, hosts: list[Host]) -> None:
    private_dir(config.provision_dir)
    for host in hosts:
        for name in ("", "log", "tokens", "pg-secrets"):
            private_dir(host.cfg.path(name))
    # PostgreSQL runs as its own user: it must pass through (never list or read) the
    # folders above its data folder, as `make up` allows for var/.
    for folder in (config.var_dir, config.hosts_dir, config.hosts_dir / "db"):
        folder.chmod(0o711)


def _provision_pki(config: HostsConfig, hosts: list[Host]) -> None:
    """The root CA, made and kept here (the provisioner's folder, key 0600); each app host
    gets an intermediate of its own (its key 0600 and the root bundle, never the root's
    key) to sign its workloads with; every host gets the bundle (docs/deploy.md)."""
    issue_intermediates(config, hosts)


def _provision_consul(config: HostsConfig, hosts: list[Host]) -> None:
    """The cluster's gossip key (made here, kept 0600), each agent's certificate and TLS
    file: what lets an agent join the cluster, speak RPC to its servers and serve HTTPS;
    and the provisioner's own client certificate for those HTTPS APIs."""
    root = MeshCA.load_or_create(config.provision_dir / "ca")
    # The database host has no intermediate: its agent's certificate comes from one the
    # provisioner keeps in memory for this run.
    provisioner = root.intermediate("provision")
    key_file = config.provision_dir / "consul-gossip.key"
    if not key_file.exists():
        write_private(key_file, new_gossip_key().encode())
    gossip_key = key_file.read_text().strip()
    for host in hosts:
        pki = host.cfg.pki_dir
        signer = MeshCA.load_intermediate(pki / "ca") if host.is_app else provisioner
        write_credentials(consul_certificate(signer, host.cfg), pki / "consul")
        text = supervisord.consul_tls(host.cfg) + consul_transport(gossip_key, host.cfg)
        write_private(host.cfg.path("consul-tls.hcl"), text.encode())
    issued = root.issue(PROVISIONER, lifetime=SERVER_CERT_LIFETIME)
    write_credentials(issued, config.provisioner_pki_dir)


def consul_https(config: HostsConfig, address: str) -> acl.Endpoint:
    """The HTTPS API of the agent at `address`, as the provisioner (and the tests, from
    the client machine) reach it: the mesh CA and the provisioner's certificate."""
    folder = config.provisioner_pki_dir
    url = f"https://{address}:{config.base.ports.consul_https}"
    tls = consul_tls_context(
        folder / "ca.pem", folder / f"{PROVISIONER}.pem", folder / f"{PROVISIONER}-key.pem"
    )
    return acl.Endpoint(url, tls)


def new_gossip_key() -> str:
    """A random 32-byte key, base64 (what `consul keygen` makes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def consul_certificate(signer: MeshCA, cfg: MeshConfig) -> IssuedCertificate:
    """An agent's one certificate: identity `consul-health` (its checks present it) and,
    on a server, the name every agent checks before it speaks RPC to a server
    (verify_server_hostname): a client agent's certificate cannot pass for a server's."""
    names = [CONSUL_SERVER_NAME] if cfg.consul_server else []
    # The host's address too: its HTTPS API serves this certificate to other hosts.
    return signer.issue(
        "consul-health",
        dns_names=names,
        ip_addresses=[cfg.advertise_host],
        lifetime=SERVER_CERT_LIFETIME,
    )


def consul_transport(gossip_key: str, cfg: MeshConfig) -> str:
    """The part of an agent's TLS file that secures what crosses hosts (Consul 1.8)."""
    return f"""
# Gossip (Serf, 8301 TCP and UDP) encrypted and authenticated with the cluster's key:
# an agent without it can neither join nor read membership. Made per cluster by the
# provisioner; this file is 0600.
encrypt = "{gossip_key}"

# RPC (8300: agents to servers, servers to servers) over TLS both ways, with the
# certificates above from the mesh CA: a peer without one is refused, and a server
# must prove the name {CONSUL_SERVER_NAME}.
# Reference: https://developer.hashicorp.com/consul/docs/v1.8.x/agent/options#verify_incoming
verify_incoming        = true
verify_outgoing        = true
verify_server_hostname = true

# The HTTP API carries ACL tokens: plain HTTP on loopback only, for this host's own
# clients (services registering, the control plane's reads of its own agent, the consul
# CLI); other machines get HTTPS on the host's address only, and only with a client
# certificate from the mesh CA. The certificate above names that address (IP SAN).
# NOTE: addresses.http wins over -client for HTTP; DNS stays where -client puts it.
# Reference: https://developer.hashicorp.com/consul/docs/v1.8.x/agent/options#verify_incoming_https
addresses {{
  http  = "{cfg.local_host}"
  https = "{cfg.advertise_host}"
}}
ports {{
  https = {cfg.ports.consul_https}
}}
verify_incoming_https = true
"""


def issue_intermediates(config: HostsConfig, hosts: list[Host]) -> None:
    """A new intermediate per app host, signed by the provisioner's root, and the root
    bundle to every host: at `up`, and again by `renew-ca` before they expire (and after
    each step of a root rotation), as config management would. A running control plane
    picks the new files up within a second."""
    root = MeshCA.load_or_create(config.provision_dir / "ca")
    for host in hosts:
        pki = private_dir(host.cfg.pki_dir)
        if host.is_app:
            intermediate = root.intermediate(host.name, lifetime=INTERMEDIATE_LIFETIME)
            intermediate.save_intermediate(pki / "ca")
        write_private(pki / "ca.pem", root.bundle_pem)


def renew_ca(config: HostsConfig) -> int:
    """`renew-ca`: every running host gets a new intermediate and the current bundle."""
    issue_intermediates(config, [h for h in config.plan() if netns.pids(h.netns)])
    print("intermediates renewed")
    return 0


def _provision_database(config: HostsConfig, hosts: list[Host]) -> None:
    """The database host's cluster, roles and databases; each app host gets the
    pgpass files of its services, written into its own folder."""
    db = next(h for h in hosts if not h.is_app)
    root = MeshCA.load_or_create(config.provision_dir / "ca")
    # verify-full: the certificate names the address the services dial.
    server = root.issue("postgres", ip_addresses=[db.address], lifetime=SERVER_CERT_LIFETIME)
    postgres.prepare(db.cfg, clients=str(config.subnet), certificate=server)
    for host in hosts:
        if host.is_app:
            for service in host.cfg.services:
                secret = postgres.passfile(db.cfg, service).read_bytes()
                write_private(postgres.passfile(host.cfg, service), secret)


def _provision_redis(config: HostsConfig, hosts: list[Host]) -> None:
    """Redis's certificate and ACL file (the password's hash) on the database host; the
    password itself on each app host, for its rate limit service (mesh/redis_server.py)."""
    db = next(h for h in hosts if not h.is_app)
    root = MeshCA.load_or_create(config.provision_dir / "ca")
    server = root.issue("redis", ip_addresses=[db.address], lifetime=SERVER_CERT_LIFETIME)
    password = redis_server.new_password()
    redis_server.provision_server(db.cfg, server, password)
    for host in hosts:
        if host.is_app:
            redis_server.provision_client(host.cfg, password)


def _render(host: Host) -> None:
    if host.is_app:
        envoy_config.write(host.cfg).chmod(0o600)
        text = supervisord.render_app_host(host.cfg)
    else:
        text = supervisord.render_database_host(host.cfg)
    write_private(host.cfg.path("supervisord.conf"), text.encode())


def _start_supervisord(host: Host) -> None:
    log = host.cfg.path("log", "supervisord.log")
    log.touch(mode=0o600)
    for stale in ("supervisord.pid", "supervisor.sock"):
        host.cfg.path(stale).unlink(missing_ok=True)
    conf = str(host.cfg.path("supervisord.conf"))
    subprocess.run(netns.exec_argv(host.netns, [str(SUPERVISORD), "-c", conf]), check=True)


def _ctl(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SUPERVISORCTL), "-c", str(host.cfg.path("supervisord.conf")), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _bootstrap_acls(config: HostsConfig, hosts: list[Host]) -> None:
    """Runs in the client namespace, over each agent's HTTPS API: bootstrap through the
    first server, then give each agent its token and each host the tokens of its own
    workloads only."""
    apps = [h for h in hosts if h.is_app]
    first = consul_https(config, apps[0].address)
    acl.wait_for_leader(first, config.up_timeout_seconds)
    files = acl.ensure_tokens(first, config.provision_dir / "tokens", config.base.services)
    master = files["bootstrap"].read_text().strip()
    agent_token = files["agent"].read_text().strip()
    for host in hosts:
        agent = consul_https(config, host.address)
        acl.wait_for_leader(agent, config.up_timeout_seconds)
        acl.set_agent_token(agent, master, agent_token)
        if host.is_app:
            for name in (*host.cfg.services, acl.RATELIMIT, "controlplane", "operator"):
                write_private(host.cfg.token_file(name), files[name].read_bytes())


def _edge_health(host: Host) -> int | None:
    try:
        with urllib.request.urlopen(f"{host.edge}/healthz", timeout=2) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _wait_edges(apps: list[Host], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    waiting = list(apps)
    while waiting and time.monotonic() < deadline:
        waiting = [h for h in waiting if _edge_health(h) != 200]
        if waiting:
            time.sleep(0.5)
    return not waiting


def _write_json(config: HostsConfig, hosts: list[Host]) -> None:
    document = {
        "hosts": [h.entry() for h in hosts],
        "subnet": str(config.subnet),
        "bridge_netns": config.bridge_ns,
        "client": {
            "netns": config.client_ns,
            "addresses": [str(a) for a in config.client_addresses],
        },
        "provision_dir": str(config.provision_dir),
    }
    write_private(config.json_path, (json.dumps(document, indent=2) + "\n").encode())


def kill(host: Host) -> int:
    """SIGKILL to every process of `host`, by PID (a crashed machine)."""
    left = netns.kill_all(host.netns)
    print(f"{host.name}: killed" if not left else f"{host.name}: still running: {left}")
    return 1 if left else 0


def start(config: HostsConfig, host: Host) -> int:
    """Starts a host's supervisord and every program again (after `kill`), from the
    state its folder kept: Consul rejoins the cluster with its data and tokens."""
    if netns.pids(host.netns):
        print(f"{host.name} runs already")
        return 1
    _start_supervisord(host)
    deadline = time.monotonic() + 30
    while _ctl(host, "start", "all", check=False).returncode not in (0, 1):
        if time.monotonic() > deadline:
            print(f"{host.name}: supervisord does not answer")
            return 1
        time.sleep(0.2)
    return 0


def down(config: HostsConfig) -> int:
    names = netns.listed(config.prefix)
    if not names:
        print("no hosts")
        config.json_path.unlink(missing_ok=True)
        return 0
    hosts = [h for h in config.plan() if h.netns in names]
    for host in hosts:
        if netns.pids(host.netns) and host.cfg.path("supervisor.sock").exists():
            # supervisord stops its programs (SIGTERM, SIGKILL after stopwaitsecs).
            _ctl(host, "shutdown", check=False)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name in names:
        while netns.pids(name) and time.monotonic() < deadline:
            time.sleep(0.2)
    left = {name: netns.kill_all(name) for name in names}
    for name in names:
        netns.delete(name)
    stuck = {name: pids for name, pids in left.items() if pids}
    remaining = netns.listed(config.prefix)
    config.json_path.unlink(missing_ok=True)
    if stuck or remaining:
        print(f"still there: processes {stuck}, namespaces {remaining}")
        return 1
    print(f"stopped; namespaces {config.prefix}-* removed")
    return 0


def status(config: HostsConfig) -> int:
    names = netns.listed(config.prefix)
    if not names:
        print("no hosts")
        return 3
    for host in config.plan():
        running = len(netns.pids(host.netns))
        print(f"== {host.name} ({host.address}, {host.netns}): {running} processes")
        if running:
            print(_ctl(host, "status", check=False).stdout.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Single servers as the database host runs them, started from the code that renders
them for `mesh.hosts`, on loopback and free ports: PostgreSQL with TLS, Redis with an
ACL user and TLS. Each is stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from controlplane.ca import MeshCA, private_dir, write_private
from mesh import postgres, redis_server
from mesh.config import MeshConfig, Ports
from ratelimit import store
from tests.postgres import PostgresMissing, _run_as
from tests.ratelimit.redis_server import redis_binary
from tests.support import free_ports, wait_for

LOOPBACK = "127.0.0.1"


def database_host_config(var_dir: Path, **ports: int) -> MeshConfig:
    """A database host on loopback: the server on a host of its own, as across hosts."""
    return MeshConfig(
        var_dir=var_dir,
        ports=Ports(**ports),
        host=LOOPBACK,
        advertise_host=LOOPBACK,
        postgres_host=LOOPBACK,
        redis_host=LOOPBACK,
        database="postgres",
        pg_dir=var_dir / "pg",
        instances={"booking-svc": 1},
    )


def var_dir_with_root(root: MeshCA) -> Path:
    """A fresh folder the server's own user may pass through, with the mesh root in pki/."""
    var_dir = Path(tempfile.mkdtemp(prefix="airline-transport-"))
    var_dir.chmod(0o711)
    write_private(private_dir(var_dir / "pki") / "ca.pem", root.cert_pem)
    return var_dir


@contextmanager
def tls_postgres(root: MeshCA) -> Iterator[MeshConfig]:
    """A PostgreSQL server made by `mesh.postgres.prepare` with a certificate from `root`
    for 127.0.0.1, running `server_command`; yields the host's configuration."""
    try:
        postgres.binary("initdb")
        _run_as()
    except (FileNotFoundError, PostgresMissing) as exc:
        pytest.skip(f"no PostgreSQL here: {exc}")
    var_dir = var_dir_with_root(root)
    cfg = database_host_config(var_dir, postgres=free_ports(1)[0])
    try:
        certificate = root.issue("postgres", ip_addresses=[LOOPBACK])
        postgres.prepare(cfg, clients=f"{LOOPBACK}/32", certificate=certificate)
        command = [*postgres.run_as(), *shlex.split(postgres.server_command(cfg))]
        with (var_dir / "postgres.log").open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _accepts(cfg, process), "PostgreSQL to accept connections", 60)
            yield cfg
        finally:
            _stop_postmaster(cfg, process)
    finally:
        subprocess.run(["rm", "-rf", str(var_dir)], check=False, timeout=60)


def _accepts(cfg: MeshConfig, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        pytest.fail(f"postgres exited with {process.returncode}: see its log")
    return (postgres.data_dir(cfg) / "postmaster.pid").exists() and _ready(cfg)


def _ready(cfg: MeshConfig) -> bool:
    pidfile = (postgres.data_dir(cfg) / "postmaster.pid").read_text().splitlines()
    # Line 8 of postmaster.pid is the server's status: "ready" once it takes connections.
    return len(pidfile) >= 8 and pidfile[7].strip() == "ready"


def _stop_postmaster(cfg: MeshConfig, process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT) to the postmaster's PID, then wait for `process` to end."""
    pidfile = postgres.data_dir(cfg) / "postmaster.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def tls_redis(root: MeshCA) -> Iterator[MeshConfig]:
    """redis-server with `mesh.redis_server`'s flags (TLS only, the ACL user) and a
    certificate from `root` for 127.0.0.1; the password provisioned as for an app host.
    Yields the host's configuration (`redis_server.client_url` reaches it)."""
    binary = redis_binary()
    var_dir = var_dir_with_root(root)
    cfg = database_host_config(var_dir, redis=free_ports(1)[0])
    password = redis_server.new_password()
    redis_server.provision_server(cfg, root.issue("redis", ip_addresses=[LOOPBACK]), password)
    redis_server.provision_client(cfg, password)
    command = (
        f"{binary} --bind {LOOPBACK} --port {cfg.ports.redis} --save '' --appendonly no"
        f" --dir {var_dir}{redis_server.server_args(cfg)}"
    )
    with (var_dir / "redis.log").open("ab") as log:
        process = subprocess.Popen(shlex.split(command), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(cfg, process), "redis-server to answer over TLS", 15)
        yield cfg
    finally:
        _stop(process)
        subprocess.run(["rm", "-rf", str(var_dir)], check=False, timeout=60)


def _answers(cfg: MeshConfig, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        pytest.fail(f"redis-server exited with {process.returncode}: see its log")
    client = store.connect(redis_server.client_url(cfg), 0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its PID; SIGKILL to it if it has not ended in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

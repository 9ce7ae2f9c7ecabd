"""The mesh's PostgreSQL server (MESH_DATABASE=postgres): its cluster, roles and URLs.

`prepare` makes the cluster once, before supervisord runs the server: initdb into the
PostgreSQL folder (0700), then, in single-user mode, one role and one database per
service, each role's password random and kept only in a 0600 pgpass file that the
service's DATABASE_URL names, so no password is in an environment or a config file.
The server listens on loopback only and takes passwords (SCRAM) from there. On a
database host of its own (`make hosts-up`) it speaks TLS with a certificate from the
mesh CA, refuses any TCP connection without it, and clients verify it (verify-full).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from controlplane.ca import IssuedCertificate, private_dir, write_private
from mesh.config import MeshConfig

# initdb and postgres refuse to run as root; as root the cluster belongs to this user.
SERVER_USER = "postgres"


def role(service: str) -> str:
    """The role and the database of `service`: `auth-svc` -> `auth_svc`."""
    return service.replace("-", "_")


def binary(name: str) -> str:
    """`initdb` or `postgres`: from PATH, else from Debian's versioned folder."""
    found = shutil.which(name)
    if found is None:
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=_version)
        if not versions:
            raise FileNotFoundError(f"{name} not found: apt-get install postgresql")
        found = str(versions[-1])
    return found


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.parts[-3].split(".") if part.isdigit())


def run_as() -> list[str]:
    """The command prefix that runs a server tool as its user (`runuser` when root)."""
    return ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []


def data_dir(cfg: MeshConfig) -> Path:
    return cfg.pg_dir / "data"


def socket_dir(cfg: MeshConfig) -> Path:
    return cfg.pg_dir / "run"


def tls_dir(cfg: MeshConfig) -> Path:
    """The server's certificate and key (the server's user's own, 0600)."""
    return cfg.pg_dir / "tls"


def uses_tls(cfg: MeshConfig) -> bool:
    """Whether the server is on a host of its own: its clients reach it over a network."""
    return bool(cfg.postgres_host)


def passfile(cfg: MeshConfig, service: str) -> Path:
    return cfg.path("pg-secrets", f"{service}.pgpass")


def database_url(cfg: MeshConfig, service: str) -> str:
    """What `service` connects with: its role, the password from its pgpass; across
    hosts over TLS only, the server's certificate checked against the mesh root and
    the address dialled (verify-full: a server without a mesh certificate for that
    address is refused, so no host on the path can stand in for it)."""
    name = role(service)
    url = (
        f"postgresql+psycopg://{name}@{server_host(cfg)}:{cfg.ports.postgres}/{name}"
        f"?passfile={passfile(cfg, service)}"
    )
    if uses_tls(cfg):
        url += f"&sslmode=verify-full&sslrootcert={cfg.pki_dir / 'ca.pem'}"
    return url


def server_host(cfg: MeshConfig) -> str:
    """Where the server is reached: the database host's address, else this host's."""
    return cfg.postgres_host or cfg.advertise_host


def server_command(cfg: MeshConfig) -> str:
    """The server in the foreground, for supervisord."""
    command = (
        f"{binary('postgres')} -D {data_dir(cfg)} -p {cfg.ports.postgres}"
        f" -k {socket_dir(cfg)} -c listen_addresses={cfg.host}"
    )
    if uses_tls(cfg):
        folder = tls_dir(cfg)
        command += (
            f" -c ssl=on -c ssl_cert_file={folder / 'server.pem'}"
            f" -c ssl_key_file={folder / 'server-key.pem'} -c ssl_min_protocol_version=TLSv1.3"
        )
    return command


def prepare(
    cfg: MeshConfig, clients: str = "", certificate: IssuedCertificate | None = None
) -> None:
    """Creates the cluster, the roles, the databases and the pgpass files, once.

    `clients`, a network (CIDR), may connect too, with a password (SCRAM): the app
    hosts' network when the server runs on a database host of its own. There
    (`uses_tls`) the server needs `certificate` (the mesh CA's, naming its address),
    and every TCP connection must be TLS: pg_hba has `hostssl` lines only.
    """
    owner = pwd.getpwnam(SERVER_USER) if os.geteuid() == 0 else None
    if uses_tls(cfg):
        if certificate is None:
            raise ValueError("a PostgreSQL server reached across hosts needs a certificate")
        _write_certificate(cfg, certificate, owner)
    if (data_dir(cfg) / "PG_VERSION").exists():
        return
    for folder in (cfg.pg_dir, socket_dir(cfg)):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
    _run(
        [
            *run_as(),
            binary("initdb"),
            "-D",
            str(data_dir(cfg)),
            "-U",
            SERVER_USER,
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
        ]
    )
    if uses_tls(cfg):
        (data_dir(cfg) / "pg_hba.conf").write_text(_hba_tls_only(clients))
    elif clients:
        with (data_dir(cfg) / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {clients} scram-sha-256\n")
    statements = [_create(cfg, service) for service in cfg.services]
    _run(
        [*run_as(), binary("postgres"), "--single", "-D", str(data_dir(cfg)), "postgres"],
        "".join(statements),
    )


def _write_certificate(
    cfg: MeshConfig, certificate: IssuedCertificate, owner: pwd.struct_passwd | None
) -> None:
    """The server's certificate and key, 0600 and its user's: the server refuses a key
    that others may read."""
    folder = private_dir(tls_dir(cfg))
    files = (("server-key.pem", certificate.key_pem), ("server.pem", certificate.cert_pem))
    for name, data in files:
        write_private(folder / name, data)
        if owner is not None:
            os.chown(folder / name, owner.pw_uid, owner.pw_gid)
    if owner is not None:
        for path in (cfg.pg_dir, folder):
            os.chown(path, owner.pw_uid, owner.pw_gid)


def _hba_tls_only(clients: str) -> str:
    """pg_hba.conf for a server reached across hosts: peer on its socket, and over TCP,
    TLS with a password (SCRAM) or nothing: a plaintext connection matches only the
    `hostnossl ... reject` lines, whatever its address."""
    networks = ["127.0.0.1/32", "::1/128", *([clients] if clients else [])]
    lines = ["local all all peer"]
    lines += [f"hostssl all all {network} scram-sha-256" for network in networks]
    lines += ["hostnossl all all 0.0.0.0/0 reject", "hostnossl all all ::/0 reject"]
    return "\n".join(lines) + "\n"


def _run(command: list[str], stdin: str = "") -> None:
    done = subprocess.run(
        command, input=stdin, text=True, capture_output=True, timeout=300, check=False
    )
    if done.returncode != 0:
        # The tools' own messages; the statements (with passwords) are not echoed.
        raise RuntimeError(f"{Path(command[-1]).name}: {done.stderr.strip()[-2000:]}")


def _create(cfg: MeshConfig, service: str) -> str:
    """The role and database of `service`; its password written to its pgpass (0600)."""
    name, password = role(service), secrets.token_urlsafe(24)
    path = passfile(cfg, service)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{server_host(cfg)}:{cfg.ports.postgres}:{name}:{name}:{password}\n")
    # Single-user mode reads one statement per line; the password is never logged.
    return (
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}'\n"
        f"CREATE DATABASE {name} OWNER {name}\n"
        # Each service reaches its own database only: it reads no other's tables.
        f"REVOKE CONNECT ON DATABASE {name} FROM PUBLIC\n"
    )

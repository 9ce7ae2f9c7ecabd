"""The rate limit counts' Redis on a database host of its own: its user, TLS and URL.

Under `make up` Redis listens on loopback in plain text, as before. Across hosts
(`make hosts-up`) it takes TLS only (no plaintext port at all), with a certificate
from the mesh CA for the database host's address, and one ACL user, `ratelimit`, whose
password is random: the server keeps only its SHA-256 (in a 0600 ACL file), each
rate limit service reads it from a 0600 file its REDIS_URL names (`password_file`),
so it is in no command line, environment or log. The default user is off.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from controlplane.ca import IssuedCertificate, private_dir, write_private
from mesh.config import MeshConfig

USER = "ratelimit"
# The counts' keys (ratelimit/store.py's KEY_PREFIX): the user may touch no others,
# and no command that reaches beyond keys (CONFIG, FLUSHALL, DEBUG, ...: @dangerous).
RULES = "~ratelimit:* resetchannels +@all -@dangerous"


def uses_tls(cfg: MeshConfig) -> bool:
    """Whether Redis is on a host of its own: its clients reach it over a network."""
    return bool(cfg.redis_host)


def folder(cfg: MeshConfig) -> Path:
    """This host's Redis files: the server's certificate, key and ACL file on the
    database host; the user's password file on an app host."""
    return cfg.path("redis")


def password_file(cfg: MeshConfig) -> Path:
    return folder(cfg) / f"{USER}.password"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def provision_server(cfg: MeshConfig, certificate: IssuedCertificate, password: str) -> None:
    """The database host's certificate, key (0600) and ACL file (the hash only)."""
    target = private_dir(folder(cfg))
    digest = hashlib.sha256(password.encode()).hexdigest()
    acl = f"user default off\nuser {USER} on #{digest} {RULES}\n"
    write_private(target / "users.acl", acl.encode())
    write_private(target / "server-key.pem", certificate.key_pem)
    write_private(target / "server.pem", certificate.cert_pem)


def provision_client(cfg: MeshConfig, password: str) -> None:
    """An app host's copy of the password, for its rate limit service (0600)."""
    write_private(private_dir(folder(cfg)) / password_file(cfg).name, password.encode())


def server_args(cfg: MeshConfig) -> str:
    """redis-server's flags for TLS and users; none under `make up` (loopback)."""
    if not uses_tls(cfg):
        return ""
    files = folder(cfg)
    # --port 0: no plaintext listener, so nothing on any host talks to it in clear.
    # Clients authenticate with the password; the TLS is for the server's identity
    # and the channel, so clients need no certificate of their own.
    return (
        f" --port 0 --tls-port {cfg.ports.redis} --tls-cert-file {files / 'server.pem'}"
        f" --tls-key-file {files / 'server-key.pem'} --tls-ca-cert-file {cfg.pki_dir / 'ca.pem'}"
        f" --tls-auth-clients no --tls-protocols TLSv1.3 --aclfile {files / 'users.acl'}"
    )


def client_url(cfg: MeshConfig) -> str:
    """The rate limit service's REDIS_URL: across hosts TLS against the mesh root, the
    address checked, user and password file (ratelimit/store.py reads the file)."""
    host = cfg.redis_host or cfg.advertise_host
    if not uses_tls(cfg):
        return f"redis://{host}:{cfg.ports.redis}/0"
    return (
        f"rediss://{USER}@{host}:{cfg.ports.redis}/0?ssl_ca_certs={cfg.pki_dir / 'ca.pem'}"
        f"&ssl_check_hostname=true&password_file={password_file(cfg)}"
    )

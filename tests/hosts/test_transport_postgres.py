"""PostgreSQL as the database host runs it: TLS only over TCP, with a certificate from
the mesh CA, and services that verify it (sslmode=verify-full against the mesh root).

A real server (`mesh.postgres.prepare` and `server_command`) on loopback, where the
database host's rules apply as on its own address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from sqlalchemy import text

from controlplane.ca import MeshCA, write_private
from mesh import postgres
from mesh.config import MeshConfig
from services.runtime.db import make_engine
from tests.hosts.servers import LOOPBACK, tls_postgres

SERVICE = "booking-svc"


@pytest.fixture(scope="module")
def root() -> MeshCA:
    return MeshCA.create()


@pytest.fixture(scope="module")
def server(root: MeshCA) -> Iterator[MeshConfig]:
    with tls_postgres(root) as cfg:
        yield cfg


def _connect(cfg: MeshConfig, host: str = LOOPBACK, **options: str) -> psycopg.Connection[Any]:
    name = postgres.role(SERVICE)
    conninfo = make_conninfo(
        host=host,
        port=cfg.ports.postgres,
        dbname=name,
        user=name,
        passfile=str(postgres.passfile(cfg, SERVICE)),
        connect_timeout=5,
        **options,
    )
    return psycopg.connect(conninfo)


def test_a_service_url_connects_over_tls_verifying_the_server(server: MeshConfig) -> None:
    url = postgres.database_url(server, SERVICE)
    assert "sslmode=verify-full" in url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            used_tls = conn.execute(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ).scalar_one()
        assert used_tls is True
    finally:
        engine.dispose()


def test_a_plaintext_connection_is_refused(server: MeshConfig) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
        _connect(server, sslmode="disable").close()


def test_a_client_trusting_another_ca_refuses_the_server(
    server: MeshConfig, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    write_private(other, MeshCA.create().cert_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(server, sslmode="verify-full", sslrootcert=str(other)).close()


def test_a_certificate_for_another_address_is_refused(server: MeshConfig) -> None:
    """verify-full checks the name dialled: the certificate names 127.0.0.1 only."""
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        _connect(
            server,
            host="localhost",
            sslmode="verify-full",
            sslrootcert=str(server.pki_dir / "ca.pem"),
        ).close()

"""Redis as the database host runs it for the rate limits: TLS only, one ACL user with
a password from a file, the server's certificate checked against the mesh root.

A real redis-server with `mesh.redis_server`'s flags, on loopback.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from controlplane.ca import MeshCA, write_private
from mesh import redis_server
from mesh.config import MeshConfig
from ratelimit import store
from ratelimit.limits import Algorithm, Limit
from tests.hosts.servers import LOOPBACK, tls_redis

TIMEOUT_SECONDS = 2.0


@pytest.fixture(scope="module")
def root() -> MeshCA:
    return MeshCA.create()


@pytest.fixture(scope="module")
def server(root: MeshCA) -> Iterator[MeshConfig]:
    with tls_redis(root) as cfg:
        yield cfg


def _ping(url: str) -> None:
    client = store.connect(url, TIMEOUT_SECONDS)
    try:
        client.ping()
    finally:
        client.close()


def _tls_url(cfg: MeshConfig, *, user: str = "", ca: Path | None = None, extra: str = "") -> str:
    who = f"{user}@" if user else ""
    return (
        f"rediss://{who}{LOOPBACK}:{cfg.ports.redis}/0"
        f"?ssl_ca_certs={ca or cfg.pki_dir / 'ca.pem'}&ssl_check_hostname=true{extra}"
    )


def test_the_rate_limit_service_url_counts_over_tls(server: MeshConfig) -> None:
    url = redis_server.client_url(server)
    assert url.startswith("rediss://")
    assert "password_file=" in url
    counter = store.Counter(store.connect(url, TIMEOUT_SECONDS))
    try:
        # Sliding: a window that ends between the hits still counts the first two.
        limit = Limit("transport", 2, 3600, Algorithm.SLIDING)
        subject = uuid.uuid4().hex
        counts = [counter.hit("test", subject, limit, 1).allowed for _ in range(3)]
        assert counts == [True, True, False]
    finally:
        counter.close()


def test_a_client_without_the_password_is_refused(server: MeshConfig) -> None:
    with pytest.raises(redis.AuthenticationError):
        _ping(_tls_url(server))


def test_a_client_with_a_wrong_password_is_refused(server: MeshConfig, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    write_private(wrong, redis_server.new_password().encode())
    with pytest.raises(redis.AuthenticationError):
        _ping(_tls_url(server, user=redis_server.USER, extra=f"&password_file={wrong}"))


def test_a_client_trusting_another_ca_refuses_the_server(
    server: MeshConfig, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    write_private(other, MeshCA.create().cert_pem)
    url = _tls_url(
        server,
        user=redis_server.USER,
        ca=other,
        extra=f"&password_file={redis_server.password_file(server)}",
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        _ping(url)


def test_plaintext_is_refused(server: MeshConfig) -> None:
    """No plaintext listener at all: a plain client's first command gets no answer."""
    password = redis_server.password_file(server).read_text()
    client = redis.Redis(
        host=LOOPBACK,
        port=server.ports.redis,
        username=redis_server.USER,
        password=password,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def test_the_user_may_not_reach_beyond_the_counts(server: MeshConfig) -> None:
    client = store.connect(redis_server.client_url(server), TIMEOUT_SECONDS)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()

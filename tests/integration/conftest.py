"""The whole mesh, started once per test session with `python -m mesh up` on free ports.

Tests here talk to it only from outside: REST with httpx, gRPC with the generated
stubs through the edge, and grpcurl against instances found through Consul.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pytest

from mesh.config import Ports
from tests.integration.rest import PASSWORD, Catalogue, bearer, create_user, list_user_ids, sign_in
from tests.support import PREDICT_TIMEOUT_SECONDS, free_ports

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mesh:
    """A running mesh and the ways to reach it."""

    ports: Ports
    env: dict[str, str]
    var_dir: Path
    admin: Account | None = None

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ports.edge}"

    @property
    def consul(self) -> str:
        return f"http://127.0.0.1:{self.ports.consul_http}"

    @property
    def envoy_admin(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    @property
    def pki(self) -> Path:
        """The operator's files `make up` writes: ca.pem, operator.pem, operator-key.pem."""
        return self.var_dir / "pki"

    def token(self, name: str = "operator") -> str:
        """A Consul ACL token `make up` made (`operator` reads; a service's registers it)."""
        return (self.var_dir / "tokens" / f"{name}.token").read_text().strip()

    @property
    def grpcurl_tls(self) -> list[str]:
        """grpcurl's flags for an instance or the mesh listener, as the operator."""
        return [
            "-cacert", str(self.pki / "ca.pem"),
            "-cert", str(self.pki / "operator.pem"),
            "-key", str(self.pki / "operator-key.pem"),
        ]  # fmt: skip

    def client(self, timeout: float = 15, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.edge, timeout=timeout, **kwargs)

    def instances(self, service: str, *, passing: bool = True) -> list[dict[str, Any]]:
        """Consul's view of a service: one entry per instance."""
        query = "?passing=true" if passing else ""
        response = httpx.get(
            f"{self.consul}/v1/health/service/{service}{query}",
            headers={"X-Consul-Token": self.token()},
            timeout=5,
        )
        response.raise_for_status()
        return list(response.json())

    def mesh_command(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", command],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def sign_up(self) -> Account:
        """A new user, signed in through the edge."""
        with self.client() as http:
            return self._sign_up(http)

    def _sign_up(self, http: httpx.Client) -> Account:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        created = http.post(
            "/v1/users", json={"email": email, "password": PASSWORD, "display_name": "Flyer"}
        )
        assert created.status_code == 201, created.text
        tokens = http.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        return Account(created.json(), body["access_token"], body["refresh_token"])


@dataclass(frozen=True)
class Account:
    user: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


@contextmanager
def running_mesh(var_dir: Path, **overrides: str) -> Iterator[Mesh]:
    """A whole mesh on free ports, up with `python -m mesh up`, always brought down."""
    names = [f.name for f in fields(Ports)]
    ports = Ports(**dict(zip(names, free_ports(len(names)), strict=True)))
    env = {
        **os.environ,
        **{f"{name.upper()}_PORT": str(getattr(ports, name)) for name in names},
        "MESH_VAR_DIR": str(var_dir),
        "BCRYPT_COST": "4",
        "PREDICT_TRAIN_ROWS": "20000",
        "BOOKING_SEED_DAYS": "2",
        "TOKEN_RATE_LIMIT": "1000",
        # Sign-ups are limited per client address too, and every test signs up
        # from 127.0.0.1 (crowd alone creates 101 users).
        "SIGNUP_RATE_LIMIT": "1000",
        "CHECK_INTERVAL_SECONDS": "1",
        # Bookings are expected to carry a delay risk (see PREDICT_TIMEOUT_SECONDS).
        "PREDICT_TIMEOUT_SECONDS": str(PREDICT_TIMEOUT_SECONDS),
        **overrides,
    }
    found = Mesh(ports, env, var_dir)
    try:
        started = found.mesh_command("up")
        assert started.returncode == 0, started.stdout + started.stderr
        yield found
    finally:
        stopped = found.mesh_command("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("mesh")) as found:
        found.admin = found.sign_up()  # the first user of fresh databases: an admin
        yield found


@pytest.fixture(scope="module")
def admin(mesh: Mesh) -> Account:
    """The first (admin) user, signed in afresh per module: access tokens live 15 minutes."""
    assert mesh.admin is not None
    assert "admin" in mesh.admin.user["roles"]
    with mesh.client() as http:
        tokens = http.post(
            "/v1/auth/token", json={"email": mesh.admin.user["email"], "password": PASSWORD}
        )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Account(mesh.admin.user, body["access_token"], body["refresh_token"])


# --- REST clients and accounts, shared by the test_rest_* modules --------------------------


@pytest.fixture
def http(mesh: Mesh) -> Iterator[httpx.Client]:
    with mesh.client() as client:
        yield client


@pytest.fixture
def flyer(mesh: Mesh) -> Account:
    """A new user without the admin role, signed in."""
    return mesh.sign_up()


@pytest.fixture
def user(mesh: Mesh) -> Account:
    return mesh.sign_up()


@pytest.fixture
def other_user(mesh: Mesh) -> Account:
    return mesh.sign_up()


@pytest.fixture(scope="module")
def admin_headers(mesh: Mesh, admin: Account) -> dict[str, str]:
    """A fresh admin access token: the session's may be older than its 15 minutes."""
    with mesh.client() as http:
        return bearer(sign_in(http, admin.user["email"])["access_token"])


@pytest.fixture(scope="module")
def crowd(mesh: Mesh, admin_headers: dict[str, str]) -> int:
    """At least 101 users exist, so that a page of 100 is not the last; their count."""
    with mesh.client() as http:
        count = len(list_user_ids(http, admin_headers))
        for _ in range(101 - count):
            assert create_user(http).status_code == 201
        return max(count, 101)


@pytest.fixture
def catalogue(http: httpx.Client, admin: Account) -> Catalogue:
    return Catalogue(http, admin)

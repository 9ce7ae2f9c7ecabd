"""A whole mesh for a benchmark run: `python -m mesh up` on free ports in a temporary
state folder, `mesh down` whatever happens; its instances as Consul sees them, and a
signed-in user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from mesh.config import ROOT, Ports


@dataclass(frozen=True)
class Mesh:
    """A running mesh, by its ports on loopback, and its state folder."""

    ports: Ports
    var_dir: Path

    def instances(self, service: str, *, passing: bool) -> list[dict[str, Any]]:
        """Consul's instances of `service` (only healthy ones if `passing`)."""
        query = "?passing=true" if passing else ""
        url = f"http://127.0.0.1:{self.ports.consul_http}/v1/health/service/{service}{query}"
        # Consul runs with ACLs (default deny): anonymous reads see no instances.
        token = (self.var_dir / "tokens" / "operator.token").read_text().strip()
        answer = httpx.get(url, headers={"X-Consul-Token": token}, timeout=5)
        return [entry["Service"] for entry in answer.raise_for_status().json()]


@contextmanager
def running_mesh(booking_instances: int, extra_env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """`python -m mesh up` on free ports in a temporary folder; `mesh down` whatever happens."""
    names = [f.name for f in fields(Ports)]
    ports = Ports(**dict(zip(names, free_ports(len(names)), strict=True)))
    var_dir = tempfile.mkdtemp(prefix="airline-bench-")
    env = {
        **os.environ,
        **{f"{name.upper()}_PORT": str(getattr(ports, name)) for name in names},
        "MESH_VAR_DIR": var_dir,
        "BOOKING_SVC_INSTANCES": str(booking_instances),
        **(extra_env or {}),
    }
    try:
        print(f"mesh up in {var_dir} ...", flush=True)
        mesh_command("up", env)
        yield Mesh(ports, Path(var_dir))
    finally:
        mesh_command("down", env)
        shutil.rmtree(var_dir, ignore_errors=True)


def mesh_command(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mesh", command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mesh {command} failed:\n{done.stdout}{done.stderr}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def sign_in(http: httpx.Client) -> str:
    """A new user's access token (the first user of the fresh databases is an admin)."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    password = uuid.uuid4().hex
    user = {"email": email, "password": password, "display_name": "Bench"}
    http.post("/v1/users", json=user).raise_for_status()
    tokens = http.post("/v1/auth/token", json={"email": email, "password": password})
    return str(tokens.raise_for_status().json()["access_token"])


def load_average() -> str:
    """The machine's load, which says how much else competed for the cores."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"

"""A real Consul agent for tests (`consul agent -dev` on free ports), and a control plane
configuration that watches it quickly.

Shared by the controlplane, trust and hosts tests; each starts its own agent and stops
it by its PID. A test needing Consul skips, saying why, only when no binary exists.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.app import ControlPlane
from controlplane.config import ControlPlaneConfig
from tests.support import free_ports, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[1]
AGENT_CONFIG = ROOT / "consul" / "agent.hcl"


def find_consul() -> str | None:
    """The project's Consul (.tools/bin, scripts/install-consul.sh), else one on PATH."""
    installed = ROOT / ".tools" / "bin" / "consul"
    if installed.is_file() and os.access(installed, os.X_OK):
        return str(installed)
    return shutil.which("consul")


def require_consul() -> str:
    """The Consul binary; skips the test, saying how to install one, when there is none."""
    binary = find_consul()
    if binary is None:
        pytest.skip("no consul binary in .tools/bin or on PATH: run scripts/install-consul.sh")
    return binary


@dataclass
class ConsulAgent:
    """`consul agent -dev` with the repo's agent.hcl, every port moved to a free one."""

    binary: str
    workdir: Path
    ports: list[int] = field(default_factory=lambda: free_ports(5))
    process: subprocess.Popen[bytes] | None = None
    # More -config-file arguments (consul/acl.hcl for ACLs on).
    extra_config: tuple[Path, ...] = ()

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        http, dns, server, serf_lan, serf_wan = self.ports
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary, "agent", "-dev", f"-config-file={AGENT_CONFIG}",
            f"-data-dir={data_dir}", f"-http-port={http}", f"-dns-port={dns}",
            f"-server-port={server}", f"-serf-lan-port={serf_lan}",
            f"-serf-wan-port={serf_wan}",
            *(f"-config-file={path}" for path in self.extra_config),
        ]  # fmt: skip
        with (self.workdir / "consul.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._has_leader, f"consul at {self.http_addr} to elect itself", 60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def _has_leader(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "consul.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"consul exited with {self.process.returncode}:\n{log}")
        try:
            answer = httpx.get(f"http://{self.http_addr}/v1/status/leader", timeout=1.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.json() != ""

    def register(self, name: str, instance_id: str, port: int, *, checked: bool = True) -> None:
        """Registers an instance with Consul's native gRPC health check, every second.

        `checked=False` registers it with no check (passing), for instances that speak
        mutual TLS, which the agent's plaintext gRPC check cannot.
        """
        body: dict[str, Any] = {
            "ID": instance_id,
            "Name": name,
            "Address": "127.0.0.1",
            "Port": port,
            "Tags": ["grpc"],
        }
        if checked:
            body["Check"] = {"GRPC": f"127.0.0.1:{port}", "Interval": "1s", "Timeout": "1s"}
        self._put("/v1/agent/service/register", body)

    def deregister(self, instance_id: str) -> None:
        self._put(f"/v1/agent/service/deregister/{instance_id}", None)

    def _put(self, path: str, body: dict[str, Any] | None) -> None:
        answer = httpx.put(f"http://{self.http_addr}{path}", json=body, timeout=5.0)
        answer.raise_for_status()


def control_plane_config(consul_addr: str, **overrides: Any) -> ControlPlaneConfig:
    """Quick to notice and quick to stop: one-second blocking queries, short backoff.

    ADS on a socket of its own (never the repo's var/, where a developer's mesh may run),
    made only if the control plane is started; fixtures that start one pass `xds_socket`
    under their temporary folder.
    """
    fields: dict[str, Any] = {
        "consul_addr": consul_addr,
        "xds_socket": Path(tempfile.gettempdir()) / f"xds-{secrets.token_hex(6)}" / "ads.sock",
        "wait_seconds": 1.0,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "grace_seconds": 0.5,
    }
    fields.update(overrides)
    return ControlPlaneConfig(**fields)


@contextmanager
def running_control_plane(consul_addr: str, **overrides: Any) -> Iterator[ControlPlane]:
    """An in-process control plane with `control_plane_config`, stopped also on failure."""
    plane = ControlPlane(control_plane_config(consul_addr, **overrides))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop(watcher_timeout=5.0)

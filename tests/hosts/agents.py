"""Consul agents as `mesh.hosts` configures them (consul/server.hcl or client.hcl, and
the host's TLS file from `consul_certificate` and `consul_transport`), on loopback with
every port free, each in a folder of its own; stopped by PID. An agent's "host address"
(where it serves HTTPS to other machines) is 127.0.0.2 by default: apart from its plain
HTTP API on 127.0.0.1, as a host's address is apart from its loopback."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from controlplane.ca import MeshCA, write_credentials, write_private
from mesh import supervisord
from mesh.config import ROOT, MeshConfig, Ports
from mesh.hosts import consul_certificate, consul_transport
from tests.support import free_ports, wait_for

LOOPBACK = "127.0.0.1"
HOST_ADDRESS = "127.0.0.2"


def tls_file(
    folder: Path,
    *,
    server: bool,
    gossip_key: str | None,
    root: MeshCA | None,
    https_port: int | None = None,
) -> Path:
    """The agent's TLS file: as `mesh.hosts` writes it when `root` (the CA to take the
    agent's certificate from) is given, its HTTPS API on HOST_ADDRESS:`https_port`; the
    gossip key alone when it is not."""
    ports = Ports(consul_https=https_port or free_ports(1)[0])
    cfg = MeshConfig(var_dir=folder, advertise_host=HOST_ADDRESS, consul_server=server, ports=ports)
    text = ""
    if root is not None:
        write_credentials(consul_certificate(root, cfg), cfg.pki_dir / "consul")
        text += supervisord.consul_tls(cfg)
    if gossip_key is not None and root is not None:
        text += consul_transport(gossip_key, cfg)
    elif gossip_key is not None:
        text += f'encrypt = "{gossip_key}"\n'
    path = folder / "consul-tls.hcl"
    write_private(path, text.encode())
    return path


def configured(
    binary: str,
    folder: Path,
    name: str,
    *,
    server: bool,
    gossip_key: str | None,
    root: MeshCA | None,
    join: str = "",
) -> Agent:
    """An agent (not started) with its TLS file, its HTTPS API on one of its free ports."""
    ports = free_ports(6)
    tls = tls_file(folder, server=server, gossip_key=gossip_key, root=root, https_port=ports[5])
    return Agent(binary, folder, name, server=server, tls=tls, join=join, ports=ports)


@dataclass
class Agent:
    binary: str
    folder: Path
    name: str
    server: bool
    tls: Path
    join: str = ""
    # http, dns, server, serf_lan, serf_wan, https (the one `configured` gave tls_file).
    ports: list[int] = field(default_factory=lambda: free_ports(6))
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_addr(self) -> str:
        return f"{LOOPBACK}:{self.ports[0]}"

    @property
    def https_url(self) -> str:
        """Its HTTPS API on its "host address", as another host's clients reach it."""
        return f"https://{HOST_ADDRESS}:{self.ports[5]}"

    @property
    def serf_addr(self) -> str:
        return f"{LOOPBACK}:{self.ports[3]}"

    @property
    def log(self) -> Path:
        return self.folder / "consul.log"

    def start(self) -> None:
        http, dns, server, serf_lan, serf_wan, _https = self.ports
        role = "server.hcl" if self.server else "client.hcl"
        command = [
            self.binary, "agent", f"-config-file={ROOT / 'consul' / role}",
            f"-config-file={self.tls}", f"-node={self.name}", f"-bind={LOOPBACK}",
            f"-client={LOOPBACK}", f"-data-dir={self.folder / 'data'}",
            f"-http-port={http}", f"-dns-port={dns}", f"-server-port={server}",
            f"-serf-lan-port={serf_lan}", f"-serf-wan-port={serf_wan}",
        ]  # fmt: skip
        if self.server:
            command.append("-bootstrap-expect=1")
        if self.join:
            # -join (not -retry-join): an agent that cannot join at start exits, saying why.
            command.append(f"-join={self.join}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.http_addr}{path}", timeout=5)

    def answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            pytest.fail(f"consul {self.name} exited with {self.process.returncode}:\n{tail}")
        try:
            return self.get("/v1/agent/self").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_for_leader(self) -> None:
        def elected() -> bool:
            return self.answers() and self.get("/v1/status/leader").json() != ""

        wait_for(elected, f"consul {self.name} to elect a leader", 30)

    def members(self) -> dict[str, int]:
        """Serf's view from this agent: member name -> status (1 alive)."""
        return {m["Name"]: m["Status"] for m in self.get("/v1/agent/members").json()}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

"""Consul across hosts: gossip encrypted with the cluster's key, RPC over TLS with
certificates from the mesh CA (verify_incoming, verify_outgoing, verify_server_hostname).

Real Consul 1.8 agents configured as `mesh.hosts` configures them: one server, and
agents that try to join it with or without the key and a mesh certificate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.ca import MeshCA
from mesh.hosts import new_gossip_key
from tests.controlplane.conftest import find_consul
from tests.hosts.agents import Agent, tls_file
from tests.support import wait_for


@pytest.fixture(scope="module")
def binary() -> str:
    found = find_consul()
    if found is None:
        pytest.skip("no consul binary in .tools/bin or on PATH: run scripts/install-consul.sh")
    return found


@pytest.fixture(scope="module")
def root() -> MeshCA:
    return MeshCA.create()


@pytest.fixture(scope="module")
def gossip_key() -> str:
    return new_gossip_key()


@pytest.fixture(scope="module")
def server(
    binary: str, root: MeshCA, gossip_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agent]:
    folder = tmp_path_factory.mktemp("consul-server")
    tls = tls_file(folder, server=True, gossip_key=gossip_key, root=root)
    agent = Agent(binary, folder, "server-1", server=True, tls=tls)
    agent.start()
    try:
        agent.wait_for_leader()
        yield agent
    finally:
        agent.stop()


def _client(
    binary: str, folder: Path, name: str, server: Agent, gossip_key: str | None, root: MeshCA | None
) -> Agent:
    tls = tls_file(folder, server=False, gossip_key=gossip_key, root=root)
    agent = Agent(binary, folder, name, server=False, tls=tls, join=server.serf_addr)
    agent.start()
    return agent


def test_an_agent_with_the_key_and_a_mesh_certificate_joins_and_reads_over_rpc(
    binary: str, server: Agent, root: MeshCA, gossip_key: str, tmp_path: Path
) -> None:
    agent = _client(binary, tmp_path, "client-ok", server, gossip_key, root)
    try:
        wait_for(agent.answers, "the agent to start", 30)

        def nodes() -> set[str] | None:
            answer = agent.get("/v1/catalog/nodes")  # served by the server, over RPC
            names = {n["Node"] for n in answer.json()} if answer.status_code == 200 else set()
            return names if names >= {"server-1", "client-ok"} else None

        wait_for(nodes, "the catalog, read through the agent, to list both nodes", 30)
    finally:
        agent.stop()


@pytest.mark.parametrize("key", ["none", "another"])
def test_an_agent_without_the_gossip_key_cannot_join(
    binary: str, server: Agent, root: MeshCA, tmp_path: Path, key: str
) -> None:
    gossip_key = new_gossip_key() if key == "another" else None
    name = f"client-{key}-key"
    agent = _client(binary, tmp_path, name, server, gossip_key, root)
    try:
        process = agent.process
        assert process is not None
        wait_for(lambda: process.poll() is not None, "the agent to give up joining", 60)
        assert process.returncode != 0
        assert "Failed to join" in agent.log.read_text(errors="replace")
        assert name not in server.members()
    finally:
        agent.stop()


@pytest.mark.parametrize("certificate", ["none", "another-ca"])
def test_an_agent_without_a_mesh_certificate_cannot_use_rpc(
    binary: str, server: Agent, gossip_key: str, tmp_path: Path, certificate: str
) -> None:
    """It has the gossip key, so it joins; its requests to the server are refused."""
    other = MeshCA.create() if certificate == "another-ca" else None
    name = f"client-{certificate}"
    agent = _client(binary, tmp_path, name, server, gossip_key, other)
    try:
        wait_for(agent.answers, "the agent to start", 30)
        wait_for(lambda: server.members().get(name) == 1, "the agent to join the gossip", 30)
        wait_for(lambda: agent.members().get("server-1") == 1, "the agent to see the server", 30)
        answer = agent.get("/v1/catalog/nodes")
        assert answer.status_code == 500
        # It knew the server and tried: the connection itself was refused (the server
        # closes a plaintext one; a certificate of another CA fails the handshake).
        assert answer.text.startswith("rpc error"), answer.text
    finally:
        agent.stop()


def test_a_server_whose_certificate_does_not_name_a_consul_server_is_refused(
    binary: str, root: MeshCA, gossip_key: str, tmp_path: Path
) -> None:
    """verify_server_hostname: an agent with a mesh certificate (a client's) that runs
    as a server gets no RPC from agents: its certificate lacks server.dc1.consul."""
    rogue_dir, client_dir = tmp_path / "rogue", tmp_path / "client"
    rogue_dir.mkdir()
    client_dir.mkdir()
    tls = tls_file(rogue_dir, server=False, gossip_key=gossip_key, root=root)
    rogue = Agent(binary, rogue_dir, "rogue-server", server=True, tls=tls)
    rogue.start()
    agent: Agent | None = None
    try:
        rogue.wait_for_leader()
        agent = _client(binary, client_dir, "client-of-rogue", rogue, gossip_key, root)
        joined = agent
        wait_for(joined.answers, "the agent to start", 30)
        wait_for(lambda: joined.members().get("rogue-server") == 1, "the agent to join", 30)
        answer = agent.get("/v1/catalog/nodes")
        assert answer.status_code == 500
        assert "server.dc1.consul" in answer.text, answer.text
    finally:
        if agent is not None:
            agent.stop()
        rogue.stop()

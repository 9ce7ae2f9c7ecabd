"""Consul across hosts: gossip encrypted with the cluster's key, RPC over TLS with
certificates from the mesh CA (verify_incoming, verify_outgoing, verify_server_hostname),
and the HTTP API plain on loopback only, HTTPS with a mesh client certificate elsewhere
(verify_incoming_https), which the control plane and the ACL bootstrap use.

Real Consul 1.8 agents configured as `mesh.hosts` configures them: one server, and
agents that try to join it with or without the key and a mesh certificate.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.ca import MeshCA, write_credentials
from controlplane.config import ControlPlaneConfig
from controlplane.consul import ConsulClient, ConsulUnavailable, ConsulWatcher, consul_tls_context
from mesh import acl
from mesh.hosts import PROVISIONER, new_gossip_key
from services.runtime.identity import CredentialFiles
from tests.consul import control_plane_config, find_consul
from tests.hosts.agents import HOST_ADDRESS, Agent, configured, tls_file
from tests.support import free_ports, wait_for


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
    agent = configured(binary, folder, "server-1", server=True, gossip_key=gossip_key, root=root)
    agent.start()
    try:
        agent.wait_for_leader()
        yield agent
    finally:
        agent.stop()


def _client(
    binary: str, folder: Path, name: str, server: Agent, gossip_key: str | None, root: MeshCA | None
) -> Agent:
    agent = configured(
        binary, folder, name, server=False, gossip_key=gossip_key, root=root, join=server.serf_addr
    )
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
    ports = free_ports(6)
    tls = tls_file(rogue_dir, server=False, gossip_key=gossip_key, root=root, https_port=ports[5])
    rogue = Agent(binary, rogue_dir, "rogue-server", server=True, tls=tls, ports=ports)
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


# The HTTP API across hosts: plain HTTP on loopback only, HTTPS with a mesh certificate.


@pytest.fixture(scope="module")
def mesh_client(root: MeshCA, tmp_path_factory: pytest.TempPathFactory) -> CredentialFiles:
    """A client certificate from the mesh CA (the provisioner's kind: no service policy)."""
    folder = tmp_path_factory.mktemp("consul-client")
    return write_credentials(root.issue(PROVISIONER), folder)


def _https(server: Agent, context: ssl.SSLContext, path: str) -> httpx.Response:
    with httpx.Client(verify=context, timeout=5) as http:
        return http.get(f"{server.https_url}{path}")


def test_plain_http_on_the_host_address_is_refused(server: Agent) -> None:
    """The agent's plain HTTP API binds loopback only: at its host address, nothing."""
    assert server.get("/v1/status/leader").status_code == 200  # on loopback: there
    http_port = server.ports[0]
    with pytest.raises(httpx.ConnectError, match="refused"):
        httpx.get(f"http://{HOST_ADDRESS}:{http_port}/v1/status/leader", timeout=5)


def test_https_with_a_mesh_certificate_answers(server: Agent, mesh_client: CredentialFiles) -> None:
    """The agent's certificate is checked too: against the mesh CA and the address."""
    context = consul_tls_context(mesh_client.ca, mesh_client.cert, mesh_client.key)
    answer = _https(server, context, "/v1/status/leader")
    assert answer.status_code == 200
    assert answer.json() != ""


def test_https_without_a_client_certificate_is_refused(
    server: Agent, mesh_client: CredentialFiles
) -> None:
    context = ssl.create_default_context(cafile=str(mesh_client.ca))
    with pytest.raises(httpx.TransportError) as refused:
        _https(server, context, "/v1/status/leader")
    assert "CERTIFICATE_REQUIRED" in str(refused.value) or "bad certificate" in str(
        refused.value
    ), refused.value


def test_https_with_another_cas_certificate_is_refused(
    server: Agent, mesh_client: CredentialFiles, tmp_path: Path
) -> None:
    other = write_credentials(MeshCA.create().issue(PROVISIONER), tmp_path / "other")
    context = ssl.create_default_context(cafile=str(mesh_client.ca))
    context.load_cert_chain(str(other.cert), str(other.key))
    with pytest.raises(httpx.TransportError):
        _https(server, context, "/v1/status/leader")


def test_the_acl_bootstrap_speaks_https_to_another_hosts_agent(
    server: Agent, mesh_client: CredentialFiles
) -> None:
    """mesh/acl.py's calls go to an `Endpoint`: HTTPS with the mesh CA and certificate."""
    context = consul_tls_context(mesh_client.ca, mesh_client.cert, mesh_client.key)
    acl.wait_for_leader(acl.Endpoint(server.https_url, context), timeout=10)
    with pytest.raises(acl.AclError):
        acl.wait_for_leader(f"{HOST_ADDRESS}:{server.ports[0]}", timeout=1)


def _https_config(server: Agent, tls: CredentialFiles, **overrides: object) -> ControlPlaneConfig:
    dead = f"127.0.0.1:{free_ports(1)[0]}"  # the local agent, killed
    return control_plane_config(
        dead,
        consul_addrs=(dead, server.https_url),
        consul_ca_file=tls.ca,
        consul_cert_file=tls.cert,
        consul_key_file=tls.key,
        **overrides,
    )


def test_control_plane_falls_back_to_another_hosts_agent_over_https(
    server: Agent, mesh_client: CredentialFiles
) -> None:
    client = ConsulClient(_https_config(server, mesh_client))
    try:
        services, index = client.get("/v1/catalog/services", 0)
        assert "consul" in services
        assert index > 0
        assert client.agent == server.https_url
    finally:
        client.close()


def test_control_plane_without_a_mesh_certificate_gets_nothing_from_another_host(
    server: Agent, mesh_client: CredentialFiles, tmp_path: Path
) -> None:
    other = write_credentials(MeshCA.create().issue(PROVISIONER), tmp_path / "other")
    tls = CredentialFiles(cert=other.cert, key=other.key, ca=mesh_client.ca)
    client = ConsulClient(_https_config(server, tls))
    try:
        with pytest.raises(ConsulUnavailable):
            client.get("/v1/catalog/services", 0)
    finally:
        client.close()


def test_watcher_publishes_instances_through_another_hosts_agent_over_https(
    server: Agent, mesh_client: CredentialFiles
) -> None:
    """The local agent is dead: the view still comes, over HTTPS from the next agent."""
    name = "hosts-https-fallback"
    body = {"ID": f"{name}-1", "Name": name, "Address": "127.0.0.1", "Port": 50053}
    registered = httpx.put(f"http://{server.http_addr}/v1/agent/service/register", json=body)
    assert registered.status_code == 200, registered.text
    views: list[dict[str, object]] = []
    watcher = ConsulWatcher(_https_config(server, mesh_client), lambda v: views.append(dict(v)))
    watcher.start()
    try:
        wait_for(lambda: any(view.get(name) for view in views), "a view with the instance", 30)
    finally:
        watcher.stop(timeout=5.0)
        httpx.put(f"http://{server.http_addr}/v1/agent/service/deregister/{name}-1")

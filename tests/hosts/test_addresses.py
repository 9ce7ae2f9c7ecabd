"""Addresses for more than one machine: bind apart from advertise, cluster-unique
instance ids, and a control plane that asks the next Consul agent when one is gone.

Against a real Consul agent (tests/consul.py's `consul agent -dev`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.config import ConfigError as ControlPlaneConfigError
from controlplane.config import ControlPlaneConfig
from controlplane.consul import ConsulClient, ConsulUnavailable, ConsulWatcher
from services.runtime.config import ConfigError, ServerConfig
from services.runtime.registration import ConsulRegistrar
from tests.consul import ConsulAgent, control_plane_config, require_consul
from tests.support import free_ports, wait_for


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    binary = require_consul()
    started = ConsulAgent(binary, tmp_path_factory.mktemp("consul-hosts"))
    started.start()
    try:
        yield started
    finally:
        started.stop()


def _dead_addr() -> str:
    """An address where nothing listens (a host whose agent was killed)."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_server_binds_wildcard_and_advertises_its_host_address() -> None:
    env = {"GRPC_HOST": "0.0.0.0", "GRPC_ADVERTISE_HOST": "198.18.0.11", "CONSUL_HTTP_ADDR": "x:1"}
    config = ServerConfig.from_env("user-svc", env)
    assert (config.host, config.advertise_host) == ("0.0.0.0", "198.18.0.11")


def test_advertised_address_defaults_to_the_bind_address() -> None:
    config = ServerConfig.from_env("user-svc", {"GRPC_HOST": "198.18.0.12"})
    assert config.advertise_host == "198.18.0.12"


def test_wildcard_bind_without_advertised_address_refuses_to_register() -> None:
    with pytest.raises(ConfigError, match="GRPC_ADVERTISE_HOST"):
        ServerConfig.from_env("user-svc", {"GRPC_HOST": "0.0.0.0", "CONSUL_HTTP_ADDR": "x:1"})


def test_instances_on_two_hosts_with_the_same_port_register_apart(agent: ConsulAgent) -> None:
    """Ids from the advertised address: two hosts' instances on one port never collide."""
    name = "hosts-ids"
    registrars = [
        ConsulRegistrar(agent.http_addr, name, address, "grpc.health.v1.Health", "1")
        for address in ("198.18.0.11", "198.18.0.12")
    ]
    for registrar in registrars:
        registrar.register(port=50051, metrics_port=9100)
    try:
        ids = wait_for(
            lambda: _ids(agent, name) if len(_ids(agent, name)) == 2 else None,
            "both instances in the catalog",
        )
        assert ids == {"hosts-ids-198.18.0.11-50051", "hosts-ids-198.18.0.12-50051"}
    finally:
        for registrar in registrars:
            registrar.deregister()


def _ids(agent: ConsulAgent, name: str) -> set[str]:
    answer = httpx.get(f"http://{agent.http_addr}/v1/catalog/service/{name}", timeout=2)
    return {entry["ServiceID"] for entry in answer.json()}


def test_control_plane_reads_consul_addresses_in_order() -> None:
    env = {"CONSUL_HTTP_ADDRS": "http://127.0.0.1:8500, 127.0.0.2:8500,127.0.0.1:8500"}
    config = ControlPlaneConfig.from_env(env)
    assert config.consul_agents == ("http://127.0.0.1:8500", "http://127.0.0.2:8500")
    assert config.consul_addr == "127.0.0.1:8500"


def test_control_plane_without_a_list_uses_its_one_address() -> None:
    config = ControlPlaneConfig.from_env({"CONSUL_HTTP_ADDR": "127.0.0.1:8500"})
    assert config.consul_agents == ("http://127.0.0.1:8500",)


def test_an_empty_consul_list_is_refused() -> None:
    with pytest.raises(ControlPlaneConfigError):
        ControlPlaneConfig.from_env({"CONSUL_HTTP_ADDRS": " , "})


def test_client_falls_back_to_the_second_agent_when_the_first_is_dead(
    agent: ConsulAgent,
) -> None:
    config = control_plane_config(agent.http_addr, consul_addrs=(_dead_addr(), agent.http_addr))
    client = ConsulClient(config)
    try:
        services, index = client.get("/v1/catalog/services", 0)
        assert "consul" in services
        assert index > 0
        assert client.agent == f"http://{agent.http_addr}"
    finally:
        client.close()


def test_client_with_every_agent_dead_says_so() -> None:
    config = control_plane_config(_dead_addr(), consul_addrs=(_dead_addr(), _dead_addr()))
    client = ConsulClient(config)
    try:
        with pytest.raises(ConsulUnavailable):
            client.get("/v1/catalog/services", 0)
    finally:
        client.close()


def test_watcher_publishes_instances_through_the_second_agent(
    agent: ConsulAgent, tmp_path: Path
) -> None:
    """The local agent is dead: the view still comes, from the next agent in the list."""
    name = "hosts-fallback"
    agent.register(name, f"{name}-1", 50052, checked=False)
    views: list[dict[str, object]] = []
    config = control_plane_config(agent.http_addr, consul_addrs=(_dead_addr(), agent.http_addr))
    watcher = ConsulWatcher(config, lambda view: views.append(dict(view)))
    watcher.start()
    try:
        wait_for(lambda: any(view.get(name) for view in views), "a view with the instance")
    finally:
        watcher.stop(timeout=5.0)
        agent.deregister(f"{name}-1")

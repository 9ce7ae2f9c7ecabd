"""What `mesh.hosts` plans and renders for each host, without making any namespace."""

from __future__ import annotations

import base64
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.ca import MeshCA
from mesh import supervisord
from mesh.config import MeshConfig
from mesh.hosts import (
    CONSUL_SERVER_NAME,
    HostsConfig,
    consul_certificate,
    consul_transport,
    new_gossip_key,
)
from services.runtime.config import ConfigError


def _config(tmp_path: Path, **env: str) -> HostsConfig:
    return HostsConfig.from_env({"MESH_VAR_DIR": str(tmp_path), **env})


def test_three_app_hosts_and_a_database_host_on_their_own_addresses(tmp_path: Path) -> None:
    hosts = _config(tmp_path).plan()
    assert [h.name for h in hosts] == ["db", "host-1", "host-2", "host-3"]
    assert [h.address for h in hosts] == ["198.18.0.2", "198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert len({h.cfg.var_dir for h in hosts}) == 4  # a state folder each, none shared
    assert all(h.netns.startswith("airline-") for h in hosts)


def test_every_app_host_joins_the_other_servers_and_asks_its_own_agent_first(
    tmp_path: Path,
) -> None:
    apps = [h for h in _config(tmp_path).plan() if h.is_app]
    for host in apps:
        others = {a.address for a in apps} - {host.address}
        assert set(host.cfg.consul_join) == others
        # Its own agent over plain HTTP on loopback; the others over HTTPS only.
        assert host.cfg.consul_addrs == (
            "http://127.0.0.1:8500",
            *(f"https://{a.address}:8501" for a in apps if a is not host),
        )


def test_an_agent_serves_plain_http_on_loopback_and_https_on_its_address(
    tmp_path: Path,
) -> None:
    """The TLS file of every host: HTTP bound to loopback, HTTPS to the host's address,
    with client certificates required; its certificate names that address."""
    root = MeshCA.create()
    for host in _config(tmp_path).plan():
        text = consul_transport(new_gossip_key(), host.cfg)
        assert 'http  = "127.0.0.1"' in text
        assert f'https = "{host.address}"' in text
        assert "https = 8501" in text
        assert "verify_incoming_https = true" in text
        cert = x509.load_pem_x509_certificate(consul_certificate(root, host.cfg).cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.IPAddress) == [IPv4Address(host.address)]


def test_the_control_plane_reads_other_agents_with_its_hosts_consul_certificate(
    tmp_path: Path,
) -> None:
    host = _config(tmp_path).plan()[1]
    text = supervisord.render_app_host(host.cfg)
    consul = host.cfg.pki_dir / "consul"
    assert 'CONSUL_HTTP_ADDR="127.0.0.1:8500"' in text
    assert f'CONSUL_CACERT="{consul / "ca.pem"}"' in text
    assert f'CONSUL_CLIENT_CERT="{consul / "consul-health.pem"}"' in text
    assert f'CONSUL_CLIENT_KEY="{consul / "consul-health-key.pem"}"' in text
    assert f"{host.address}:8500" not in text  # no plain HTTP to an agent's address


def test_app_host_binds_all_and_advertises_its_address(tmp_path: Path) -> None:
    host = _config(tmp_path).plan()[1]
    text = supervisord.render_app_host(host.cfg)
    assert 'GRPC_HOST="0.0.0.0"' in text
    assert f'GRPC_ADVERTISE_HOST="{host.address}"' in text
    assert f'MESH_CA_ADDR="{host.address}:18001"' in text
    assert 'MESH_CA_BIND_ADDR="0.0.0.0:18001"' in text
    assert "server.hcl" in text
    assert "-bootstrap-expect" not in text
    assert f"-bind={host.address}" in text
    assert text.count("-retry-join=") == 2
    # The database is on the database host, Redis too.
    assert "@198.18.0.2:15432/" in text
    # ... reached over TLS only, against the mesh root, with a password from a file.
    assert "sslmode=verify-full" in text
    assert "rediss://ratelimit@198.18.0.2:6380/0?" in text
    assert "password_file=" in text
    # Host-local listeners stay on loopback.
    assert 'GRPC_HOST="127.0.0.1"' in text  # the rate limit service


def test_database_host_runs_a_consul_client_postgres_and_redis(tmp_path: Path) -> None:
    db = _config(tmp_path).plan()[0]
    text = supervisord.render_database_host(db.cfg)
    assert "client.hcl" in text
    assert "[program:postgres]" in text
    assert "[program:redis]" in text
    assert "listen_addresses=198.18.0.2" in text
    assert "services." not in text


def test_fewer_than_three_app_hosts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _config(tmp_path, HOSTS="2")


def test_a_prefix_that_would_not_fit_an_interface_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HOSTS_PREFIX"):
        _config(tmp_path, HOSTS_PREFIX="far-too-long-prefix")


def test_only_a_server_agent_certificate_names_a_consul_server(tmp_path: Path) -> None:
    """verify_server_hostname: a client agent's certificate cannot pass for a server's."""
    root = MeshCA.create()
    db, app = _config(tmp_path).plan()[:2]

    def dns_names(cfg: MeshConfig) -> list[str]:
        cert = x509.load_pem_x509_certificate(consul_certificate(root, cfg).cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return sans.get_values_for_type(x509.DNSName)

    assert dns_names(app.cfg) == [CONSUL_SERVER_NAME]
    assert dns_names(db.cfg) == []


def test_the_gossip_key_is_32_random_bytes() -> None:
    keys = {new_gossip_key() for _ in range(2)}
    assert len(keys) == 2
    assert all(len(base64.b64decode(key)) == 32 for key in keys)

"""The control plane's configuration from the environment."""

import dataclasses
from pathlib import Path

import pytest

from controlplane.config import ROOT, ConfigError, ControlPlaneConfig, xds_socket


def test_defaults_match_the_documented_addresses() -> None:
    config = ControlPlaneConfig.from_env({})
    assert config.consul_addr == "127.0.0.1:8500"
    assert config.xds_socket == ROOT / "var" / "xds" / "ads.sock"
    assert config.exclude == frozenset({"consul"})
    assert config.required == frozenset()


def test_environment_overrides_the_defaults() -> None:
    config = ControlPlaneConfig.from_env(
        {
            "CONSUL_HTTP_ADDR": "http://10.0.0.5:8500/",
            "XDS_SOCKET": "/run/airline/ads.sock",
            "CONSUL_WAIT_SECONDS": "5",
            "CONTROLPLANE_SERVICES": "user-svc, booking-svc",
            "CONTROLPLANE_EXCLUDE": "consul,nomad",
        }
    )
    assert config.consul_addr == "10.0.0.5:8500"
    assert config.xds_socket == Path("/run/airline/ads.sock")
    assert config.wait_seconds == 5.0
    assert config.required == frozenset({"user-svc", "booking-svc"})
    assert config.exclude == frozenset({"consul", "nomad"})


def test_the_ads_socket_lives_in_the_state_folder_for_both_sides() -> None:
    """The control plane binds and Envoy's bootstrap names the same default socket."""
    env = {"MESH_VAR_DIR": "/srv/mesh"}
    assert ControlPlaneConfig.from_env(env).xds_socket == Path("/srv/mesh/xds/ads.sock")
    assert xds_socket(env) == Path("/srv/mesh/xds/ads.sock")


def test_the_old_tcp_settings_open_no_port_and_are_named_as_ignored() -> None:
    """XDS_HOST and XDS_PORT are gone: set, they change nothing but a warning at start."""
    config = ControlPlaneConfig.from_env({"XDS_HOST": "0.0.0.0", "XDS_PORT": "18000"})
    assert config.ignored == ("XDS_HOST", "XDS_PORT")
    assert dataclasses.replace(config, ignored=()) == ControlPlaneConfig.from_env({})


def test_a_socket_path_too_long_to_bind_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError, match="longer than a Unix socket path"):
        ControlPlaneConfig.from_env({"XDS_SOCKET": "/srv/" + "x" * 110})


def test_read_timeout_outlasts_the_longest_blocking_query() -> None:
    config = ControlPlaneConfig(wait_seconds=30)
    assert config.read_timeout_seconds > 30 * 17 / 16


@pytest.mark.parametrize("wait", ["0.5", "601", "soon"])
def test_unusable_wait_is_refused(wait: str) -> None:
    with pytest.raises(ConfigError):
        ControlPlaneConfig.from_env({"CONSUL_WAIT_SECONDS": wait})


def test_pki_and_envoy_identity_are_read_from_the_environment() -> None:
    config = ControlPlaneConfig.from_env(
        {
            "MESH_PKI_DIR": "/srv/mesh/pki",
            "ENVOY_IDENTITY_IPS": "10.0.0.2, 127.0.0.1",
            "WORKLOAD_CERT_HOURS": "2",
        }
    )
    assert config.pki_dir == Path("/srv/mesh/pki")
    assert config.envoy_ips == ("10.0.0.2", "127.0.0.1")
    assert config.envoy_dns == ("localhost",)
    assert config.cert_lifetime_seconds == 7200.0


def test_no_pki_dir_means_no_ca() -> None:
    assert ControlPlaneConfig.from_env({}).pki_dir is None


def test_certificate_lifetime_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="WORKLOAD_CERT_HOURS"):
        ControlPlaneConfig.from_env({"WORKLOAD_CERT_HOURS": "0"})


def test_upstream_mtls_is_off_unless_asked_for() -> None:
    assert not ControlPlaneConfig.from_env({}).policy.upstream_tls
    assert ControlPlaneConfig.from_env({"UPSTREAM_MTLS": "1"}).policy.upstream_tls
    with pytest.raises(ConfigError, match="UPSTREAM_MTLS"):
        ControlPlaneConfig.from_env({"UPSTREAM_MTLS": "yes please"})


def test_intermediate_lifetime_is_a_week_unless_set_and_never_below_30_s() -> None:
    assert ControlPlaneConfig.from_env({}).intermediate_lifetime_seconds == 7 * 24 * 3600
    env = {"INTERMEDIATE_LIFETIME_SECONDS": "45"}
    assert ControlPlaneConfig.from_env(env).intermediate_lifetime_seconds == 45
    with pytest.raises(ConfigError, match="INTERMEDIATE_LIFETIME_SECONDS"):
        ControlPlaneConfig.from_env({"INTERMEDIATE_LIFETIME_SECONDS": "5"})


def _tls_files(folder: Path, key_mode: int = 0o600) -> dict[str, str]:
    names = {"CONSUL_CACERT": "ca.pem", "CONSUL_CLIENT_CERT": "c.pem", "CONSUL_CLIENT_KEY": "k.pem"}
    for name in names.values():
        (folder / name).write_text("pem")
    (folder / "k.pem").chmod(key_mode)
    return {variable: str(folder / name) for variable, name in names.items()}


def test_https_agents_are_read_with_the_mesh_ca_and_a_client_certificate(tmp_path: Path) -> None:
    env = {
        "CONSUL_HTTP_ADDR": "127.0.0.1:8500",
        "CONSUL_HTTP_ADDRS": "127.0.0.1:8500,https://198.18.0.12:8501/",
        **_tls_files(tmp_path),
    }
    config = ControlPlaneConfig.from_env(env)
    assert config.consul_agents == ("http://127.0.0.1:8500", "https://198.18.0.12:8501")
    assert config.consul_addr == "127.0.0.1:8500"
    assert config.consul_key_file == tmp_path / "k.pem"


@pytest.mark.parametrize("missing", ["CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"])
def test_an_https_agent_without_ca_or_client_certificate_is_refused(
    tmp_path: Path, missing: str
) -> None:
    env = {"CONSUL_HTTP_ADDRS": "127.0.0.1:8500,https://198.18.0.12:8501"}
    env |= _tls_files(tmp_path)
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        ControlPlaneConfig.from_env(env)


def test_a_client_key_others_may_read_is_refused(tmp_path: Path) -> None:
    env = {"CONSUL_HTTP_ADDRS": "https://198.18.0.12:8501", **_tls_files(tmp_path, 0o644)}
    with pytest.raises(ConfigError, match="CONSUL_CLIENT_KEY"):
        ControlPlaneConfig.from_env(env)


def test_the_local_agent_is_never_an_https_address() -> None:
    """CONSUL_HTTP_ADDR is the loopback agent the CA endpoint checks tokens with."""
    with pytest.raises(ConfigError, match="CONSUL_HTTP_ADDR"):
        ControlPlaneConfig.from_env({"CONSUL_HTTP_ADDR": "https://198.18.0.12:8501"})

"""How the mesh configures the rate limit service as a workload, checked without starting it:
supervisord's program, its Consul token, and Envoy's cluster for it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from envoy_bootstrap import rate_limits, render
from mesh import acl, supervisord
from mesh.config import ROOT, MeshConfig
from ratelimit.server import SERVICE_NAME


def program_env(text: str, program: str) -> dict[str, str]:
    found = re.search(rf"\[program:{re.escape(program)}\].*?\nenvironment=([^\n]*)", text, re.S)
    assert found, f"no environment for {program}"
    return dict(re.findall(r'([A-Z_]+)="([^"]*)"', found.group(1)))


def test_supervisord_starts_it_with_the_mesh_ca_and_its_own_token_not_plaintext(
    tmp_path: Path,
) -> None:
    cfg = MeshConfig.from_env({"MESH_VAR_DIR": str(tmp_path)})
    for text in (supervisord.render(cfg), supervisord.render_app_host(cfg)):
        env = program_env(text, "ratelimit")
        assert "INSECURE_PLAINTEXT" not in env
        assert env["MESH_CA_ADDR"] == cfg.ca_addr
        assert env["MESH_CA_FILE"] == str(cfg.pki_dir / "ca.pem")
        assert env["MESH_POLICY_FILE"] == str(ROOT / "mesh" / "policy.toml")
        assert env["CONSUL_HTTP_TOKEN_FILE"] == str(cfg.token_file(SERVICE_NAME))
        # Still not registered in Consul (docs/ratelimit.md: why a static cluster).
        assert "CONSUL_HTTP_ADDR" not in env


def test_its_token_names_the_workload_the_service_is() -> None:
    """The CA signs the token's service identity: it must be the service's own name."""
    assert acl.RATELIMIT == SERVICE_NAME == rate_limits.WORKLOAD


def test_the_control_plane_never_makes_a_cluster_of_its_name(tmp_path: Path) -> None:
    cfg = MeshConfig.from_env({"MESH_VAR_DIR": str(tmp_path)})
    env = program_env(supervisord.render(cfg), "controlplane")
    assert SERVICE_NAME in env["CONTROLPLANE_EXCLUDE"].split(",")


def rendered_cluster(tmp_path: Path, *, mesh_tls: bool) -> dict[str, Any]:
    env = {
        "ENVOY_CONFIG": str(tmp_path / "envoy.yaml"),
        "RATELIMIT_ADDR": "127.0.0.1:18081",
        "ENVOY_MESH_TLS": "1" if mesh_tls else "",
        # Envoy's own check of the file: a static cluster taking SDS over ADS crashes
        # Envoy, validating as well as running (envoyproxy/envoy#15517).
        "ENVOY_VALIDATE": "1",
    }
    path = render.write(render.Settings.from_env(env))
    clusters = yaml.safe_load(path.read_text())["static_resources"]["clusters"]
    [cluster] = [c for c in clusters if c["name"] == rate_limits.CLUSTER]
    return dict(cluster)


def test_envoy_reaches_it_over_mtls_checking_its_spiffe_id(tmp_path: Path) -> None:
    context = rendered_cluster(tmp_path, mesh_tls=True)["transport_socket"]["typed_config"]
    common = context["common_tls_context"]
    validation = common["combined_validation_context"]

    [identity] = common["tls_certificate_sds_secret_configs"]
    assert identity["name"] == "mesh-identity"
    assert validation["validation_context_sds_secret_config"]["name"] == "mesh-ca"
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://airline.local/svc/ratelimit"}}
    ]
    for source in (identity, validation["validation_context_sds_secret_config"]):
        grpc_source = source["sds_config"]["api_config_source"]["grpc_services"]
        assert grpc_source == [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]


def test_without_mesh_tls_the_cluster_stays_plaintext(tmp_path: Path) -> None:
    """`python -m envoy_bootstrap` alone, with no SDS to get a certificate from."""
    assert "transport_socket" not in rendered_cluster(tmp_path, mesh_tls=False)

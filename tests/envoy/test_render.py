"""envoy_bootstrap: what it writes, from which settings, and that Envoy accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from envoy_bootstrap.render import Settings, write
from tests.envoy.conftest import ENVOY, ROOT

pytestmark = pytest.mark.integration


def render(out: Path, **env: str) -> Path:
    """The bootstrap `python -m envoy_bootstrap` writes to `out` with `env` set."""
    return write(Settings.from_env({"ENVOY_CONFIG": str(out), **env}))


def envoy_accepts(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "-l", "error"],
        capture_output=True, text=True,
    )  # fmt: skip


def test_the_default_ads_bootstrap_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    render(out)
    checked = envoy_accepts(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = out.read_text()
    assert "ads_config:" in text
    assert "port_value: 8080" in text
    assert "port_value: 15001" in text
    assert "port_value: 9901" in text
    # The control plane's default ADS socket (XDS_SOCKET), never a TCP port.
    assert f'pipe: {{path: "{ROOT / "var" / "xds" / "ads.sock"}"}}' in text


def test_the_static_bootstrap_is_valid_and_has_no_ads(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    render(out, ENVOY_STATIC_CLUSTERS="predict-svc=127.0.0.1:50051,127.0.0.1:50052")
    assert envoy_accepts(out).returncode == 0
    text = out.read_text()
    assert "ads_config:" not in text
    assert "name: predict-svc" in text
    assert '"port_value": 50052' in text


def test_the_transcoder_descriptor_is_written_beside_the_bootstrap(tmp_path: Path) -> None:
    out = tmp_path / "edge.yaml"
    render(out)
    copy = (tmp_path / "edge.pb").read_bytes()
    assert copy == (ROOT / "generated" / "airline.pb").read_bytes()
    assert str(tmp_path / "edge.pb") in out.read_text()


def test_make_gen_puts_the_error_details_in_the_descriptor_set() -> None:
    """The transcoder needs ErrorInfo and BadRequest to print an error's details."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "generated" / "airline.pb").read_bytes()
    )
    names = {f.name for f in files.file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= names


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    env = {
        "ENVOY_EDGE_ADDR": "0.0.0.0:18080",
        "MESH_ADDR": "127.0.0.1:25001",
        "XDS_SOCKET": "/run/airline/ads.sock",
        "TOKEN_RATE_LIMIT": "7",
        "SIGNUP_RATE_LIMIT": "4",
        "SIGNUP_RATE_WINDOW_SECONDS": "90",
        "CORS_ORIGINS": "https://a.example, https://b.example",
    }
    render(out, **env)
    text = out.read_text()
    assert "address: 0.0.0.0, port_value: 18080" in text
    assert "uri: http://127.0.0.1:18080/v1/auth/jwks" in text  # the edge fetches from itself
    assert "port_value: 25001" in text
    assert 'pipe: {path: "/run/airline/ads.sock"}' in text
    assert '"exact": "https://b.example"' in text
    buckets = {
        route["match"].get("path"): route.get("typed_per_filter_config", {})
        .get("envoy.filters.http.local_ratelimit", {})
        .get("token_bucket")
        for route in _edge_routes(out)
    }
    assert buckets["/airline.auth.v1.AuthService/CreateToken"]["max_tokens"] == 7
    signup = buckets["/airline.user.v1.UserService/CreateUser"]  # POST /v1/users
    assert (signup["max_tokens"], signup["fill_interval"]) == (4, "90s")


def test_the_entry_point_refuses_an_unknown_static_service(tmp_path: Path) -> None:
    """`python -m envoy_bootstrap` exits 2 naming the bad entry, and writes nothing."""
    out = tmp_path / "envoy.yaml"
    env = {
        **os.environ,
        "ENVOY_CONFIG": str(out),
        "ENVOY_STATIC_CLUSTERS": "cache-svc=127.0.0.1:1",
    }
    rendered = subprocess.run(
        [sys.executable, "-m", "envoy_bootstrap"], capture_output=True, text=True, cwd=ROOT, env=env
    )  # fmt: skip
    assert rendered.returncode == 2
    assert "cache-svc" in rendered.stderr
    assert "Traceback" not in rendered.stderr
    assert not out.exists()


def test_the_entry_point_writes_the_bootstrap_the_environment_names(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    env = {**os.environ, "ENVOY_CONFIG": str(out), "ENVOY_EDGE_ADDR": "127.0.0.1:18080"}
    rendered = subprocess.run(
        [sys.executable, "-m", "envoy_bootstrap"], capture_output=True, text=True, cwd=ROOT, env=env
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.strip() == str(out)
    assert "port_value: 18080" in out.read_text()


def test_every_rest_route_of_the_descriptor_is_in_the_edge_lua(tmp_path: Path) -> None:
    """The 404/405 table comes from the google.api.http rules, custom verbs included."""
    out = tmp_path / "envoy.yaml"
    render(out)
    text = out.read_text()
    # Each route with the request message its query fills (for the aliases check).
    assert '{"GET", "^/v1/flights/[^/]+$", "airline.booking.v1.GetFlightRequest"}' in text
    assert (
        '{"POST", "^/v1/bookings/[^/]+:cancel$", "airline.booking.v1.CancelBookingRequest"}' in text
    )
    assert '{"DELETE", "^/v1/users/[^/]+$", "airline.user.v1.DeleteUserRequest"}' in text
    assert 'local API_PREFIXES = {"/v1/"}' in text


def _edge_routes(config: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(config.read_text())
    [edge] = [x for x in document["static_resources"]["listeners"] if x["name"] == "edge"]
    manager = edge["filter_chains"][0]["filters"][0]["typed_config"]
    [host] = manager["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def _route_configs(config: Path) -> list[dict[str, object]]:
    return [dict(r.get("typed_per_filter_config") or {}) for r in _edge_routes(config)]


def test_reads_cost_no_rate_limit_call_unless_they_are_limited(tmp_path: Path) -> None:
    """A read asks the rate limit service only when READ_RATE_LIMIT is set."""
    out = tmp_path / "envoy.yaml"
    render(out, RATELIMIT_ADDR="127.0.0.1:18081")
    assert envoy_accepts(out).returncode == 0
    assert not any("ratelimit_fail_open" in c for c in _route_configs(out))
    render(out, RATELIMIT_ADDR="127.0.0.1:18081", READ_RATE_LIMIT="600")
    assert envoy_accepts(out).returncode == 0
    limited = [c for c in _route_configs(out) if "ratelimit_fail_open" in c]
    # The four public services' other methods, and booking's retried on a reset too.
    assert len(limited) == 5
    assert not any("ratelimit_fail_closed" in c for c in limited)

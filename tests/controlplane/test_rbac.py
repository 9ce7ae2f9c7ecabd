"""The mesh policy rendered as Envoy's RBAC filter: valid config that says what the file says."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import any_pb2, json_format

from controlplane.rbac import RBAC_FILTER, rbac_filter
from services.runtime.authz import load_policy
from tests.controlplane.conftest import ENVOY, ROOT

POLICY = load_policy(ROOT / "mesh" / "policy.toml")
HCM = "envoy.filters.network.http_connection_manager"


def rendered() -> rbac_pb2.RBAC:
    """The typed_config parsed strictly (unknown fields fail) into the xds-protos message."""
    packed = json_format.ParseDict(rbac_filter(POLICY)["typed_config"], any_pb2.Any())
    message = rbac_pb2.RBAC()
    assert packed.Unpack(message)
    return message


def test_rendered_filter_parses_as_envoys_rbac_message() -> None:
    message = rendered()
    assert rbac_filter(POLICY)["name"] == RBAC_FILTER
    assert message.rules.action == message.rules.ALLOW
    assert sorted(message.rules.policies) == sorted(POLICY.rules)


def test_each_caller_is_matched_by_its_exact_spiffe_id() -> None:
    policies = rendered().rules.policies
    [principal] = policies["auth-svc"].principals
    assert principal.authenticated.principal_name.exact == "spiffe://airline.local/svc/auth-svc"


def test_exact_methods_and_wildcards_become_exact_and_prefix_paths() -> None:
    policies = rendered().rules.policies
    auth = [p.url_path.path.exact for p in policies["auth-svc"].permissions]
    assert auth == [
        "/airline.user.v1.UserInternalService/VerifyPassword",
        "/airline.user.v1.UserInternalService/LookupUser",
    ]
    operator = {p.url_path.path.prefix for p in policies["operator"].permissions}
    assert "/grpc.health.v1.Health/" in operator
    assert "/airline.user.v1.UserService/Get" in operator
    assert all(p.url_path.path.exact == "" for p in policies["operator"].permissions)


def test_no_caller_but_auth_svc_gets_verify_password() -> None:
    verify = "/airline.user.v1.UserInternalService/VerifyPassword"
    holders = {
        name
        for name, policy in rendered().rules.policies.items()
        for permission in policy.permissions
        if permission.url_path.path.exact == verify
        or (permission.url_path.path.prefix and verify.startswith(permission.url_path.path.prefix))
    }
    assert holders == {"auth-svc"}


def test_real_envoy_accepts_the_filter_in_a_listener(tmp_path: Path) -> None:
    """`envoy --mode validate` loads the config the way a running Envoy would."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mesh",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": []}]},
        "http_filters": [rbac_filter(POLICY), router],
    }
    listener = {
        "name": "mesh",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": manager}]}],
    }
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps({"static_resources": {"listeners": [listener]}}))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

"""The mesh policy (`mesh/policy.toml`) as Envoy's RBAC HTTP filter for the mesh listener.

Pure: the same policy always renders the same config. One RBAC policy per caller:
its principal is the caller's certificate (`authenticated.principal_name`, which
Envoy matches against the URI SAN first), its permissions the gRPC paths it may
call; the action is ALLOW, so a call no policy matches is denied (403, which a gRPC
client sees as PERMISSION_DENIED). The services enforce the same `Policy` again.
"""

from __future__ import annotations

from typing import Any

from services.runtime.authz import MethodPattern, Policy
from services.runtime.identity import spiffe_id

RBAC_FILTER = "envoy.filters.http.rbac"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def _permission(pattern: MethodPattern) -> dict[str, Any]:
    match = {"prefix": pattern.path} if pattern.is_prefix else {"exact": pattern.path}
    # url_path matches the path without its query string: a `?` cannot sneak a
    # denied method past an exact rule.
    return {"url_path": {"path": match}}


def rbac_rules(policy: Policy) -> dict[str, Any]:
    """The `rules` of the RBAC filter: ALLOW, one policy per caller."""
    return {
        "action": "ALLOW",
        "policies": {
            name: {
                "permissions": [_permission(pattern) for pattern in rule.methods],
                "principals": [{"authenticated": {"principal_name": {"exact": spiffe_id(name)}}}],
            }
            for name, rule in sorted(policy.rules.items())
        },
    }


def rbac_filter(policy: Policy, stat_prefix: str = "mesh_") -> dict[str, Any]:
    """The HTTP filter entry (name and typed_config) to put before the router.

    `rules_stat_prefix` names the allowed/denied counters in Envoy's stats, so refusals
    are counted per listener.
    """
    return {
        "name": RBAC_FILTER,
        "typed_config": {
            "@type": RBAC_TYPE,
            "rules": rbac_rules(policy),
            "rules_stat_prefix": stat_prefix,
        },
    }

"""The edge's rate limit configuration, local or global; render.py fills it in.

Local (no rate limit service given): each Envoy counts sign-ins and sign-ups per
client address itself (envoy/local-ratelimit.yaml), so N edges allow N times the limit.
Global (RATELIMIT_ADDR=HOST:PORT): every edge asks the rate limit service (ratelimit/),
which counts in Redis for all of them. Two instances of Envoy's rate limit filter,
because its failure mode is the filter's, not the route's:
  ratelimit_fail_closed  CreateToken and CreateUser only; the service unreachable
                         means 503 (with Retry-After): no unmetered password guessing
  ratelimit_fail_open    every other route, only when reads are limited too
                         (READ_RATE_LIMIT): each read then costs a call to the
                         service, so by default reads send nothing and cost nothing;
                         the service unreachable means the request goes on
                         (counted in failure_mode_allowed)
docs/ratelimit.md has the stats each one keeps.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]
LIMITS_FILE = ROOT / "ratelimit" / "limits.toml"
TEMPLATES = ROOT / "envoy"
CLUSTER = "ratelimit"
# The workload name in the rate limit service's certificate (ratelimit/server.py's
# SERVICE_NAME): with mesh TLS the cluster reaches only a process holding it (mesh_tls.py).
WORKLOAD = "ratelimit"
TYPE = "type.googleapis.com/envoy."
FAIL_CLOSED = "ratelimit_fail_closed"
FAIL_OPEN = "ratelimit_fail_open"
# The descriptor every other route sends: limits.toml may give it a limit.
OTHER_ROUTES = "api"
# How long the edge waits for the service; Redis calls end well before (0.25 s).
TIMEOUT = "1s"


class Endpoint(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


def default_domain() -> str:
    """The domain of ratelimit/limits.toml: the service answers only for its own."""
    return str(tomllib.loads(LIMITS_FILE.read_text())["domain"])


def route_config(
    name: str, limit: int, window_seconds: int, clients: int, *, is_global: bool
) -> str:
    """A limited route's typed_per_filter_config entries (YAML), `name` its limit's."""
    if not is_global:
        template = Template((TEMPLATES / "local-ratelimit.yaml").read_text())
        return template.substitute(
            name=name,
            limit=limit,
            window=f"{window_seconds}s",
            window_seconds=window_seconds,
            clients=clients,
        )
    per_route = {
        "@type": TYPE + "extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        # The limit's name and the client address: limits.toml's table `name`,
        # counted per address.
        "rate_limits": [
            {"actions": [{"generic_key": {"descriptor_value": name}}, {"remote_address": {}}]}
        ],
    }
    # Asked once, by the filter that fails closed: the fail-open filter has no
    # descriptor here. (A per-route `disabled` would not do: Envoy decides which
    # filters are disabled by the route before transcoding, the REST one.)
    return f"{FAIL_CLOSED}: {json.dumps(per_route)}\n"


def read_route_config(*, is_global: bool, reads_limited: bool) -> str:
    """The typed_per_filter_config (a JSON object) of the other public routes."""
    if not (is_global and reads_limited):
        return "{}"
    per_route = {
        "@type": TYPE + "extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        "rate_limits": [
            {
                "actions": [
                    {"generic_key": {"descriptor_value": OTHER_ROUTES}},
                    {"remote_address": {}},
                ]
            }
        ],
    }
    return json.dumps({FAIL_OPEN: per_route})


def _filter(domain: str, *, deny: bool) -> dict[str, object]:
    config: dict[str, object] = {
        "@type": TYPE + "extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": domain,
        "timeout": TIMEOUT,
        "failure_mode_deny": deny,
        "stat_prefix": "fail_closed" if deny else "fail_open",
        # The request is gRPC by now: RESOURCE_EXHAUSTED is what the transcoder
        # and the local reply mappers turn into HTTP 429.
        "rate_limited_as_resource_exhausted": True,
        # x-ratelimit-limit/-remaining/-reset from the service's answer; edge.lua
        # makes a 429's Retry-After the reset.
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "rate_limit_service": {
            "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}},
            "transport_api_version": "V3",
        },
    }
    if deny:
        # Not Envoy's default 500: the limiter is unavailable, not broken, and a
        # 503 carries Retry-After (edge.lua).
        config["status_on_error"] = {"code": "ServiceUnavailable"}
    return config


def filters(domain: str, *, is_global: bool) -> str:
    """The http_filters entries (YAML list items) of the global filters; none when local.

    Neither has descriptors of its own: routes give them theirs (route_config,
    read_route_config), so a route without one costs no call to the service.
    """
    if not is_global:
        return ""
    entries = [
        {"name": FAIL_CLOSED, "typed_config": _filter(domain, deny=True)},
        {"name": FAIL_OPEN, "typed_config": _filter(domain, deny=False)},
    ]
    return "\n".join(f"- {json.dumps(e)}" for e in entries)


def cluster(endpoints: Sequence[Endpoint]) -> str:
    """The rate limit service's cluster (YAML list item), or nothing when local.

    Static, not discovered through the control plane: the edge decides to fail
    closed on its own, with or without Consul and the control plane. Plaintext as
    rendered here; with ENVOY_MESH_TLS mesh_tls.apply gives it mutual TLS.
    """
    if not endpoints:
        return ""
    lb_endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
        for e in endpoints
    ]
    entry: Mapping[str, object] = {
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": TYPE + "extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": lb_endpoints}]},
    }
    return f"    - {json.dumps(entry)}\n"

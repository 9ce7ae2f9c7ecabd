"""The per-service route entries of the edge and mesh listeners, from contract/routes.py.

A new service or public route is a proto change (and, for a limit or a retry on reset,
an entry in contract/routes.py's method sets): its routes follow here. envoy/bootstrap.yaml
keeps what is the same for every service: the virtual hosts and their catch-all routes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.routes import Contract, workload

Entry = dict[str, Any]


@dataclass(frozen=True)
class EdgeRouting:
    """What the edge's routes carry besides their cluster (render.py makes it from Settings).

    `deadline` is a route's max_stream_duration: the client's grpc-timeout (REST: its
    x-envoy-upstream-rq-timeout-ms, made grpc-timeout by edge.lua) up to a cap, else the
    default; Envoy enforces it and sends it on as grpc-timeout, so the service knows it
    and passes the rest on. `limits` holds each limit's typed_per_filter_config by name
    (RATE_LIMITED_METHODS), `reads` that of every other route (rate_limits.py: counted
    globally only with READ_RATE_LIMIT).
    """

    deadline: Mapping[str, str]
    per_try_timeout: str
    limits: Mapping[str, Mapping[str, Any]]
    reads: Mapping[str, Any]


def retry_policy(per_try_timeout: str, *, on_reset: bool) -> Entry:
    """The edge's retries: where the call never reached a service, or it said UNAVAILABLE.

    Not on a reset (nor a per-try timeout) unless `on_reset`: the call may have run,
    and public methods such as CreateUser are not idempotent. Bounded per cluster by
    the retry budget (circuit_breakers, from the control plane).
    """
    retry_on = "unavailable,connect-failure,refused-stream" + (",reset" if on_reset else "")
    return {
        "retry_on": retry_on,
        "num_retries": 2,
        "per_try_timeout": per_try_timeout,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": _PREVIOUS_HOSTS},
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)


def edge_routes(contract: Contract, routing: EdgeRouting) -> list[Entry]:
    """Each public service's routes on the edge, in the order Envoy tries them.

    Routes see the gRPC path (the transcoder rewrote REST paths before routing). Per
    service: a route per rate-limited method (with its limit), one for the methods
    retried on a reset, then the service's prefix. A service without HTTP rules
    (UserInternalService) gets none: it falls to the bootstrap's catch-all 404.
    """
    entries: list[Entry] = []
    for service in contract.services:
        methods = contract.methods_of(service)
        match: Entry
        for route in methods:
            if route.rate_limit is not None:
                match = {"path": route.grpc_path}
                limit = routing.limits[route.rate_limit]
                entries.append(_edge_route(service, match, routing, limit, route.retried_on_reset))
        retried = [r.method for r in methods if r.retried_on_reset and r.rate_limit is None]
        if retried:
            match = {"safe_regex": {"regex": f"/{re.escape(service)}/({'|'.join(retried)})"}}
            entries.append(_edge_route(service, match, routing, routing.reads, on_reset=True))
        match = {"prefix": f"/{service}/"}
        entries.append(_edge_route(service, match, routing, routing.reads, on_reset=False))
    return entries


def _edge_route(
    service: str,
    match: Entry,
    routing: EdgeRouting,
    per_filter: Mapping[str, Any],
    on_reset: bool,
) -> Entry:
    route: Entry = {"cluster": workload(service), "max_stream_duration": dict(routing.deadline)}
    if on_reset:
        route["retry_policy"] = retry_policy(routing.per_try_timeout, on_reset=True)
    return {"match": {**match, "grpc": {}}, "route": route, "typed_per_filter_config": per_filter}


def mesh_routes(contract: Contract, deadline: Mapping[str, str]) -> list[Entry]:
    """Every service of a workload to its cluster, internal ones included.

    `deadline`: the caller's grpc-timeout up to a cap, else the default, so that a call
    without one never waits forever.
    """
    return [
        {
            "match": {"prefix": f"/{service}/", "grpc": {}},
            "route": {"cluster": workload(service), "max_stream_duration": dict(deadline)},
        }
        for service in contract.all_services
    ]

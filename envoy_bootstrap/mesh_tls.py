"""Mutual TLS and authorization on Envoy's listeners, applied to the rendered bootstrap.

Pure: takes the bootstrap as a dict and returns it changed (render.py with ENVOY_MESH_TLS=1).

- mesh listener: mutual TLS only (Envoy's certificate `mesh-identity` and the CA bundle
  `mesh-ca` come over SDS on the ADS stream); the RBAC filter rendered from the mesh
  policy runs before the router, by the caller's certificate; the caller's identity
  goes on to the instance in x-forwarded-client-cert (SANITIZE_SET, URI only).
- edge listener: x-forwarded-client-cert from outside is removed (SANITIZE): only the
  mesh listener vouches for a caller.
- edge TLS listener: the edge's filter chain again, on its own port, with TLS (the mesh
  certificate over SDS by default, or an operator's certificate and key files).
- the rate limit cluster (static, rate_limits.py): mutual TLS to the rate limit service,
  Envoy showing `mesh-identity` and checking the service's certificate carries the
  `ratelimit` SPIFFE id, as the control plane's clusters do for the services.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from envoy_bootstrap import rate_limits
from services.runtime.identity import spiffe_id

TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
IDENTITY_SECRET = "mesh-identity"  # noqa: S105 - a secret's name, as controlplane/resources.py
CA_SECRET = "mesh-ca"  # noqa: S105
_ADS = {"ads": {}, "resource_api_version": "V3"}
# The same secrets on an SDS stream of their own, for a static cluster: Envoy creates
# static clusters before its ADS stream, and one asking for secrets over ADS crashes it
# (envoyproxy/envoy#15517). xds_cluster (bootstrap.yaml) comes before it.
# NOTE: Reference: envoyproxy.io/docs/envoy/latest/configuration/security/secret
_SDS_STREAM = {
    "api_config_source": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
    },
    "resource_api_version": "V3",
}


def _sds(name: str, source: dict[str, Any] = _ADS) -> dict[str, Any]:
    return {"name": name, "sds_config": source}


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def mesh_listener_tls() -> dict[str, Any]:
    """Clients must present a certificate of the mesh CA; Envoy shows its own."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": True,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_sds(IDENTITY_SECRET)],
                "validation_context_sds_secret_config": _sds(CA_SECRET),
            },
        },
    }


def edge_tls(cert_file: Path | None, key_file: Path | None) -> dict[str, Any]:
    """Server TLS for external clients (no client certificate asked for)."""
    if cert_file is not None and key_file is not None:
        certificate: dict[str, Any] = {
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(cert_file)},
                    "private_key": {"filename": str(key_file)},
                }
            ]
        }
    else:
        certificate = {"tls_certificate_sds_secret_configs": [_sds(IDENTITY_SECRET)]}
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "common_tls_context": {"alpn_protocols": ["h2", "http/1.1"], **certificate},
        },
    }


def upstream_tls(workload: str) -> dict[str, Any]:
    """mTLS from a static cluster to an upstream that must hold `workload`'s certificate
    (controlplane/resources.py builds the same for the services' clusters, over ADS): a
    process on its port without that certificate gets no calls."""
    return {
        "name": TLS_SOCKET,
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_sds(IDENTITY_SECRET, _SDS_STREAM)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"exact": spiffe_id(workload)}}
                        ]
                    },
                    "validation_context_sds_secret_config": _sds(CA_SECRET, _SDS_STREAM),
                },
            },
        },
    }


def apply(
    bootstrap: dict[str, Any],
    rbac_filter: dict[str, Any],
    edge_tls_address: tuple[str, int] | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> dict[str, Any]:
    """`bootstrap` with mTLS and RBAC on the mesh listener, mTLS to the rate limit
    service when it has a cluster and, if asked, the edge's TLS port."""
    result = copy.deepcopy(bootstrap)
    listeners = result["static_resources"]["listeners"]
    mesh = next(item for item in listeners if item["name"] == "mesh")
    chain = mesh["filter_chains"][0]
    chain["transport_socket"] = mesh_listener_tls()
    hcm = chain["filters"][0]["typed_config"]
    hcm["forward_client_cert_details"] = "SANITIZE_SET"
    hcm["set_current_client_cert_details"] = {"uri": True}
    filters = hcm["http_filters"]
    filters.insert(len(filters) - 1, rbac_filter)  # the router stays last

    edge = next(item for item in listeners if item["name"] == "edge")
    _hcm(edge)["forward_client_cert_details"] = "SANITIZE"
    if edge_tls_address is not None:
        host, port = edge_tls_address
        secure = copy.deepcopy(edge)
        secure["name"] = "edge_tls"
        secure["address"] = {"socket_address": {"address": host, "port_value": port}}
        secure["filter_chains"][0]["transport_socket"] = edge_tls(cert_file, key_file)
        _hcm(secure)["stat_prefix"] = "edge_tls"
        listeners.insert(listeners.index(edge) + 1, secure)
    for cluster in result["static_resources"]["clusters"]:
        if cluster["name"] == rate_limits.CLUSTER:
            cluster["transport_socket"] = upstream_tls(rate_limits.WORKLOAD)
    return result

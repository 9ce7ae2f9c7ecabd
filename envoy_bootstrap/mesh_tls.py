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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
IDENTITY_SECRET = "mesh-identity"  # noqa: S105 - a secret's name, as controlplane/resources.py
CA_SECRET = "mesh-ca"  # noqa: S105
_ADS = {"ads": {}, "resource_api_version": "V3"}


def _sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": _ADS}


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


def apply(
    bootstrap: dict[str, Any],
    rbac_filter: dict[str, Any],
    edge_tls_address: tuple[str, int] | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> dict[str, Any]:
    """`bootstrap` with mTLS and RBAC on the mesh listener and, if asked, the edge's TLS port."""
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
    return result

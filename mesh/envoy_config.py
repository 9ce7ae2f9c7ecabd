"""Envoy's bootstrap for one local mesh, rendered by envoy_bootstrap from its template."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from envoy_bootstrap import render
from mesh.config import ROOT, MeshConfig


def write(cfg: MeshConfig, env: Mapping[str, str] | None = None) -> Path:
    """Renders the bootstrap for `cfg` into its state folder; returns the path.

    The mesh's addresses and files override `env` (the rest, e.g. SIGNUP_RATE_LIMIT or
    READ_RATE_LIMIT, comes from it as it would for `python -m envoy_bootstrap`).
    """
    env = os.environ if env is None else env
    p = cfg.ports
    mesh = {
        "ENVOY_CONFIG": str(cfg.path("envoy.yaml")),
        "ENVOY_EDGE_ADDR": cfg.bind(p.edge),
        "ENVOY_MESH_ADDR": cfg.bind(p.mesh),
        "ENVOY_ADMIN_ADDR": cfg.local(p.admin),
        "XDS_SOCKET": str(cfg.xds_socket),
        "ENVOY_DESCRIPTOR": str(ROOT / "generated" / "airline.pb"),
        "CORS_ORIGINS": cfg.cors_origins,
        "TOKEN_RATE_LIMIT": str(cfg.token_rate_limit),
        "TOKEN_RATE_WINDOW_SECONDS": str(cfg.token_rate_window_seconds),
        "RATELIMIT_ADDR": cfg.local(p.ratelimit),
        "ENVOY_ACCESS_LOG": str(cfg.path("log", "envoy-access.log")),
        # mTLS and RBAC on the mesh listener, HTTPS on the edge (docs/trust.md).
        "ENVOY_MESH_TLS": "1",
        "ENVOY_EDGE_TLS_ADDR": cfg.bind(p.edge_tls),
        "EDGE_TLS_CERT_FILE": cfg.edge_tls_cert_file,
        "EDGE_TLS_KEY_FILE": cfg.edge_tls_key_file,
    }
    return render.write(render.Settings.from_env({**env, **mesh}))

"""Envoy's bootstrap for one local mesh, rendered by envoy/render.py from its template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mesh.config import ROOT, MeshConfig


def write(cfg: MeshConfig) -> Path:
    """Renders the bootstrap for `cfg` into its state folder; returns the path."""
    out = cfg.path("envoy.yaml")
    p = cfg.ports
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "envoy" / "render.py"),
            "--out",
            str(out),
            "--edge",
            cfg.bind(p.edge),
            "--mesh",
            cfg.bind(p.mesh),
            "--admin",
            cfg.local(p.admin),
            "--xds",
            cfg.dial(p.xds),
            "--descriptor",
            str(ROOT / "generated" / "airline.pb"),
            "--cors-origins",
            cfg.cors_origins,
            "--token-limit",
            str(cfg.token_rate_limit),
            "--token-window",
            str(cfg.token_rate_window_seconds),
            "--ratelimit",
            cfg.local(p.ratelimit),
            "--access-log",
            str(cfg.path("log", "envoy-access.log")),
            "--mesh-tls",
            "1",
            "--edge-tls",
            cfg.bind(p.edge_tls),
            "--edge-tls-cert",
            cfg.edge_tls_cert_file,
            "--edge-tls-key",
            cfg.edge_tls_key_file,
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return out

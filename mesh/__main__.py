"""`python -m mesh up|down|status`: the local mesh under supervisord.

up: renders the configuration, starts supervisord (or, when it runs already,
applies changes and starts whatever is stopped), and returns when the edge's
/healthz answers 200. down: stops every process and supervisord itself, by PID.
status: each process, and each Consul health check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from mesh import envoy_config, supervisord
from mesh.config import SERVICES, MeshConfig

SUPERVISORD = supervisord.BIN / "supervisord"
SUPERVISORCTL = supervisord.BIN / "supervisorctl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    cfg = MeshConfig.from_env()
    return {"up": up, "down": down, "status": status}[args.command](cfg)


def up(cfg: MeshConfig) -> int:
    for folder in ("log", "db"):
        cfg.path(folder).mkdir(parents=True, exist_ok=True)
    running = supervisord_pid(cfg) is not None
    if not running:
        # A dev agent restores the last run's registrations from its data dir:
        # their ports are gone, so start Consul from nothing.
        shutil.rmtree(cfg.path("consul"), ignore_errors=True)
    envoy_config.write(cfg)
    conf = cfg.path("supervisord.conf")
    conf.write_text(supervisord.render(cfg))
    if running:
        _ctl(cfg, "update")
        _ctl(cfg, "start", "all", check=False)
    else:
        subprocess.run([SUPERVISORD, "-c", conf], check=True)
    if not _wait_healthy(cfg):
        print(f"the edge did not become healthy; see {cfg.path('log')}/ and `make status`")
        return 1
    _print_where(cfg)
    return 0


def down(cfg: MeshConfig) -> int:
    pid = supervisord_pid(cfg)
    if pid is None:
        print("nothing is running")
        return 0
    # supervisord stops its programs (SIGTERM, then SIGKILL after stopwaitsecs)
    # before it exits itself.
    _ctl(cfg, "shutdown", check=False)
    if not _wait_gone(pid, timeout=90):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout=10)
    cfg.path("supervisord.pid").unlink(missing_ok=True)
    print("stopped")
    return 0


def status(cfg: MeshConfig) -> int:
    if supervisord_pid(cfg) is None:
        print("nothing is running")
        return 3
    print(_ctl(cfg, "status", check=False).stdout)
    print(f"{'service':<13} {'instance':<36} {'address':<22} check")
    for name in SERVICES:
        for entry in _consul_json(cfg, f"/v1/health/service/{name}") or []:
            svc = entry["Service"]
            checks = [c for c in entry["Checks"] if c.get("ServiceID")]
            state = ",".join(c["Status"] for c in checks) or "-"
            print(f"{name:<13} {svc['ID']:<36} {svc['Address']}:{svc['Port']:<10} {state}")
    code = _edge_health(cfg)
    print(f"\nedge /healthz: {code or 'not answering'}")
    return 0


def supervisord_pid(cfg: MeshConfig) -> int | None:
    """supervisord's PID when it runs for this mesh's state folder."""
    try:
        pid = int(cfg.path("supervisord.pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _ctl(cfg: MeshConfig, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SUPERVISORCTL, "-c", str(cfg.path("supervisord.conf")), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _edge_health(cfg: MeshConfig) -> int | None:
    url = f"http://{cfg.host}:{cfg.ports.edge}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _wait_healthy(cfg: MeshConfig) -> bool:
    deadline = time.monotonic() + cfg.up_timeout_seconds
    while time.monotonic() < deadline:
        if _edge_health(cfg) == 200:
            return True
        time.sleep(0.5)
    return False


def _consul_json(cfg: MeshConfig, path: str) -> Any:
    try:
        url = f"http://{cfg.consul_addr}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _print_where(cfg: MeshConfig) -> None:
    p, h = cfg.ports, cfg.host
    print(f"""mesh is up
  edge (REST/JSON and gRPC)  http://{h}:{p.edge}       try: curl http://{h}:{p.edge}/v1/flights
  mesh (service gRPC)        {h}:{p.mesh}
  Envoy admin                http://{h}:{p.admin}       metrics: /stats/prometheus
  Consul UI and API          http://{cfg.consul_addr}/ui
  logs                       {cfg.path("log")}/
  `make status` shows processes and health checks; `make down` stops everything""")


if __name__ == "__main__":
    sys.exit(main())

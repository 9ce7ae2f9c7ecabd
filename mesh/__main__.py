"""`python -m mesh up|down|status`: the local mesh under supervisord.

up: renders the configuration, starts supervisord (or, when it runs already,
applies changes and starts whatever is stopped), and returns when the edge's
/healthz answers 200. down: stops every process and supervisord itself, and returns only when each
process it found running (programs and their children) has exited; stragglers get
SIGKILL by PID.
status: each process, and each Consul health check.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane import pki
from controlplane.ca import private_dir, write_credentials, write_private
from controlplane.rotation import HostAuthority, RotationError
from mesh import acl, envoy_config, postgres, supervisord
from mesh.config import MeshConfig

SUPERVISORD = supervisord.BIN / "supervisord"
SUPERVISORCTL = supervisord.BIN / "supervisorctl"
# Longer than the slowest program's stopwaitsecs: supervisord SIGKILLs it by then.
STOP_TIMEOUT_SECONDS = 90.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh")
    parser.add_argument("command", choices=["up", "down", "status", "rotate-root"])
    parser.add_argument("step", nargs="?", choices=sorted(pki.ROTATION_STEPS))
    args = parser.parse_args(argv)
    cfg = MeshConfig.from_env()
    if args.command == "rotate-root":
        if args.step is None:
            parser.error("rotate-root needs a step: add, activate or finish")
        return rotate_root(cfg, args.step)
    return {"up": up, "down": down, "status": status}[args.command](cfg)


def up(cfg: MeshConfig) -> int:
    # Databases, keys, tokens and logs are the owner's alone: the folder is 0700 and
    # everything the mesh's processes create in it is 0600 (umask 077 in supervisord).
    private_dir(cfg.var_dir)
    if cfg.database == "postgres" and os.geteuid() == 0:
        # PostgreSQL runs as its own user and must pass through var/ to its data
        # folder (0700, its own): others may traverse, never list or read.
        cfg.var_dir.chmod(0o711)
    for folder in ("log", "db"):
        private_dir(cfg.path(folder))
    running = supervisord_pid(cfg) is not None
    if not running:
        # A dev agent restores the last run's registrations from its data dir:
        # their ports are gone, so start Consul from nothing.
        shutil.rmtree(cfg.path("consul"), ignore_errors=True)
    _prepare_pki(cfg)
    if cfg.database == "postgres":
        postgres.prepare(cfg)
    envoy_config.write(cfg).chmod(0o600)
    conf = cfg.path("supervisord.conf")
    write_private(conf, supervisord.render(cfg).encode())
    if running:
        print("mesh up: supervisord runs already; applying changes")
        _ctl(cfg, "update")
    else:
        print("mesh up: starting Consul")
        # supervisord opens its own log before its umask applies: make it private first.
        log = cfg.path("log", "supervisord.log")
        log.touch(mode=0o600)
        log.chmod(0o600)
        subprocess.run([SUPERVISORD, "-c", conf], check=True)
    print("mesh up: Consul's ACLs (bootstrap, one token per workload)")
    acl.wait_for_leader(cfg.consul_addr, cfg.up_timeout_seconds)
    acl.ensure_tokens(cfg.consul_addr, cfg.path("tokens"), cfg.services)
    print("mesh up: starting the control plane, Envoy and the services")
    _ctl(cfg, "start", "all", check=False)
    print(f"mesh up: waiting for the edge to answer (at most {cfg.up_timeout_seconds:.0f} s)")
    if not _wait_healthy(cfg):
        print(f"the edge did not become healthy; see {cfg.path('log')}/ and `make status`")
        return 1
    _print_where(cfg)
    return 0


# Consul's check certificate is issued once per `make up` (the agent reads it at start).
CONSUL_CERT_LIFETIME = datetime.timedelta(days=30)


def _prepare_pki(cfg: MeshConfig) -> None:
    """The mesh's root CA (the control plane signs with an intermediate of it), the root
    bundle ca.pem for the services to trust the CA endpoint by, and Consul's check
    certificate (under an intermediate of its own) and TLS settings."""
    ca = HostAuthority(cfg.pki_dir / "ca", host="provision").current
    write_private(cfg.pki_dir / "ca.pem", ca.bundle_pem)
    _consul_pki(cfg)
    write_private(cfg.path("consul-tls.hcl"), supervisord.consul_tls(cfg).encode())


def _consul_pki(cfg: MeshConfig) -> None:
    """Consul's check certificate from the signing root (through an intermediate of the
    provisioner's) and the current root bundle, both read by the agent at start and on
    SIGHUP."""
    ca = HostAuthority(cfg.pki_dir / "ca", host="provision").current
    issued = ca.issue("consul-health", lifetime=CONSUL_CERT_LIFETIME)
    write_credentials(issued, cfg.pki_dir / "consul")


def rotate_root(cfg: MeshConfig, step: str) -> int:
    """One step of the root's rotation (docs/trust.md): the control plane picks it up by
    itself; Consul's check certificate and bundle follow, reloaded with SIGHUP."""
    try:
        root = pki.rotate_root(cfg.pki_dir, step)
    except RotationError as exc:
        print(f"rotate-root {step}: {exc}")
        return 1
    _consul_pki(cfg)
    if supervisord_pid(cfg) is not None:
        _ctl(cfg, "signal", "HUP", "consul")
    print(f"rotate-root {step}: {len(root.roots)} root(s) trusted; Consul reloaded")
    return 0


def down(cfg: MeshConfig) -> int:
    pid = supervisord_pid(cfg)
    if pid is None:
        print("nothing is running")
        return 0
    # Every process this mesh runs, listed before anything stops: supervisord only
    # waits for each program's main process, and a child in its group can outlive it.
    started = _supervised(cfg, pid)
    # supervisord stops its programs (SIGTERM, then SIGKILL after stopwaitsecs)
    # before it exits itself.
    _ctl(cfg, "shutdown", check=False)
    left = _wait_exited(started, timeout=STOP_TIMEOUT_SECONDS)
    for proc in left:
        _kill(proc)
    left = _wait_exited(left, timeout=10)
    cfg.path("supervisord.pid").unlink(missing_ok=True)
    if left:
        print("still running after SIGKILL: " + " ".join(str(p.pid) for p in left))
        return 1
    print("stopped")
    return 0


def status(cfg: MeshConfig) -> int:
    if supervisord_pid(cfg) is None:
        print("nothing is running")
        return 3
    print(_ctl(cfg, "status", check=False).stdout)
    print(f"{'service':<13} {'instance':<36} {'address':<22} check")
    for name in cfg.services:
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


@dataclass(frozen=True)
class Proc:
    """A process as the kernel lists it; its start time tells a reused PID apart."""

    pid: int
    group: int
    start_ticks: int


def _read_proc(pid: int) -> Proc | None:
    """The live (not zombie) process `pid`, from /proc/<pid>/stat; None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:  # exited; only waiting for its parent to reap it
        return None
    return Proc(pid, group=int(fields[2]), start_ticks=int(fields[19]))


def _alive(proc: Proc) -> bool:
    now = _read_proc(proc.pid)
    return now is not None and now.start_ticks == proc.start_ticks


def _supervised(cfg: MeshConfig, supervisord: int) -> list[Proc]:
    """supervisord, each program's process, and every process in a program's group."""
    listed = _ctl(cfg, "pid", "all", check=False).stdout.split()
    programs = {int(pid) for pid in listed if pid.isdigit() and int(pid) > 0}
    # supervisord makes each program a process group leader (stopasgroup relies on it).
    found = [
        _read_proc(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()
    ]
    return [
        proc
        for proc in found
        if proc is not None and (proc.pid == supervisord or proc.group in programs)
    ]


def _wait_exited(procs: list[Proc], timeout: float) -> list[Proc]:
    """Polls until every process has exited or `timeout` passes; returns those left."""
    deadline = time.monotonic() + timeout
    left = [proc for proc in procs if _alive(proc)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [proc for proc in left if _alive(proc)]
    return left


def _kill(proc: Proc) -> None:
    if _alive(proc):  # checked just before: never signal a PID the kernel gave to another
        with contextlib.suppress(ProcessLookupError):  # it exited since the check
            os.kill(proc.pid, signal.SIGKILL)


def _edge_health(cfg: MeshConfig) -> int | None:
    url = f"http://{cfg.dial(cfg.ports.edge)}/healthz"
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
    """A read with the operator's (read-only) token: ACLs deny anonymous reads."""
    try:
        token = cfg.token_file("operator").read_text().strip()
        request = urllib.request.Request(
            f"http://{cfg.consul_addr}{path}", headers={"X-Consul-Token": token}
        )
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return json.loads(response.read())
    except OSError:
        return None


def _print_where(cfg: MeshConfig) -> None:
    p, h = cfg.ports, cfg.advertise_host
    print(f"""mesh is up
  edge (REST/JSON and gRPC)  http://{h}:{p.edge}       try: curl http://{h}:{p.edge}/v1/flights
  edge with TLS              https://{h}:{p.edge_tls}      (curl --cacert {cfg.pki_dir}/ca.pem)
  mesh (service gRPC)        {h}:{p.mesh}
  Envoy admin                http://{h}:{p.admin}       metrics: /stats/prometheus
  Consul UI and API          http://{cfg.consul_addr}/ui
  logs                       {cfg.path("log")}/
  operator credentials       {cfg.pki_dir}/ (ca.pem, operator.pem, operator-key.pem)
  `make status` shows processes and health checks; `make down` stops everything""")


if __name__ == "__main__":
    sys.exit(main())

"""One `mesh.hosts up` per session (real namespaces, Consul cluster, PostgreSQL, Envoys),
and `mesh.hosts down` after it, also when a test failed: every namespace, link and
process gone, checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import netns, postgres
from tests.hosts.cluster import Cluster, NetnsClient, load, run_hosts


def _why_not() -> str | None:
    """Why simulated hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if shutil.which("redis-server") is None:
        return "no redis-server (.ci/run installs it)"
    try:
        postgres.binary("initdb")
    except FileNotFoundError:
        return "no PostgreSQL (.ci/run installs it)"
    probe = f"probe{os.getpid() % 100000}"
    try:
        netns.ip("netns", "add", probe)
    except (netns.NetnsError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace here: {exc}"
    netns.delete(probe)
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    var_dir = Path(tempfile.mkdtemp(prefix="airline-hosts-"))
    env = {
        "MESH_VAR_DIR": str(var_dir),
        "HOSTS_PREFIX": f"t{os.getpid() % 100000}",
        # A fixed window this long never rolls over during the sign-in test.
        "TOKEN_RATE_WINDOW_SECONDS": "3600",
        "CHECK_INTERVAL_SECONDS": "1",
    }
    try:
        done = run_hosts(env, "up", timeout=900)
        if done.returncode != 0:
            logs = sorted(var_dir.glob("hosts/*/log/*.log"))
            tails = "\n".join(f"== {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)
            pytest.fail(f"hosts up failed:\n{done.stdout}\n{done.stderr}\n{tails[-20000:]}")
        yield load(var_dir / "hosts.json", env)
    finally:
        down = run_hosts(env, "down", timeout=300)
        left = netns.listed(env["HOSTS_PREFIX"])
        if not os.environ.get("HOSTS_KEEP_VAR"):  # set it to read the hosts' logs after
            shutil.rmtree(var_dir, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert left == [], f"namespaces left behind: {left}"


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Iterator[NetnsClient]:
    """Requests from the client machine's first address."""
    made = NetnsClient(cluster.client_ns, cluster.client_addresses[0])
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def consul_client(cluster: Cluster) -> Iterator[NetnsClient]:
    """Requests to the agents' HTTPS APIs from the client machine, with a mesh certificate."""
    made = NetnsClient(cluster.client_ns, cluster.client_addresses[0], verify=cluster.consul_tls())
    try:
        yield made
    finally:
        made.close()

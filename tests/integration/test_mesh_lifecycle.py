"""`python -m mesh down` as an operator runs it: it returns only when everything has stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import running_mesh
from tests.process import processes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc"),
]

SUPERVISORCTL = str(Path(sys.executable).parent / "supervisorctl")


def _mesh_processes(var_dir: Path) -> list[processes.Proc]:
    """supervisord, each program it runs and every process in a program's group."""
    listed = subprocess.run(
        [SUPERVISORCTL, "-c", str(var_dir / "supervisord.conf"), "pid", "all"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    programs = {int(pid) for pid in listed if int(pid) > 0}
    supervisord = processes.read(int((var_dir / "supervisord.pid").read_text()))
    assert supervisord is not None
    return [supervisord, *processes.in_groups(programs)]


def test_down_returns_only_after_every_process_it_started_has_exited(tmp_path: Path) -> None:
    with running_mesh(tmp_path / "mesh") as mesh:
        before = _mesh_processes(mesh.var_dir)
        # supervisord, Consul, the control plane, Envoy and six service instances, at least.
        assert len(before) >= 10, before
        stopped = mesh.mesh_command("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        still = [proc.pid for proc in before if processes.alive(proc)]
        assert still == [], f"still running after `mesh down` returned: {still}"

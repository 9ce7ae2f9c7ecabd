"""`python -m mesh down` against a real supervisord whose program leaves a slow child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import supervisord
from mesh.config import MeshConfig
from tests.process import processes
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads processes from /proc"
)

# The program's main process exits at SIGTERM; a child in its process group (as a worker
# finishing its last job would) takes 3 s more. supervisord waits for the main one only.
PROGRAM = """\
(trap 'sleep 3; exit 0' TERM; sleep 600 & wait) &
exec sleep 600
"""


def _program_and_children(cfg: MeshConfig) -> list[processes.Proc] | None:
    """The program's process and its children, once all three run."""
    ctl = [str(supervisord.BIN / "supervisorctl"), "-c", str(cfg.path("supervisord.conf"))]
    listed = subprocess.run(
        [*ctl, "pid", "all"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.split()
    groups = {int(pid) for pid in listed if pid.isdigit() and int(pid) > 0}
    members = processes.in_groups(groups)
    return members if len(members) >= 3 else None  # sleep, the subshell, its sleep


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[MeshConfig, list[processes.Proc]]]:
    """supervisord, configured as the mesh's is, running one program with a slow child."""
    cfg = MeshConfig(var_dir=tmp_path)
    cfg.path("log").mkdir()
    script = tmp_path / "program.sh"
    script.write_text(PROGRAM)
    program = supervisord._program("slow", f"bash {script}", cfg, priority=10, autostart=True)
    cfg.path("supervisord.conf").write_text(supervisord._header(cfg) + "\n" + program)
    subprocess.run(
        [str(supervisord.BIN / "supervisord"), "-c", str(cfg.path("supervisord.conf"))],
        check=True,
        timeout=30,
    )
    found: list[processes.Proc] = []
    try:
        pid = wait_for(lambda: _pid(cfg), "supervisord's pid file", timeout=30)
        main = processes.read(pid)
        assert main is not None
        found.append(main)
        found += wait_for(lambda: _program_and_children(cfg), "the program", timeout=30)
        yield cfg, found
    finally:
        for proc in found:  # only what this test started, by PID
            if processes.alive(proc):
                os.kill(proc.pid, signal.SIGKILL)


def _pid(cfg: MeshConfig) -> int | None:
    try:
        return int(cfg.path("supervisord.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_down_returns_only_after_every_process_it_started_has_exited(
    started: tuple[MeshConfig, list[processes.Proc]],
) -> None:
    cfg, before = started
    stopped = subprocess.run(
        [sys.executable, "-m", "mesh", "down"],
        cwd=ROOT,
        env={**os.environ, "MESH_VAR_DIR": str(cfg.var_dir)},
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    still = [proc.pid for proc in before if processes.alive(proc)]
    assert still == [], f"still running after `mesh down` returned: {still}"

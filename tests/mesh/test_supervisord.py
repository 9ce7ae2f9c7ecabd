"""What `make up`'s supervisord configuration gives each program, without starting any."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mesh import supervisord
from mesh.config import MeshConfig


def _program_env(text: str, program: str) -> str:
    found = re.search(rf"\[program:{re.escape(program)}\].*?\nenvironment=([^\n]*)", text, re.S)
    assert found, f"no environment for {program}"
    return found.group(1)


def test_instances_of_a_service_share_the_cores_for_cpu_heavy_work(tmp_path: Path) -> None:
    """Two user-svc instances on two cores get one bcrypt slot each, not two."""
    cfg = MeshConfig.from_env({"MESH_VAR_DIR": str(tmp_path)})
    instances = cfg.instances["user-svc"]
    text = supervisord.render(cfg)
    slots = max(1, (os.cpu_count() or 2) // instances)
    assert f'CPU_SLOTS="{slots}"' in _program_env(text, "user-svc")


def test_cpu_slots_from_the_environment_win(tmp_path: Path) -> None:
    cfg = MeshConfig.from_env({"MESH_VAR_DIR": str(tmp_path), "CPU_SLOTS": "7"})
    text = supervisord.render(cfg)
    assert 'CPU_SLOTS="7"' in text
    assert not re.search(r'CPU_SLOTS="(?!7")', text)

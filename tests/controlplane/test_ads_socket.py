"""ADS's Unix socket: its modes, who may connect, and a restart after a crash."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from controlplane.ads import XdsServer
from controlplane.store import SnapshotStore
from tests.controlplane.xds_probe import health_of

NOBODY = 65534
PERMISSION_DENIED_EXIT = 13
# Connects to the socket named by argv[1]; exits 13 when the kernel says EACCES.
CONNECT = """
import socket, sys
client = socket.socket(socket.AF_UNIX)
try:
    client.connect(sys.argv[1])
except PermissionError:
    sys.exit(13)
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may pass through (pytest's own are 0700 under root)."""
    folder = Path(tempfile.mkdtemp(prefix="ads-socket-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def server(open_folder: Path) -> Iterator[XdsServer]:
    ads = XdsServer(SnapshotStore(), open_folder / "xds" / "ads.sock")
    ads.start()
    try:
        yield ads
    finally:
        ads.stop(0)


def connect_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    # The system's interpreter: the venv's may live where another user cannot go.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        [python, "-I", "-c", CONNECT, str(path)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_the_socket_is_0600_in_a_folder_made_0700(server: XdsServer) -> None:
    assert stat.S_ISSOCK(server.socket.stat().st_mode)
    assert stat.S_IMODE(server.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.socket.parent.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_user_cannot_connect_but_could_if_the_modes_allowed_it(
    server: XdsServer,
) -> None:
    refused = connect_as_nobody(server.socket)
    server.socket.parent.chmod(0o755)
    server.socket.chmod(0o666)
    allowed = connect_as_nobody(server.socket)
    assert allowed.returncode == 0, allowed.stderr  # the check itself can connect
    assert refused.returncode == PERMISSION_DENIED_EXIT, refused.stderr


def test_a_socket_left_by_a_crash_is_replaced(open_folder: Path) -> None:
    path = open_folder / "xds" / "ads.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening, file left behind: a crash's leftover
    stale.close()
    ads = XdsServer(SnapshotStore(), path)
    ads.start()
    try:
        ads.mark_serving()
        assert health_of(ads.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        ads.stop(0)

"""The README's "One service alone" block, run with bash as a reader would paste it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.process import processes
from tests.support import free_ports

ROOT = Path(__file__).resolve().parents[2]


def _one_service_alone_block() -> str:
    """The first ```sh block under the README's "## One service alone" heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## One service alone\n", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no sh block under 'One service alone'"
    return found.group(1)


def _stop_group(group: int) -> list[int]:
    """SIGKILLs, by PID, whatever still runs in `group`; returns the PIDs it found."""
    left = processes.in_groups({group})
    for proc in left:
        if processes.alive(proc):
            os.kill(proc.pid, signal.SIGKILL)
    return [proc.pid for proc in left]


def _group_gone(group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while processes.in_groups({group}):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
@pytest.mark.timeout(900)  # the block itself waits up to 300 s for the service
def test_one_service_alone_block_runs_as_written(tmp_path: Path) -> None:
    """Started, waited for, asked by grpcurl and curl, stopped by `kill %1`: every line succeeds."""
    grpc_port, metrics_port = free_ports(2)
    block = _one_service_alone_block()
    assert "50051" in block
    assert "9101" in block
    # Free ports for the README's fixed ones, so the test never clashes with a real run.
    script = block.replace("50051", str(grpc_port)).replace("9101", str(metrics_port))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/predict.db",  # a first start: it trains
        "PREDICT_TRAIN_ROWS": "20000",
    }
    # Output to files, not pipes: a service left running would hold a pipe open.
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    # Its own session: the shell and the service it starts share a process group to stop.
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        shell = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        shell.wait(timeout=600)  # the README's 300 s wait, then a few quick calls
        # `kill %1` asked the service to stop: it finishes and exits on its own.
        stopped = _group_gone(shell.pid, timeout=60)
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(timeout=10)
        leftovers = _stop_group(shell.pid)
    out = out_file.read_text()
    assert shell.returncode == 0, out + err_file.read_text()
    assert "airline.predict.v1.PredictionService" in out.split()
    assert '"status": "SERVING"' in out
    assert "flight-delay" in out  # ListModels
    assert "grpc_server_handled_total" in out
    assert stopped, f"the service outlived `kill %1`: {leftovers}"

"""Service instances as real processes, started as an operator would."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def mint_pki(directory: Path, *workloads: str) -> Path:
    """A CA, the operator's and `workloads`' credentials in `directory`, as an operator
    makes them (`python -m controlplane.pki`); returns `directory`."""
    subprocess.run(
        [sys.executable, "-m", "controlplane.pki", str(directory), *workloads],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory


def standalone_env(pki: Path, workload: str) -> dict[str, str]:
    """The environment that gives a service run alone `workload`'s certificate from `pki`."""
    return {
        "TLS_CERT_FILE": str(pki / f"{workload}.pem"),
        "TLS_KEY_FILE": str(pki / f"{workload}-key.pem"),
        "TLS_CA_FILE": str(pki / "ca.pem"),
    }


def operator_grpcurl(pki: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """grpcurl with the operator's certificate from `pki`."""
    creds = ["-cacert", "ca.pem", "-cert", "operator.pem", "-key", "operator-key.pem"]
    paths = [str(pki / arg) if arg.endswith(".pem") else arg for arg in creds]
    return run_grpcurl(*paths, *args)


def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Instance:
    """A running `python -m services.<name>` and what it has logged."""

    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    pki: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def grpcurl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """grpcurl as the operator (plaintext only for an INSECURE_PLAINTEXT instance)."""
        if self.pki is None:
            return run_grpcurl("-plaintext", *args)
        return operator_grpcurl(self.pki, *args)


def _pump(stream: Any, out: queue.Queue[dict[str, Any]], sink: list[dict[str, Any]]) -> None:
    for raw in stream:
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            entry = {"event": "unparsed", "text": raw.rstrip()}
        sink.append(entry)
        out.put(entry)


@contextmanager
def service_process(
    module: str,
    env: Mapping[str, str],
    *,
    pki: Path | None = None,
    start_timeout: float = 120.0,
) -> Iterator[Instance]:
    """Starts `python -m module` with GRPC_PORT=0 and reads its ports from the log.

    With `pki` (from `mint_pki`) it serves the certificate of its workload name there.
    """
    if pki is not None:
        env = {**standalone_env(pki, workload_of(module)), **env}
    full_env = {**os.environ, "GRPC_PORT": "0", "METRICS_PORT": "0", **env}
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stderr, events, lines), daemon=True)
    pump.start()
    try:
        serving = _wait_for(events, "serving", start_timeout, process)
        yield Instance(process, serving["port"], serving["metrics_port"], lines, pki)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        pump.join(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def workload_of(module: str) -> str:
    """`services.user_svc` -> `user-svc`."""
    return module.rsplit(".", 1)[-1].replace("_", "-")


def _wait_for(
    events: queue.Queue[dict[str, Any]],
    event: str,
    timeout: float,
    process: subprocess.Popen[str],
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            entry = events.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode} before {event!r}") from None
            continue
        if entry.get("event") == event:
            return entry
    raise TimeoutError(f"no {event!r} log line within {timeout}s")

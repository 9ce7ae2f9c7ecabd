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


@dataclass
class Instance:
    """A running `python -m services.<name>` and what it has logged."""

    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def grpcurl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRPCURL, "-plaintext", "-max-time", "10", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


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
    module: str, env: Mapping[str, str], *, start_timeout: float = 120.0
) -> Iterator[Instance]:
    """Starts `python -m module` with GRPC_PORT=0 and reads its ports from the log."""
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
        yield Instance(process, serving["port"], serving["metrics_port"], lines)
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

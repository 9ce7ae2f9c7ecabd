"""The load generator and what it reports: wrk, for REST/JSON through the edge.

It runs pinned to one core (`taskset`), for a fixed time, with a fixed number of
connections, and each run is reduced to one `Result`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install -y wrk util-linux  (as root; taskset is in util-linux)"


@dataclass(frozen=True)
class Load:
    """How hard and how long each run pushes, and where the generator runs."""

    seconds: int
    in_flight: int
    core: int


@dataclass(frozen=True)
class Result:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def missing_tools() -> list[str]:
    return [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]


def wrk_script(url: str, script: str, load: Load, work: Path) -> Result:
    """wrk driven by a Lua `script` (which may build every request itself) against `url`."""
    path = work / "request.lua"
    path.write_text(script)
    out = _run(
        [
            "wrk",
            "-t1",
            f"-c{load.in_flight}",
            f"-d{load.seconds}s",
            "--latency",
            "-s",
            *[str(path), url],
        ],
        load,
    )
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(
        requests=int(_match(r"(\d+) requests in", out)),
        rps=float(_match(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_wrk_ms(_match(r"\n\s+50%\s+(\S+)", out)),
        p99_ms=_wrk_ms(_match(r"\n\s+99%\s+(\S+)", out)),
        errors=(sum(map(int, sockets.groups())) if sockets else 0)
        + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def _run(command: list[str], load: Load) -> str:
    pinned = ["taskset", "-c", str(load.core), *command]
    done = subprocess.run(
        pinned, capture_output=True, text=True, timeout=load.seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:1])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _search(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in the load generator's output:\n{text}")
    return found


def _match(pattern: str, text: str) -> str:
    return _search(pattern, text).group(1)


def _wrk_ms(value: str) -> float:
    """wrk prints latencies as 812.00us, 1.23ms or 1.05s."""
    number, unit = _search(r"^([\d.]+)(us|ms|s)$", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

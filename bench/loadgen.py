"""The load generators and what they report: h2load for unary gRPC, wrk for REST/JSON.

Both run pinned to one core (`taskset`), for a fixed time, with the same number of
requests in flight, and are reduced to one `Result` each.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "apt-get install -y wrk nghttp2-client util-linux"
    "  (as root; h2load is in nghttp2-client, taskset in util-linux)"
)
H2LOAD_CONNECTIONS = 4  # h2load multiplexes: in flight = connections x streams each


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
    return [tool for tool in ("h2load", "wrk", "taskset") if shutil.which(tool) is None]


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message: flag byte, big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(url: str, message: bytes, headers: Mapping[str, str], load: Load, work: Path) -> Result:
    """Unary gRPC calls to `url` (http://host:port/pkg.Service/Method) over h2c."""
    body, log = work / "body.bin", work / "h2load.tsv"
    body.write_bytes(grpc_frame(message))
    log.unlink(missing_ok=True)
    grpc_headers = {"content-type": "application/grpc", "te": "trailers", **headers}
    out = _run(
        ["h2load", f"-D{load.seconds}", f"-c{H2LOAD_CONNECTIONS}"]
        + [f"-m{max(1, load.in_flight // H2LOAD_CONNECTIONS)}", "-d", str(body)]
        + [arg for k, v in grpc_headers.items() for arg in ("-H", f"{k}: {v}")]
        + ["--log-file", str(log), url],
        load,
    )
    # Log lines: start (us since epoch), HTTP status (0: cut off at the end), duration (us).
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    done = sorted(int(duration) / 1000 for _, status, duration in rows if status != "0")
    counts = _ints(r"requests: (\d+) total, \d+ started, (\d+) done, \d+ succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout", out)  # fmt: skip
    return Result(
        requests=counts[1],
        rps=float(_match(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)),
        p50_ms=_quantile(done, 0.50),
        p99_ms=_quantile(done, 0.99),
        errors=sum(counts[2:]),
    )


def wrk(
    url: str, method: str, body: str, headers: Mapping[str, str], load: Load, work: Path
) -> Result:
    """HTTP/1.1 requests to `url`, one connection per request in flight."""
    lines = [f'wrk.method = "{method}"'] + ([f"wrk.body = [==[{body}]==]"] if body else [])
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return wrk_script(url, "\n".join(lines) + "\n", load, work)


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


def _ints(pattern: str, text: str) -> list[int]:
    return [int(group) for group in _search(pattern, text).groups()]


def _quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def _wrk_ms(value: str) -> float:
    """wrk prints latencies as 812.00us, 1.23ms or 1.05s."""
    number, unit = _search(r"^([\d.]+)(us|ms|s)$", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

"""The mesh against a plain FastAPI app, in one run: `make bench` (`python bench/run.py`).

Brings up a fresh mesh (`python -m mesh up` on free ports, a temporary state folder,
`mesh down` whatever happens) and a FastAPI twin of GetFlight and ListFlights
(`bench/twin.py`) on booking-svc's own database, with as many uvicorn workers as
booking-svc has instances. Checks that the twin answers the very bytes the edge does,
then measures, in alternating A/B rounds (edge first in odd rounds, twin first in even):

    GetFlight     32 connections, a random one of many seeded flight ids per request
    ListFlights   32 connections, page_size=20
    GetFlight c1  one connection: the latency of a lone request

and, through the edge only and in the same rounds, the floor under the last: GetModel
at one connection, a public call whose handler does no work (a model held in memory),
by the same path (transcoding, mTLS, a Python gRPC instance with every interceptor),
so a run shows how much of GetFlight's lone-request time any call to an instance costs;
and, through the edge only, booking create (by 32 users in turn, each with a valid
token, a unique request_id per request, spread over the same flights) at 32
connections. Every run is wrk pinned to
one core (`taskset -c CORE`), bounded in time, after a one-second warm-up. The medians
over the rounds are reported, with the CPU time Envoy and the services (or the twin's
workers) spent per request, read from /proc before and after each run, and the idle
RSS of every instance before any load. Prints a table; writes bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import loadgen, procs, twin
from bench.harness import Mesh, load_average, running_mesh, sign_in
from bench.loadgen import Load, Result
from mesh.config import ROOT

SERVICES = ("auth-svc", "user-svc", "booking-svc", "predict-svc")
RESULTS = ROOT / "bench" / "results.json"
TWIN_START_SECONDS = 60
# booking-svc computes every upcoming flight's delay risk once after start; the load
# waits for that pass, as a booking on a long-running mesh would find them stored.
RISKS_SECONDS = 300
FLOOR = "GetModel c1"  # the edge-only row: a lone call whose handler does no work


@dataclass(frozen=True)
class Target:
    """Where a side of the comparison listens, and the processes that do its work."""

    name: str
    base_url: str
    pids: dict[str, list[int]]


@dataclass(frozen=True)
class Run:
    result: Result
    cpu_us: dict[str, float]  # CPU microseconds per request, per process group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured time per run")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per comparison")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent connections")
    parser.add_argument("--instances", type=int, default=2, help="booking-svc instances")
    parser.add_argument("--core", type=int, default=1, help="the core wrk is pinned to")
    parser.add_argument("--flights", type=int, default=2000, help="distinct flight ids used")
    # Training on all 336,776 flights can outlast `mesh up`'s 180 s on a busy machine.
    parser.add_argument(
        "--train-rows", type=int, default=20000, help="PREDICT_TRAIN_ROWS (0: all flights)"
    )
    parser.add_argument(
        "--users", type=int, default=32, help="users booking in turn (one account check each)"
    )
    parser.add_argument(
        "--bookings-only",
        action="store_true",
        help="only booking create, no twin; prints the table, leaves results.json alone",
    )
    parser.add_argument(
        "--account-cache-seconds",
        type=float,
        default=None,
        help="booking-svc's LIVE_ACCOUNT_CACHE_SECONDS (default 0: every booking asks user-svc, "
        "as when each booking is by another user)",
    )
    args = parser.parse_args(argv)
    if missing := loadgen.missing_tools():
        print(f"bench needs {', '.join(missing)} on PATH; install: {loadgen.INSTALL_HINT}")
        return 2
    load = Load(seconds=args.seconds, in_flight=args.in_flight, core=args.core)
    # Signing the bench's users up and in is setup, not load: the per-client limits of
    # POST /v1/users and /v1/auth/token (10 a minute) would stop it.
    env = {
        "PREDICT_TRAIN_ROWS": str(args.train_rows),
        "SIGNUP_RATE_LIMIT": "100000",
        "TOKEN_RATE_LIMIT": "100000",
    }
    if args.account_cache_seconds is not None:
        env["LIVE_ACCOUNT_CACHE_SECONDS"] = str(args.account_cache_seconds)
    if args.bookings_only:
        with running_mesh(args.instances, env) as mesh, tempfile.TemporaryDirectory() as work:
            bench_bookings(mesh, args, load, Path(work))
        return 0
    with (
        running_mesh(args.instances, env) as mesh,
        tempfile.TemporaryDirectory() as work,
        running_twin(mesh, args.instances) as fastapi_twin,
    ):
        results = bench(mesh, fastapi_twin, args, load, Path(work))
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


@contextmanager
def running_twin(mesh: Mesh, workers: int) -> Iterator[Target]:
    """The FastAPI twin: `workers` uvicorn processes on one socket, stopped by PID."""
    database = f"sqlite:///{mesh.var_dir / 'db' / 'booking-svc.db'}"
    sock = twin.listening_socket()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=twin.serve, args=(sock, database)) for _ in range(workers)]
    try:
        for process in processes:
            process.start()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        wait_until(lambda: _answers(f"{base}/v1/flights?page_size=1"), TWIN_START_SECONDS)
        yield Target("twin", base, {"twin": [p.pid for p in processes if p.pid is not None]})
    finally:
        for process in processes:
            if process.pid is not None:
                process.terminate()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=30)
        sock.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(ready: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready within {seconds} s")
        time.sleep(0.1)


def bench(
    mesh: Mesh, twin_target: Target, args: argparse.Namespace, load: Load, work: Path
) -> dict[str, object]:
    edge_url = f"http://127.0.0.1:{mesh.ports.edge}"
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        tokens = sign_in_users(http, args.users)
        ids = flight_ids(http, args.flights)
    service_pids = {name: instance_pids(mesh, name) for name in SERVICES}
    envoy = procs.pid_listening_on(mesh.ports.admin)
    edge = Target("edge", edge_url, {"envoy": [envoy], **service_pids})
    same_bytes(edge, twin_target, ids[:20])
    wait_until(lambda: risks_pending(mesh) == 0, RISKS_SECONDS)
    idle = idle_rss(mesh, service_pids, twin_target)
    print_setup(load, args, len(ids))
    one = Load(seconds=min(load.seconds, 3), in_flight=1, core=load.core)
    scripts = {
        "GetFlight": (get_flight_script(ids), load),
        "ListFlights": (list_flights_script(), load),
        "GetFlight c1": (get_flight_script(ids), one),
    }
    runs: dict[str, dict[str, list[Run]]] = {name: {"edge": [], "twin": []} for name in scripts}
    runs[FLOOR] = {"edge": []}
    for round_ in range(args.rounds):
        sides = (edge, twin_target) if round_ % 2 == 0 else (twin_target, edge)
        for name, (script, run_load) in scripts.items():
            for side in sides:
                measured = measure(side, script, run_load, work)
                runs[name][side.name].append(measured)
                print(f"  round {round_ + 1} {name:<13} {side.name:<5} {brief(measured)}")
        runs[FLOOR]["edge"].append(measure(edge, get_model_script(), one, work))
        print(f"  round {round_ + 1} {FLOOR:<13} edge  {brief(runs[FLOOR]['edge'][-1])}")
    bookings = []
    for round_ in range(args.rounds):
        script = booking_script(ids, tokens, f"bench{round_}-{uuid.uuid4().hex[:8]}")
        bookings.append(measure(edge, script, load, work))
        print(f"  round {round_ + 1} {'CreateBooking':<13} edge  {brief(bookings[-1])}")
    return report(runs, bookings, idle, load, args)


def bench_bookings(mesh: Mesh, args: argparse.Namespace, load: Load, work: Path) -> None:
    """Booking create alone: for profiling the write path and A/B runs of it."""
    edge_url = f"http://127.0.0.1:{mesh.ports.edge}"
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        tokens = sign_in_users(http, args.users)
        ids = flight_ids(http, args.flights)
    service_pids = {name: instance_pids(mesh, name) for name in SERVICES}
    edge = Target(
        "edge", edge_url, {"envoy": [procs.pid_listening_on(mesh.ports.admin)], **service_pids}
    )
    wait_until(lambda: risks_pending(mesh) == 0, RISKS_SECONDS)
    print_setup(load, args, len(ids))
    print(f"  pids: {service_pids}", flush=True)
    bookings = []
    for round_ in range(args.rounds):
        script = booking_script(ids, tokens, f"bench{round_}-{uuid.uuid4().hex[:8]}")
        bookings.append(measure(edge, script, load, work))
        print(f"  round {round_ + 1} {'CreateBooking':<13} edge  {brief(bookings[-1])}")
    print_table({"CreateBooking edge": _summary(bookings)}, {})


def flight_ids(http: httpx.Client, count: int) -> list[str]:
    """Up to `count` seeded flight ids, read page by page through the edge."""
    ids: list[str] = []
    token = ""
    while len(ids) < count:
        params: dict[str, str | int] = {"page_size": 100}
        if token:
            params["page_token"] = token
        page = http.get("/v1/flights", params=params).raise_for_status().json()
        ids += [flight["flight_id"] for flight in page["flights"]]
        token = page.get("next_page_token", "")
        if not token:
            break
    return ids[:count]


def risks_pending(mesh: Mesh) -> int:
    """Upcoming flights booking-svc has not yet stored a delay risk for (its first pass)."""
    database = mesh.var_dir / "db" / "booking-svc.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM flights LEFT JOIN flight_risks USING (flight_id)"
            " WHERE flight_risks.flight_id IS NULL AND departure_time > datetime('now')"
        ).fetchone()
    return int(count)


def instance_pids(mesh: Mesh, service: str) -> list[int]:
    return [
        procs.pid_listening_on(int(instance["Port"]))
        for instance in mesh.instances(service, passing=False)
    ]


def same_bytes(edge: Target, other: Target, ids: list[str]) -> None:
    """The twin must answer exactly what the edge answers, or the comparison is void."""
    paths = [f"/v1/flights/{flight_id}" for flight_id in ids] + ["/v1/flights?page_size=20"]
    for path in paths:
        ours = httpx.get(edge.base_url + path, timeout=10).raise_for_status().content
        theirs = httpx.get(other.base_url + path, timeout=10).raise_for_status().content
        if ours != theirs:
            raise RuntimeError(f"twin differs from the edge on {path}:\n{ours!r}\n{theirs!r}")


def idle_rss(mesh: Mesh, service_pids: dict[str, list[int]], other: Target) -> dict[str, float]:
    found = {
        f"{name} #{i + 1}": procs.rss_mib(pid)
        for name, pids in service_pids.items()
        for i, pid in enumerate(pids)
    }
    found["envoy"] = procs.rss_mib(procs.pid_listening_on(mesh.ports.admin))
    found["controlplane"] = procs.rss_mib(procs.pid_listening_on(mesh.ports.ca))
    for i, pid in enumerate(other.pids["twin"]):
        found[f"twin worker #{i + 1}"] = procs.rss_mib(pid)
    return found


def measure(target: Target, script: str, load: Load, work: Path) -> Run:
    """A one-second warm-up that is not counted, then the run and its CPU per request."""
    loadgen.wrk_script(target.base_url, script, Load(1, load.in_flight, load.core), work)
    before = {group: _cpu(pids) for group, pids in target.pids.items()}
    result = loadgen.wrk_script(target.base_url, script, load, work)
    spent = {group: _cpu(pids) - before[group] for group, pids in target.pids.items()}
    per_request = {group: s / max(result.requests, 1) * 1e6 for group, s in spent.items()}
    return Run(result, per_request)


def _cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


_GET_FLIGHT_LUA = """\
local ids = {IDS}
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/flights/" .. ids[math.random(#ids)])
end
"""
_LIST_FLIGHTS_LUA = """\
request = function()
  return wrk.format("GET", "/v1/flights?page_size=20")
end
"""
_GET_MODEL_LUA = """\
request = function()
  return wrk.format("GET", "/v1/models/flight-delay")
end
"""
_BOOKING_LUA = """\
local ids = {IDS}
local tokens = {TOKENS}
local n = 0
local headers = {["content-type"] = "application/json"}
request = function()
  n = n + 1
  headers["authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]
  local body = '{"flight_id":"' .. ids[(n % #ids) + 1] .. '","seat_class":"ECONOMY",'
    .. '"passenger_name":"Bench Runner","request_id":"PREFIX-' .. n .. '"}'
  return wrk.format("POST", "/v1/bookings", headers, body)
end
"""


def get_flight_script(ids: list[str]) -> str:
    """A random one of `ids` per request (the same sequence on both sides)."""
    return _GET_FLIGHT_LUA.replace("IDS", _lua_list(ids))


def list_flights_script() -> str:
    return _LIST_FLIGHTS_LUA


def get_model_script() -> str:
    return _GET_MODEL_LUA


def booking_script(ids: list[str], tokens: list[str], prefix: str) -> str:
    """A new request_id per request, over all the flights in turn, each by the next of
    the users whose valid `tokens` are given (each booking's account check is another
    user's, as in production)."""
    script = _BOOKING_LUA.replace("IDS", _lua_list(ids)).replace("TOKENS", _lua_list(tokens))
    return script.replace("PREFIX", prefix)


def sign_in_users(http: httpx.Client, count: int) -> list[str]:
    """Access tokens of `count` new users, one after the other: user-svc refuses password
    hashing beyond its CPU (429 CPU_BUSY), and this is setup, not load."""
    return [sign_in(http) for _ in range(count)]


def _lua_list(items: list[str]) -> str:
    return ",".join(f'"{item}"' for item in items)


def brief(run: Run) -> str:
    r = run.result
    cpu = " ".join(f"{group.removesuffix('-svc')} {us:,.0f}" for group, us in run.cpu_us.items())
    return (
        f"{r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:7.1f} ms  "
        f"errors {r.errors}  CPU us/req: {cpu}"
    )


def _median(runs: list[Run], value: Callable[[Run], float]) -> float:
    return float(statistics.median(value(run) for run in runs))


def report(
    runs: dict[str, dict[str, list[Run]]],
    bookings: list[Run],
    idle: dict[str, float],
    load: Load,
    args: argparse.Namespace,
) -> dict[str, object]:
    rows: dict[str, dict[str, float]] = {}
    for name, sides in runs.items():
        for side, measured in sides.items():
            rows[f"{name} {side}"] = _summary(measured)
    rows["CreateBooking edge"] = _summary(bookings)
    print_table(rows, idle)

    def ratio(name: str, key: str) -> float:
        return rows[f"{name} edge"][key] / rows[f"{name} twin"][key]

    service_rss = [mib for name, mib in idle.items() if name.split(" #")[0] in SERVICES]
    return {
        "getflight_rps_vs_twin": ratio("GetFlight", "rps"),
        "getflight_p99_vs_twin": ratio("GetFlight", "p99_ms"),
        "getflight_c1_p50_vs_twin": ratio("GetFlight c1", "p50_ms"),
        # The least a lone call through the edge to an instance took, against the twin.
        "getmodel_c1_p50_vs_getflight_twin": rows[f"{FLOOR} edge"]["p50_ms"]
        / rows["GetFlight c1 twin"]["p50_ms"],
        "listflights_rps_vs_twin": ratio("ListFlights", "rps"),
        "booking_create_rps": rows["CreateBooking edge"]["rps"],
        "booking_create_p99_ms": rows["CreateBooking edge"]["p99_ms"],
        "idle_rss_mib_max": max(service_rss),
        "rows": rows,
        "idle_rss_mib": idle,
        "setup": {
            "cores": os.cpu_count(),
            "wrk_core": load.core,
            "in_flight": load.in_flight,
            "seconds": load.seconds,
            "rounds": args.rounds,
            "booking_instances": args.instances,
            "flight_ids": args.flights,
            "load_average_after": os.getloadavg()[:2],
        },
    }


def _summary(runs: list[Run]) -> dict[str, float]:
    summary = {
        "rps": _median(runs, lambda r: r.result.rps),
        "p50_ms": _median(runs, lambda r: r.result.p50_ms),
        "p99_ms": _median(runs, lambda r: r.result.p99_ms),
        "errors": float(sum(r.result.errors for r in runs)),
        "requests": float(sum(r.result.requests for r in runs)),
    }
    for group in runs[0].cpu_us:
        summary[f"cpu_us_{group}"] = float(statistics.median(r.cpu_us[group] for r in runs))
    if "envoy" in runs[0].cpu_us:
        summary["cpu_us_services"] = sum(summary[f"cpu_us_{name}"] for name in SERVICES)
    return summary


def print_setup(load: Load, args: argparse.Namespace, flights: int) -> None:
    print(
        f"\n{os.cpu_count()} cores; wrk pinned to core {load.core} (taskset); "
        f"{load.in_flight} connections (c1: one); {load.seconds} s per run after a 1 s "
        f"warm-up; {args.rounds} alternating rounds; {flights} flight ids; "
        f"{args.instances} booking-svc instances / twin workers; {load_average()}\n",
        flush=True,
    )


def _split(row: dict[str, float]) -> str:
    if "cpu_us_envoy" not in row:
        return ""
    return " (" + "/".join(f"{row[f'cpu_us_{name}']:,.0f}" for name in SERVICES) + ")"


def print_table(rows: dict[str, dict[str, float]], idle: dict[str, float]) -> None:
    print(
        "\n| run | req/s | p50 ms | p99 ms | errors | Envoy CPU us/req "
        "| service CPU us/req (auth/user/booking/predict) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, row in rows.items():
        service = row.get("cpu_us_services", row.get("cpu_us_twin", float("nan")))
        envoy = row.get("cpu_us_envoy")
        print(
            f"| {name} | {row['rps']:,.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['errors']:.0f} | {'-' if envoy is None else f'{envoy:,.0f}'} "
            f"| {service:,.0f}{_split(row)} |"
        )
    print("\n| process (idle) | RSS MiB |\n|---|--:|")
    for name, mib in idle.items():
        print(f"| {name} | {mib:.1f} |")
    print(f"\nafter the load: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())

"""The cost of each hop to a service, compared in one run: `python bench/hops.py`.

Brings up a whole mesh with `python -m mesh up` on free ports and a temporary state
folder (and always `mesh down` at the end), signs up one user, then loads three calls,
each over four paths, one after the other:

    GetFlight (a seeded flight)   cheap read: one row by key
    ListFlights page_size=20      a page of flights and a page token
    Predict, 100 instances        signed in; scikit-learn on 100 rows in predict-svc

    direct      gRPC straight to one instance (address from Consul's health API)
    mesh        gRPC through Envoy's mesh listener (what services use between them)
    edge gRPC   gRPC through the edge listener (JWT check, routing, buffer, Lua)
    edge REST   REST/JSON through the edge, transcoded to gRPC

Unary gRPC is driven by h2load (4 connections x N/4 streams), REST by wrk (N
connections), both with the same N requests in flight, for a fixed time after a
one-second warm-up, pinned to the last core with taskset. booking-svc runs one
instance by default (predict-svc has one anyway), so every path of a call ends in the
same process and the difference between rows is the cost of the hop, not of more
servers; `--instances 2` gives the mesh of `make up`.

Reading the table: req/s is throughput at that concurrency; p50/p99 are per-request
latencies (ms) as the load generator saw them; `errors` counts transport failures and
non-2xx HTTP statuses from the load generator, and `non-OK` the gRPC codes other than
OK (and CANCELLED, which is the requests cut off when a run stops) the answering
service counted for that method during the run: gRPC errors travel in HTTP 200
trailers, which h2load does not read. RSS is VmRSS before and after all
the load. The machine is shared with whatever else runs: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from airline.booking.v1 import booking_pb2
from airline.predict.v1 import predict_pb2
from bench import loadgen, procs
from bench.loadgen import Load, Result
from mesh.config import ROOT, Ports

GRPC_DEADLINE = "10S"  # sent as grpc-timeout: every call has a deadline


@dataclass(frozen=True)
class Call:
    """One RPC as gRPC (method and message) and as REST (method, path, JSON body)."""

    name: str
    service: str
    method: str
    message: bytes
    rest: tuple[str, str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Mesh:
    """A running mesh, by its ports on loopback, and its state folder."""

    ports: Ports
    var_dir: Path

    def instances(self, service: str, *, passing: bool) -> list[dict[str, Any]]:
        """Consul's instances of `service` (only healthy ones if `passing`)."""
        query = "?passing=true" if passing else ""
        url = f"http://127.0.0.1:{self.ports.consul_http}/v1/health/service/{service}{query}"
        # Consul runs with ACLs (default deny): anonymous reads see no instances.
        token = (self.var_dir / "tokens" / "operator.token").read_text().strip()
        answer = httpx.get(url, headers={"X-Consul-Token": token}, timeout=5)
        return [entry["Service"] for entry in answer.raise_for_status().json()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured time per path")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent requests")
    parser.add_argument("--instances", type=int, default=1, help="booking-svc instances")
    args = parser.parse_args(argv)
    if missing := loadgen.missing_tools():
        print(f"bench needs {', '.join(missing)} on PATH; install: {loadgen.INSTALL_HINT}")
        return 2
    core = (os.cpu_count() or 1) - 1
    load = Load(seconds=args.seconds, in_flight=args.in_flight, core=core)
    with running_mesh(args.instances) as mesh, tempfile.TemporaryDirectory() as work:
        bench(mesh, load, Path(work))
    return 0


@contextmanager
def running_mesh(booking_instances: int, extra_env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """`python -m mesh up` on free ports in a temporary folder; `mesh down` whatever happens."""
    names = [f.name for f in fields(Ports)]
    ports = Ports(**dict(zip(names, free_ports(len(names)), strict=True)))
    var_dir = tempfile.mkdtemp(prefix="airline-bench-")
    env = {
        **os.environ,
        **{f"{name.upper()}_PORT": str(getattr(ports, name)) for name in names},
        "MESH_VAR_DIR": var_dir,
        "BOOKING_SVC_INSTANCES": str(booking_instances),
        **(extra_env or {}),
    }
    try:
        print(f"mesh up in {var_dir} ...", flush=True)
        mesh_command("up", env)
        yield Mesh(ports, Path(var_dir))
    finally:
        mesh_command("down", env)
        shutil.rmtree(var_dir, ignore_errors=True)


def mesh_command(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mesh", command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mesh {command} failed:\n{done.stdout}{done.stderr}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def bench(mesh: Mesh, load: Load, work: Path) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{mesh.ports.edge}", timeout=30) as http:
        token = sign_in(http)
        page = http.get("/v1/flights", params={"page_size": 1}).raise_for_status().json()
    calls = make_calls(page["flights"][0]["flight_id"], token)
    direct = {
        name: mesh.instances(name, passing=True)[0] for name in ("booking-svc", "predict-svc")
    }
    pids = watched_pids(mesh, direct)
    addresses = {call.name: paths(mesh, call, direct[call.service]) for call in calls}
    for call in calls:
        for path, address in addresses[call.name].items():
            probe(call, path, address)
    before = {name: procs.rss_mib(pid) for name, pid in pids.items()}
    print_setup(load)
    rows: list[tuple[str, str, Result, int]] = []
    for call in calls:
        for path, address in addresses[call.name].items():
            result, failed = measure(mesh, call, path, address, load, work)
            rows.append((call.name, path, result, failed))
            print(f"  {call.name:<15} {path:<10} {result.rps:8.0f} req/s", flush=True)
    after = {name: procs.rss_mib(pid) for name, pid in pids.items()}
    print_results(rows)
    print_memory(pids, before, after)
    print(f"\nafter the load: {load_average()}")


def watched_pids(mesh: Mesh, direct: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The processes whose memory is reported, found by the port each listens on."""
    return {
        **{
            f"{name} (direct target)": procs.pid_listening_on(instance["Port"])
            for name, instance in direct.items()
        },
        "envoy": procs.pid_listening_on(mesh.ports.admin),
        "controlplane": procs.pid_listening_on(mesh.ports.ca),
    }


def sign_in(http: httpx.Client) -> str:
    """A new user's access token (the first user of the fresh databases is an admin)."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    password = uuid.uuid4().hex
    user = {"email": email, "password": password, "display_name": "Bench"}
    http.post("/v1/users", json=user).raise_for_status()
    tokens = http.post("/v1/auth/token", json={"email": email, "password": password})
    return str(tokens.raise_for_status().json()["access_token"])


def make_calls(flight_id: str, token: str) -> list[Call]:
    rows = predict_rows(100)
    predict = predict_pb2.PredictRequest(model_id="flight-delay")
    json_format.ParseDict({"instances": rows}, predict)
    return [
        Call(
            "GetFlight", "booking-svc", "/airline.booking.v1.BookingService/GetFlight",
            booking_pb2.GetFlightRequest(flight_id=flight_id).SerializeToString(),
            ("GET", f"/v1/flights/{flight_id}", ""), {},
        ),
        Call(
            "ListFlights 20", "booking-svc", "/airline.booking.v1.BookingService/ListFlights",
            booking_pb2.ListFlightsRequest(page_size=20).SerializeToString(),
            ("GET", "/v1/flights?page_size=20", ""), {},
        ),
        Call(
            "Predict 100", "predict-svc", "/airline.predict.v1.PredictionService/Predict",
            predict.SerializeToString(),
            ("POST", "/v1/models/flight-delay:predict", json.dumps({"instances": rows})),
            {"authorization": f"Bearer {token}"},
        ),
    ]  # fmt: skip


def predict_rows(count: int) -> list[dict[str, str]]:
    """Varied, valid instances of the flight-delay model's features."""
    carriers, origins = ("UA", "AA", "DL", "B6", "WN", "EV"), ("EWR", "JFK", "LGA")
    destinations = ("ORD", "SFO", "LAX", "ATL", "BOS", "MIA", "DEN")
    return [
        {
            "carrier": carriers[i % len(carriers)],
            "origin": origins[i % len(origins)],
            "destination": destinations[i % len(destinations)],
            "scheduled_departure": f"2026-12-{1 + i % 28:02d}T{6 + i % 16:02d}:30:00-05:00",
        }
        for i in range(count)
    ]


def paths(mesh: Mesh, call: Call, instance: dict[str, Any]) -> dict[str, str]:
    """host:port for each path of `call`."""
    return {
        "direct": f"{instance['Address']}:{instance['Port']}",
        "mesh": f"127.0.0.1:{mesh.ports.mesh}",
        "edge gRPC": f"127.0.0.1:{mesh.ports.edge}",
        "edge REST": f"127.0.0.1:{mesh.ports.edge}",
    }


def probe(call: Call, path: str, address: str) -> None:
    """One call, which must succeed: the load generators do not read gRPC status."""
    if path == "edge REST":
        method, url, body = call.rest
        headers = {**call.headers, "content-type": "application/json"}
        httpx.request(
            method, f"http://{address}{url}", content=body or None, headers=headers, timeout=10
        ).raise_for_status()
        return
    with grpc.insecure_channel(address) as channel:
        # The message goes out as the very bytes the load generator sends.
        send = channel.unary_unary(call.method, _same_bytes, _same_bytes)
        send(call.message, metadata=tuple(call.headers.items()), timeout=10)


def _same_bytes(data: bytes) -> bytes:
    return data


def measure(
    mesh: Mesh, call: Call, path: str, address: str, load: Load, work: Path
) -> tuple[Result, int]:
    """A one-second warm-up that is not counted, then the measured run and its non-OK codes."""
    drive(call, path, address, Load(seconds=1, in_flight=load.in_flight, core=load.core), work)
    counted = non_ok(mesh, call)
    result = drive(call, path, address, load, work)
    return result, non_ok(mesh, call) - counted


def drive(call: Call, path: str, address: str, load: Load, work: Path) -> Result:
    if path == "edge REST":
        method, url, body = call.rest
        headers = {**call.headers, **({"content-type": "application/json"} if body else {})}
        return loadgen.wrk(f"http://{address}{url}", method, body, headers, load, work)
    headers = {**call.headers, "grpc-timeout": GRPC_DEADLINE}
    return loadgen.h2load(f"http://{address}{call.method}", call.message, headers, load, work)


def non_ok(mesh: Mesh, call: Call) -> int:
    """Codes other than OK that `call`'s service counted for its method, on all instances.

    CANCELLED is left out: it is the calls still in flight when a run stops.
    """
    method = call.method.rsplit("/", 1)[1]
    total = 0.0
    for instance in mesh.instances(call.service, passing=False):
        url = f"http://{instance['Address']}:{instance['Meta']['metrics_port']}/metrics"
        for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
            total += sum(
                sample.value
                for sample in family.samples
                if sample.name == "grpc_server_handled_total"
                and sample.labels["grpc_method"] == method
                and sample.labels["grpc_code"] not in ("OK", "CANCELLED")
            )
    return int(total)


def print_setup(load: Load) -> None:
    print(
        f"\n{os.cpu_count()} cores; load generator pinned to core {load.core} "
        f"(taskset -c {load.core}); {load.in_flight} requests in flight; "
        f"{load.seconds} s per path after a 1 s warm-up; {load_average()}\n",
        flush=True,
    )


def load_average() -> str:
    """The machine's load, which says how much else competed for the cores."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def print_results(rows: list[tuple[str, str, Result, int]]) -> None:
    print("\n| call | path | req/s | vs direct | p50 ms | p99 ms | requests | errors | non-OK |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    direct: dict[str, float] = {}
    for name, path, r, bad in rows:
        direct.setdefault(name, r.rps)  # the first path of each call is "direct"
        print(
            f"| {name} | {path} | {r.rps:,.0f} | {r.rps / direct[name]:.2f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.requests:,} | {r.errors} | {bad} |"
        )


def print_memory(pids: dict[str, int], before: dict[str, float], after: dict[str, float]) -> None:
    print("\n| process | pid | RSS before MiB | RSS after MiB | change MiB |")
    print("|---|--:|--:|--:|--:|")
    for name, pid in pids.items():
        print(
            f"| {name} | {pid} | {before[name]:.1f} | {after[name]:.1f} "
            f"| {after[name] - before[name]:+.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())

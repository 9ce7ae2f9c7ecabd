"""What operators do and see: Consul, grpcurl on instances, metrics, failover, scaling."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from airline.user.v1 import (
    user_internal_pb2,
    user_internal_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from contract.routes import load, workload
from mesh.config import ROOT, MeshConfig
from tests.integration.conftest import Account, Mesh
from tests.integration.rest import INSTANCE
from tests.process.conftest import GRPCURL, service_process
from tests.support import wait_for

SUPERVISORCTL = str(Path(GRPCURL).with_name("supervisorctl"))

pytestmark = pytest.mark.integration

CONTRACT = load(ROOT / "generated" / "airline.pb")
# Each service's public gRPC service: what its instances list and report health for.
FULL_NAMES = {workload(service): service for service in CONTRACT.services}


def _grpcurl(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, *mesh.grpcurl_tls, "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _handled(metrics_port: int | str, method: str) -> float:
    """How many calls of `method` an instance answered OK, from its own metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("grpc_server_handled_total{")
            and 'grpc_code="OK"' in line
            and f'grpc_method="{method}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(
    ("service", "count"),
    sorted(MeshConfig.from_env({}).instances.items()),
)
def test_every_instance_is_registered_with_a_passing_grpc_check_and_meta(
    mesh: Mesh, service: str, count: int
) -> None:
    instances = mesh.instances(service)
    assert len(instances) >= count
    for entry in instances:
        meta = entry["Service"]["Meta"]
        assert meta["version"]
        assert int(meta["metrics_port"]) > 0
        (check,) = [c for c in entry["Checks"] if c["ServiceID"]]
        assert check["Status"] == "passing"
        assert check["Type"] == "grpc"


@pytest.mark.parametrize("service", sorted(FULL_NAMES))
def test_operator_lists_describes_and_health_checks_an_instance_with_grpcurl(
    mesh: Mesh, service: str
) -> None:
    entry = mesh.instances(service)[0]["Service"]
    target = f"{entry['Address']}:{entry['Port']}"
    listed = _grpcurl(mesh, target, "list")
    assert FULL_NAMES[service] in listed.stdout.split(), listed.stderr
    described = _grpcurl(mesh, target, "describe", FULL_NAMES[service])
    assert "rpc " in described.stdout, described.stderr
    health = _grpcurl(
        mesh,
        "-d",
        json.dumps({"service": FULL_NAMES[service]}),
        target,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr


def test_metrics_ports_in_consul_meta_serve_prometheus_text(mesh: Mesh) -> None:
    for service in FULL_NAMES:
        port = mesh.instances(service)[0]["Service"]["Meta"]["metrics_port"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "grpc_server_started_total" in text


def test_envoy_admin_serves_prometheus_stats(mesh: Mesh) -> None:
    text = httpx.get(f"{mesh.envoy_admin}/stats/prometheus", timeout=5).text
    assert "envoy_cluster_upstream_rq" in text


def test_public_methods_answer_grpc_clients_on_the_edge(mesh: Mesh) -> None:
    me = mesh.sign_up()
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.edge}") as channel:
        user = user_pb2_grpc.UserServiceStub(channel).GetUser(
            user_pb2.GetUserRequest(user_id="me"),
            metadata=(("authorization", f"Bearer {me.access_token}"),),
            timeout=10,
        )
    assert user.user_id == me.user["user_id"]


def test_internal_methods_are_refused_at_the_edge(mesh: Mesh) -> None:
    me = mesh.sign_up()
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.edge}") as channel:
        stub = user_internal_pb2_grpc.UserInternalServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.VerifyPassword(
                user_internal_pb2.VerifyPasswordRequest(
                    email=me.user["email"], password="correct horse battery"
                ),
                timeout=10,
            )
    assert err.value.code() in {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
    rest = httpx.post(
        f"{mesh.edge}/airline.user.v1.UserInternalService/LookupUser",
        json={"user_id": me.user["user_id"]},
        timeout=10,
    )
    assert rest.status_code == 404


# --- failover and scaling, while requests flow --------------------------------------


@dataclass
class Load:
    """GET /v1/users/me in a loop (user-svc behind the edge), bounded in time."""

    mesh: Mesh
    account: Account
    results: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever the test does
        with self.mesh.client(headers=self.account.headers) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                # Stamped when the request goes out, not when its answer is in: a request
                # sent before a moment and failed after it does not count as after it.
                sent = time.monotonic()
                try:
                    status = http.get("/v1/users/me").status_code
                except httpx.TransportError:
                    status = 0
                self.results.append((sent, status))

    def sent_after(self, moment: float) -> int:
        return sum(1 for t, _ in self.results if t > moment)

    def failures_after(self, moment: float) -> list[tuple[float, int]]:
        return [(t, s) for t, s in self.results if t >= moment and s != 200]


@contextmanager
def flowing(mesh: Mesh, account: Account) -> Iterator[Load]:
    load = Load(mesh, account)
    worker = threading.Thread(target=load.run, daemon=True)
    worker.start()
    try:
        yield load
    finally:
        load.stop.set()
        worker.join(timeout=30)


def _supervised_pid(mesh: Mesh, process: str) -> int:
    out = subprocess.run(
        [SUPERVISORCTL, "-c", str(mesh.var_dir / "supervisord.conf"), "pid", process],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    return int(out)


def _check_status(mesh: Mesh, service: str, instance_id: str) -> str | None:
    for entry in mesh.instances(service, passing=False):
        if entry["Service"]["ID"] == instance_id:
            (check,) = [c for c in entry["Checks"] if c["ServiceID"]]
            return str(check["Status"])
    return None


def test_killing_an_instance_under_load_loses_no_request_once_envoy_knows(
    mesh: Mesh,
) -> None:
    """kill -9 one user-svc instance while requests flow; supervisord restarts it."""
    me = mesh.sign_up()
    before = {e["Service"]["ID"] for e in mesh.instances("user-svc")}
    victim_pid = _supervised_pid(mesh, "user-svc:user-svc-0")
    victim = _instance_of_pid(mesh, victim_pid)
    with flowing(mesh, me) as load:
        wait_for(lambda: len(load.results) > 20, "requests to flow", 60)
        os.kill(victim_pid, signal.SIGKILL)
        wait_for(
            lambda: _check_status(mesh, "user-svc", victim["ID"]) == "critical",
            "Consul's check of the killed instance to go critical",
            60,
        )
        # Envoy learns it from the control plane's next push: wait for that push to show in
        # Envoy's own view rather than guess how long it takes.
        wait_for(
            lambda: not _envoy_routes_to(mesh, "user-svc", victim["Port"]),
            "Envoy to stop routing to the killed instance",
            60,
        )
        learned = time.monotonic()
        wait_for(lambda: load.sent_after(learned) > 30, "requests sent after Envoy learned", 60)
        # The restarted process registers as a new instance and gets traffic again.
        wait_for(lambda: _new_instances(mesh, before), "the restarted instance to register", 120)
        (fresh,) = _new_instances(mesh, before)
        port = fresh["Service"]["Meta"]["metrics_port"]
        wait_for(lambda: _handled(port, "GetUser") > 0, "traffic to the restarted instance", 60)
    assert load.failures_after(learned) == []
    assert sum(1 for _, s in load.results if s == 200) > 50


def _instance_of_pid(mesh: Mesh, pid: int) -> dict[str, Any]:
    """The Consul registration of the instance with this PID (its port is in its log)."""
    log = (mesh.var_dir / "log" / "user-svc-0.log").read_text()
    ports = [int(p) for p in re.findall(r'"event": "serving", "port": (\d+)', log)]
    for entry in mesh.instances("user-svc"):
        if entry["Service"]["Port"] == ports[-1]:
            return dict(entry["Service"])
    pytest.fail(f"no registration for pid {pid} on port {ports[-1]}")


def _envoy_routes_to(mesh: Mesh, service: str, port: int) -> bool:
    """Whether Envoy may route to `service` at this port: it has the host and EDS has
    not marked it unhealthy (an outlier ejection alone is undone after its ejection time)."""
    clusters = httpx.get(f"{mesh.envoy_admin}/clusters", timeout=5).text
    prefix = f"{service}::127.0.0.1:{port}::health_flags::"
    flags = [line.removeprefix(prefix) for line in clusters.splitlines() if line.startswith(prefix)]
    return bool(flags) and "failed_eds_health" not in flags[0]


def _new_instances(mesh: Mesh, before: set[str]) -> list[dict[str, Any]]:
    return [e for e in mesh.instances("user-svc") if e["Service"]["ID"] not in before]


def test_an_instance_started_by_hand_gets_traffic_within_seconds(mesh: Mesh) -> None:
    me = mesh.sign_up()
    env = _user_svc_env(mesh, "user-svc-by-hand")
    with flowing(mesh, me), service_process("services.user_svc", env) as extra:
        wait_for(
            lambda: _check_status(mesh, "user-svc", "user-svc-by-hand") == "passing",
            "the new instance's check to pass",
            60,
        )
        wait_for(
            lambda: _handled(extra.metrics_port, "GetUser") > 0, "traffic to the new instance", 60
        )
        extra.process.send_signal(signal.SIGTERM)
        assert extra.process.wait(timeout=60) == 0
    assert _check_status(mesh, "user-svc", "user-svc-by-hand") is None  # deregistered
    # The next tests share this mesh: not with a host Envoy has yet to hear is gone.
    wait_for(lambda: not _envoy_knows(mesh, extra.port), "Envoy to forget the instance", 60)


def _log_entries(mesh: Mesh, files: str, containing: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(log file's stem, entry) for each whole JSON line of the `files` logs that has
    `containing` in it (matched before parsing: the logs of a long session are large)."""
    for log in (mesh.var_dir / "log").glob(files):
        # The services write while this reads: the text after the last newline may be
        # half a line.
        for raw in log.read_text().split("\n")[:-1]:
            if containing in raw:
                yield log.stem, json.loads(raw)


def _log_lines_with(mesh: Mesh, request_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every JSON log line naming `request_id`, by log file."""
    found: dict[str, list[dict[str, Any]]] = {}
    for stem, entry in _log_entries(mesh, "*-svc*.log", request_id):
        if entry.get("request_id") == request_id:
            found.setdefault(stem, []).append(entry)
    return found


def test_a_requests_id_appears_in_the_log_lines_of_every_service_it_touched(mesh: Mesh) -> None:
    me = mesh.sign_up()
    request_id = f"trace-{uuid.uuid4().hex}"
    with mesh.client() as http:
        flight = http.get("/v1/flights", params={"page_size": 1}).json()["flights"][0]
        booked = http.post(
            "/v1/bookings",
            headers={**me.headers, "x-request-id": request_id},
            json={
                "flight_id": flight["flight_id"],
                "seat_class": "ECONOMY",
                "passenger_name": "Trace Me",
                "request_id": uuid.uuid4().hex,
            },
        )
    assert booked.status_code == 201, booked.text
    assert booked.headers["x-request-id"] == request_id

    def services_logged() -> set[str]:
        return {name.split("-svc")[0] for name in _log_lines_with(mesh, request_id)}

    # A booking asks user-svc (the live-account check); predict-svc only when the
    # flight has no stored delay risk, so its hop is traced with a prediction below.
    wait_for(
        lambda: {"booking", "user"} <= services_logged(),
        "log lines with the request id from booking- and user-svc",
        30,
    )
    for entries in _log_lines_with(mesh, request_id).values():
        assert all(e["event"] for e in entries)

    predicted_id = f"trace-{uuid.uuid4().hex}"
    with mesh.client() as http:
        predicted = http.post(
            "/v1/models/flight-delay:predict",
            headers={**me.headers, "x-request-id": predicted_id},
            json={"instances": [INSTANCE]},
        )
    assert predicted.status_code == 200, predicted.text
    wait_for(
        lambda: (
            {"predict", "user"}
            <= {name.split("-svc")[0] for name in _log_lines_with(mesh, predicted_id)}
        ),
        "log lines with the request id from predict- and user-svc",
        30,
    )


def _user_svc_request_ids(mesh: Mesh, prefix: str) -> set[str]:
    """The request ids starting with `prefix` that user-svc's log lines name, as their own
    or among those a batched lookup answered (`request_ids`)."""
    named: set[str] = set()
    for _, entry in _log_entries(mesh, "user-svc*.log", prefix):
        named.add(entry.get("request_id", ""))
        named.update(entry.get("request_ids", ()))
    return named


def test_every_booking_made_at_once_has_its_id_in_user_svcs_log(mesh: Mesh) -> None:
    """Concurrent bookings' account checks go to user-svc together (one LookupUsers for
    those that arrive while one is in flight); each booking's id is still in its log."""
    me = mesh.sign_up()
    prefix = f"batch-{uuid.uuid4().hex[:8]}-"
    ids = [f"{prefix}{n}" for n in range(24)]
    with mesh.client() as http:
        flights = http.get("/v1/flights", params={"page_size": 8}).json()["flights"]

        def book(n: int) -> int:
            return http.post(
                "/v1/bookings",
                headers={**me.headers, "x-request-id": ids[n]},
                json={
                    "flight_id": flights[n % len(flights)]["flight_id"],
                    "seat_class": "ECONOMY",
                    "passenger_name": "Batch Member",
                    "request_id": uuid.uuid4().hex,
                },
            ).status_code

        with ThreadPoolExecutor(max_workers=len(ids)) as pool:
            codes = list(pool.map(book, range(len(ids))))
    assert codes == [201] * len(ids)
    wait_for(
        lambda: set(ids) <= _user_svc_request_ids(mesh, prefix),
        "every booking's request id in user-svc's log",
        30,
    )


def _supervise(mesh: Mesh, *args: str) -> None:
    subprocess.run(
        [SUPERVISORCTL, "-c", str(mesh.var_dir / "supervisord.conf"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _user_svc_env(mesh: Mesh, instance_id: str) -> dict[str, str]:
    return {
        "CONSUL_HTTP_ADDR": f"127.0.0.1:{mesh.ports.consul_http}",
        "CONSUL_HTTP_TOKEN_FILE": str(mesh.var_dir / "tokens" / "user-svc.token"),
        "MESH_CA_ADDR": f"127.0.0.1:{mesh.ports.ca}",
        "MESH_CA_FILE": str(mesh.pki / "ca.pem"),
        "MESH_ADDR": f"127.0.0.1:{mesh.ports.mesh}",
        "DATABASE_URL": f"sqlite:///{mesh.var_dir / 'db' / 'user-svc.db'}",
        "INSTANCE_ID": instance_id,
        "BCRYPT_COST": "4",
        "CHECK_INTERVAL_SECONDS": "1",
    }


@pytest.mark.parametrize("program", ["controlplane", "consul"])
def test_envoy_keeps_serving_while_the_control_plane_or_consul_is_down(
    mesh: Mesh, program: str
) -> None:
    me = mesh.sign_up()
    before = {service: mesh.instances(service) for service in FULL_NAMES}
    passing = {s: {e["Service"]["ID"]: e["Service"]["Port"] for e in i} for s, i in before.items()}
    _supervise(mesh, "stop", program)
    try:
        with mesh.client(headers=me.headers) as http:
            answers = [http.get("/v1/users/me").status_code for _ in range(20)]
        assert answers == [200] * 20
        assert httpx.get(f"{mesh.edge}/healthz", timeout=5).status_code == 200
    finally:
        _supervise(mesh, "start", program)
        # `start` returns once the process runs, not once the mesh is whole again: a
        # restarted Consul elects itself and re-runs every check (critical until then), a
        # restarted control plane waits for Envoy to reconnect. The next tests share this
        # mesh: hand it over as it was.
        _wait_settled(mesh, passing)


def _passing(mesh: Mesh, service: str) -> dict[str, int] | None:
    """Consul's passing instances of `service` (ID to port), None while it cannot answer."""
    try:
        return {e["Service"]["ID"]: e["Service"]["Port"] for e in mesh.instances(service)}
    except httpx.HTTPError:
        return None


def _envoy_connected(mesh: Mesh) -> bool:
    stats = httpx.get(f"{mesh.envoy_admin}/stats?filter=control_plane.connected_state", timeout=5)
    return "control_plane.connected_state: 1" in stats.text


def _wait_settled(mesh: Mesh, before: dict[str, dict[str, int]]) -> None:
    """Consul passes every instance it passed before, and Envoy routes to each again."""

    def consul_passes_them() -> bool:
        for service, instances in before.items():
            now = _passing(mesh, service)
            if now is None or not instances.items() <= now.items():
                return False
        return True

    def envoy_routes_to_them() -> bool:
        return all(
            _envoy_routes_to(mesh, service, port)
            for service, instances in before.items()
            for port in instances.values()
        )

    wait_for(consul_passes_them, "Consul to pass every instance it passed before", 120)
    wait_for(lambda: _envoy_connected(mesh), "Envoy to reconnect to the control plane", 120)
    wait_for(envoy_routes_to_them, "Envoy to route to every instance again", 120)


def _envoy_knows(mesh: Mesh, port: int) -> bool:
    clusters = httpx.get(f"{mesh.envoy_admin}/clusters", timeout=5).text
    return f"user-svc::127.0.0.1:{port}::" in clusters


def test_control_plane_catches_up_on_what_changed_while_it_was_down(mesh: Mesh) -> None:
    """An instance that leaves while the control plane is down is gone from Envoy once
    it is back. (One cannot join meanwhile: its certificate comes from the control
    plane's CA, so a new instance waits for it.)"""
    me = mesh.sign_up()
    env = _user_svc_env(mesh, "user-svc-while-cp-down")
    with service_process("services.user_svc", env) as extra:
        wait_for(lambda: _envoy_knows(mesh, extra.port), "Envoy to know the new instance", 60)
        _supervise(mesh, "stop", "controlplane")
        try:
            extra.process.send_signal(signal.SIGTERM)
            assert extra.process.wait(timeout=60) == 0
            assert _check_status(mesh, "user-svc", "user-svc-while-cp-down") is None
        finally:
            _supervise(mesh, "start", "controlplane")
    with flowing(mesh, me) as load:
        wait_for(
            lambda: not _envoy_knows(mesh, extra.port),
            "Envoy to forget the instance that left while the control plane was down",
            60,
        )
        forgotten = time.monotonic()
        # Envoy may have forgotten it before the first request went out: keep the load
        # going until answers from after that moment are in, so the check below sees some.
        wait_for(
            lambda: sum(1 for t, _ in load.results if t > forgotten) >= 20,
            "requests answered after Envoy forgot the instance",
            60,
        )
    assert load.failures_after(0) == []

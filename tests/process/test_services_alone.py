"""Each service started alone, as an operator would, and stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from airline.user.v1 import user_pb2, user_pb2_grpc
from tests.process.conftest import Instance, service_process

SERVICES = {
    "services.auth_svc": "airline.auth.v1.AuthService",
    "services.user_svc": "airline.user.v1.UserService",
    "services.booking_svc": "airline.booking.v1.BookingService",
    "services.predict_svc": "airline.predict.v1.PredictionService",
}


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path}/svc.db",
        "MESH_ADDR": "127.0.0.1:1",  # no dependency is up; none is needed to start
        "PREDICT_TRAIN_ROWS": "20000",
        "BOOKING_SEED_DAYS": "1",
        "BCRYPT_COST": "4",
    }


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_service_starts_alone_and_answers_grpcurl_list_and_health(
    module: str, tmp_path: Path
) -> None:
    with service_process(module, _env(tmp_path)) as instance:
        listed = instance.grpcurl(instance.address, "list")
        assert listed.returncode == 0, listed.stderr
        assert SERVICES[module] in listed.stdout.split()
        assert "grpc.health.v1.Health" in listed.stdout.split()
        for name in ("", SERVICES[module]):
            health = instance.grpcurl(
                "-d",
                json.dumps({"service": name}),
                instance.address,
                "grpc.health.v1.Health/Check",
            )
            assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr


def test_metrics_port_serves_prometheus_text(tmp_path: Path) -> None:
    with service_process("services.predict_svc", _env(tmp_path)) as instance:
        instance.grpcurl(instance.address, "airline.predict.v1.PredictionService/ListModels")
        url = f"http://127.0.0.1:{instance.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="ListModels"' in text


def _started(instance: Instance, method: str) -> float:
    url = f"http://127.0.0.1:{instance.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("grpc_server_started_total") and f'grpc_method="{method}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_finishes_calls_in_flight_then_exits_cleanly(tmp_path: Path) -> None:
    # Three slow hashes on one slot: two wait, and waiting is admitted however long it
    # is (the test is about calls in flight at SIGTERM, not about load shedding).
    env = {
        **_env(tmp_path),
        "BCRYPT_COST": "13",
        "CPU_SLOTS": "1",
        "CPU_MAX_WAIT_SECONDS": "60",
    }
    with service_process("services.user_svc", env) as instance:
        channel = grpc.insecure_channel(instance.address)
        stub = user_pb2_grpc.UserServiceStub(channel)
        calls: list[Future[user_pb2.User]] = [
            stub.CreateUser.future(
                user_pb2.CreateUserRequest(
                    email=f"{uuid.uuid4().hex[:8]}@example.com",
                    password="long enough password",
                    display_name="In Flight",
                ),
                timeout=60,
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 30
        while _started(instance, "CreateUser") < 3:  # all three are being served
            assert time.monotonic() < deadline, "calls never reached the server"
        instance.process.send_signal(signal.SIGTERM)
        users = [call.result(timeout=60) for call in calls]
        assert instance.process.wait(timeout=60) == 0
        channel.close()
    assert len({u.user_id for u in users}) == 3
    events = [line.get("event") for line in instance.lines]
    assert events.index("stopping") < events.index("stopped")

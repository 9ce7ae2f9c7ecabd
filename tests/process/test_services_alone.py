"""Each service started alone, as an operator would, and stopped with SIGTERM.

Alone is still mutual TLS: each instance serves its certificate from files made by
`python -m controlplane.pki`, and grpcurl calls as the operator; plaintext is only an
explicit development opt-in (INSECURE_PLAINTEXT=1), and with neither a service refuses
to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from airline.user.v1 import user_pb2, user_pb2_grpc
from services.runtime.identity import CredentialFiles, channel_credentials
from tests.process.conftest import (
    ROOT,
    Instance,
    mint_pki,
    run_grpcurl,
    service_process,
    workload_of,
)
from tests.support import operator_files, served_serial

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


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA and the operator's, the edge's and each service's certificates, minted."""
    workloads = [workload_of(module) for module in SERVICES]
    return mint_pki(tmp_path / "pki", "edge", *workloads)


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_service_starts_alone_and_answers_grpcurl_list_and_health(
    module: str, tmp_path: Path, pki: Path
) -> None:
    with service_process(module, _env(tmp_path), pki=pki) as instance:
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


def test_metrics_port_serves_prometheus_text(tmp_path: Path, pki: Path) -> None:
    with service_process("services.predict_svc", _env(tmp_path), pki=pki) as instance:
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


def test_sigterm_finishes_calls_in_flight_then_exits_cleanly(tmp_path: Path, pki: Path) -> None:
    # Three slow hashes on one slot: two wait, and waiting is admitted however long it
    # is (the test is about calls in flight at SIGTERM, not about load shedding).
    env = {
        **_env(tmp_path),
        "BCRYPT_COST": "13",
        "CPU_SLOTS": "1",
        "CPU_MAX_WAIT_SECONDS": "60",
    }
    edge = CredentialFiles(pki / "edge.pem", pki / "edge-key.pem", pki / "ca.pem")
    with service_process("services.user_svc", env, pki=pki) as instance:
        # CreateUser is public: the edge's certificate may call it.
        channel = grpc.secure_channel(instance.address, channel_credentials(edge))
        stub = user_pb2_grpc.UserServiceStub(channel)
        calls = [
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


def test_a_standalone_instance_refuses_plaintext_and_other_cas(tmp_path: Path, pki: Path) -> None:
    other = mint_pki(tmp_path / "other-pki")
    with service_process("services.user_svc", _env(tmp_path), pki=pki) as instance:
        assert instance.grpcurl(instance.address, "list").returncode == 0
        plaintext = run_grpcurl("-plaintext", instance.address, "list")
        assert plaintext.returncode != 0
        stranger = run_grpcurl(
            *("-cacert", str(pki / "ca.pem")),
            *("-cert", str(other / "operator.pem"), "-key", str(other / "operator-key.pem")),
            *(instance.address, "list"),
        )
        assert stranger.returncode != 0


def test_the_operator_may_not_call_a_write_method_of_a_standalone_instance(
    tmp_path: Path, pki: Path
) -> None:
    """The instance enforces the mesh policy from its TLS peer, alone as in the mesh."""
    with service_process("services.user_svc", _env(tmp_path), pki=pki) as instance:
        body = '{"email": "a@example.com", "password": "long enough", "display_name": "A"}'
        created = instance.grpcurl(
            "-d", body, instance.address, "airline.user.v1.UserService/CreateUser"
        )
    assert created.returncode != 0
    assert "PermissionDenied" in created.stderr


def test_a_service_with_no_identity_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLS_", "MESH_CA", "INSECURE"))}
    started = subprocess.run(
        [sys.executable, "-m", "services.user_svc"],
        cwd=ROOT,
        env={**env, **_env(tmp_path), "GRPC_PORT": "0", "METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    last = started.stderr.strip().splitlines()[-1]
    assert "no identity" in last
    assert "INSECURE_PLAINTEXT=1" in last


def test_plaintext_only_when_asked_for_and_then_logged_as_insecure(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "INSECURE_PLAINTEXT": "1"}
    with service_process("services.user_svc", env) as instance:
        assert instance.grpcurl(instance.address, "list").returncode == 0
    warnings = [line for line in instance.lines if line.get("level") == "warning"]
    assert any("INSECURE_PLAINTEXT=1" in str(line.get("event")) for line in warnings)


def test_renewed_certificate_files_are_served_without_a_restart(tmp_path: Path, pki: Path) -> None:
    with service_process("services.predict_svc", _env(tmp_path), pki=pki) as instance:
        before = served_serial(instance.port, operator_files(pki))
        mint_pki(pki, "predict-svc")  # the operator renews: new key and certificate
        after = served_serial(instance.port, operator_files(pki))
    assert before != after
    assert after == _file_serial(pki / "predict-svc.pem")


def _file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number

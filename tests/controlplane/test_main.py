"""`python -m controlplane` as operators and `make up` run it: JSON logs, health, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.controlplane.conftest import (
    ROOT,
    ConsulAgent,
    Envoy,
    GrpcInstance,
    stop_process,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.slow


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        """Every log line so far, each parsed as the JSON object it must be."""
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((line for line in self.lines() if line["event"] == name), None)

    @property
    def xds_addr(self) -> str:
        return str(wait_for(lambda: self.event("serving"), "the serving line")["xds_addr"])


@pytest.fixture
def control_plane_process(consul: ConsulAgent, tmp_path: Path) -> Iterator[Running]:
    env = dict(os.environ, CONSUL_HTTP_ADDR=consul.http_addr, XDS_PORT="0", CONSUL_WAIT_SECONDS="1")
    log_path = tmp_path / "controlplane.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield Running(process, log_path)
    finally:
        stop_process(process)


def health_of(addr: str) -> int | None:
    with grpc.insecure_channel(addr) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return None
        return answer.status  # type: ignore[no-any-return]


def test_serves_once_it_has_read_consul(control_plane_process: Running) -> None:
    addr = control_plane_process.xds_addr
    serving = health_pb2.HealthCheckResponse.SERVING
    wait_for(lambda: health_of(addr) == serving, "control plane health SERVING")
    assert control_plane_process.event("snapshot") is not None


def test_envoy_learns_consul_services_from_the_process(
    consul: ConsulAgent,
    control_plane_process: Running,
    instances: Callable[[], GrpcInstance],
    tmp_path: Path,
) -> None:
    name, instance = unique_name("main"), instances()
    consul.register(name, f"{name}-1", instance.port)
    port = int(control_plane_process.xds_addr.rsplit(":", 1)[1])
    envoy = Envoy(tmp_path / "envoy", port)
    try:
        wait_for(lambda: envoy.hosts(name) == {instance.port: "HEALTHY"}, f"{name} in envoy")
    finally:
        envoy.stop()


def test_sigterm_stops_it_cleanly_with_json_logs(control_plane_process: Running) -> None:
    addr = control_plane_process.xds_addr
    wait_for(lambda: health_of(addr) is not None, "the ADS server to answer")
    control_plane_process.process.send_signal(signal.SIGTERM)
    assert control_plane_process.process.wait(10) == 0
    events = [line["event"] for line in control_plane_process.lines()]
    assert events[-1] == "stopped"
    assert events.index("signal") < events.index("stopping")
    assert all(line["service"] == "controlplane" for line in control_plane_process.lines())

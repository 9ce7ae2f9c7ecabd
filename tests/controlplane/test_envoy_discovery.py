"""Real Consul to real Envoy through the control plane: what registers is routable,
what fails its check stops getting calls, what leaves disappears."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.app import ControlPlane
from tests.consul import ConsulAgent
from tests.controlplane.conftest import Envoy, GrpcInstance, unique_name
from tests.support import wait_for

pytestmark = pytest.mark.slow

HEALTHY, UNHEALTHY = "HEALTHY", "UNHEALTHY"


def check_through(envoy: Envoy, cluster: str) -> grpc.StatusCode | int:
    """gRPC Health/Check sent through Envoy's listener to `cluster`: status or error code."""
    with grpc.insecure_channel(f"127.0.0.1:{envoy.listener_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(), timeout=5, metadata=[("x-cluster", cluster)]
            )
        except grpc.RpcError as err:
            return err.code()
        return answer.status  # type: ignore[no-any-return]


def test_registered_service_becomes_a_cluster_with_a_healthy_endpoint(
    consul: ConsulAgent, envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    name, instance = unique_name("appear"), instances()
    consul.register(name, f"{name}-1", instance.port)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} healthy in envoy")


def test_calls_through_envoy_reach_the_registered_instance(
    consul: ConsulAgent, envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    """Proves the pushed cluster really speaks HTTP/2 to the instance."""
    name, instance = unique_name("call"), instances()
    consul.register(name, f"{name}-1", instance.port)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} healthy in envoy")
    # Admin shows the main thread's view; a worker gets the new host a moment later.
    wait_for(
        lambda: check_through(envoy, name) == health_pb2.HealthCheckResponse.SERVING,
        f"a call through envoy to reach {name}",
    )


def test_failing_check_marks_the_endpoint_unhealthy_and_stops_calls(
    consul: ConsulAgent, envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    name, instance = unique_name("fail"), instances()
    consul.register(name, f"{name}-1", instance.port)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} healthy")

    instance.serving(False)
    wait_for(lambda: envoy.hosts(name) == {instance.port: UNHEALTHY}, f"{name} unhealthy")
    # The admin endpoint shows the main thread's view; each worker applies the update a
    # moment later, so the first call may still find the old host set.
    wait_for(
        lambda: check_through(envoy, name) == grpc.StatusCode.UNAVAILABLE,
        f"calls to {name} to stop",
    )

    instance.serving(True)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} healthy again")


def test_deregistered_instance_disappears_and_the_other_stays(
    consul: ConsulAgent, envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    name, first, second = unique_name("leave"), instances(), instances()
    consul.register(name, f"{name}-1", first.port)
    consul.register(name, f"{name}-2", second.port)
    both = {first.port: HEALTHY, second.port: HEALTHY}
    wait_for(lambda: envoy.hosts(name) == both, f"both {name} instances healthy")

    consul.deregister(f"{name}-1")
    wait_for(lambda: envoy.hosts(name) == {second.port: HEALTHY}, f"{name}-1 gone from envoy")


def test_service_whose_last_instance_leaves_is_removed(
    consul: ConsulAgent, envoy: Envoy, instances: Callable[[], GrpcInstance]
) -> None:
    name, instance = unique_name("vanish"), instances()
    consul.register(name, f"{name}-1", instance.port)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} healthy")
    consul.deregister(f"{name}-1")
    wait_for(lambda: envoy.hosts(name) is None, f"cluster {name} removed from envoy")


def test_envoy_that_connects_later_gets_the_current_state(
    consul: ConsulAgent,
    control_plane: ControlPlane,
    envoy: Envoy,
    instances: Callable[[], GrpcInstance],
    tmp_path: Path,
) -> None:
    name, instance = unique_name("late"), instances()
    consul.register(name, f"{name}-1", instance.port)
    wait_for(lambda: envoy.hosts(name) == {instance.port: HEALTHY}, f"{name} in first envoy")

    second = Envoy(tmp_path / "second-envoy", control_plane.socket)
    try:
        # Envoy reports ready only once its first CDS and EDS answers are applied.
        assert second.hosts(name) == {instance.port: HEALTHY}
    finally:
        second.stop()

"""GET /healthz and calls on an edge whose services are down or unknown."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.envoy.conftest import SERVICES, Envoy, status_body
from tests.support import free_ports, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dead_edge(envoy_factory: Callable[[], Envoy]) -> Envoy:
    """Every service's only instance is a port nothing listens on."""
    [dead] = free_ports(1)
    envoy = envoy_factory()
    envoy.start(envoy.render({name: f"127.0.0.1:{dead}" for name in SERVICES}))
    wait_for(
        lambda: envoy.counter("cluster.predict-svc.health_check.failure"),
        "the first failed health check",
        60,
    )
    return envoy


def test_healthz_is_503_while_a_service_has_no_healthy_instance(dead_edge: Envoy) -> None:
    response = httpx.get(f"{dead_edge.edge_url}/healthz", timeout=5)
    assert response.status_code == 503
    assert status_body(response)["code"] == 14


def test_a_call_to_a_service_with_no_healthy_instance_is_503_with_a_status_body(
    dead_edge: Envoy,
) -> None:
    response = httpx.get(f"{dead_edge.edge_url}/v1/models", timeout=5)
    assert response.status_code == 503
    assert status_body(response)["code"] == 14


def test_healthz_is_503_while_a_service_has_no_cluster(
    envoy_factory: Callable[[], Envoy],
) -> None:
    """What an edge sees before the control plane sent every service's cluster."""
    envoy = envoy_factory()
    [port] = free_ports(1)
    envoy.start(envoy.render({"predict-svc": f"127.0.0.1:{port}"}))
    response = httpx.get(f"{envoy.edge_url}/healthz", timeout=5)
    assert response.status_code == 503
    envoy.stop()

"""Envoy retries a real service's UNAVAILABLE, on the edge and on the mesh listener.

The server here runs the project's own ServerInterceptor, which turns a domain
error into the gRPC status: Envoy retries `unavailable` only when grpc-status is
in the response headers, i.e. when the error is trailers-only (no initial
metadata sent before it).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from services.runtime.clients import dial
from services.runtime.errors import Unavailable
from services.runtime.interceptors import ServerInterceptor
from tests.envoy.conftest import SERVICES, Envoy
from tests.support import wait_for

pytestmark = pytest.mark.integration

# Every attempt (and Envoy's backoff between them) must fit in the caller's deadline for
# the attempt counts below to be exact: long, so that a busy machine does not cut them short.
DEADLINE = 30


@dataclass
class Shedding(predict_pb2_grpc.PredictionServiceServicer):
    """GetModel answers UNAVAILABLE (a domain error) on each model id's first attempt."""

    attempts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def GetModel(self, request: Any, context: grpc.ServicerContext) -> predict_pb2.Model:
        with self.lock:
            self.attempts[request.model_id] += 1
            attempt = self.attempts[request.model_id]
        if attempt == 1 or request.model_id.startswith("down-"):
            raise Unavailable("shedding load")
        return predict_pb2.Model(model_id=request.model_id, version=str(attempt))


@dataclass
class RuntimeEdge:
    envoy: Envoy
    servicer: Shedding
    port: int


@pytest.fixture(scope="module")
def runtime_edge(envoy_factory: Callable[[], Envoy]) -> Iterator[RuntimeEdge]:
    servicer = Shedding()  # type: ignore[abstract]  # serves GetModel only
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[ServerInterceptor(None)]
    )
    predict_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        envoy = envoy_factory()
        envoy.start(envoy.render({name: f"127.0.0.1:{port}" for name in SERVICES}))
        wait_for(envoy.healthy, "GET /healthz on the edge to answer 200")
        yield RuntimeEdge(envoy, servicer, port)
    finally:
        server.stop(0).wait(5)


def test_a_domain_error_is_trailers_only_with_the_request_id(runtime_edge: RuntimeEdge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{runtime_edge.port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetModel(
                predict_pb2.GetModelRequest(model_id="down-direct"),
                metadata=(("x-request-id", "trailers-1"),),
                timeout=5,
            )
    error: Any = failed.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert not error.initial_metadata()
    assert dict(error.trailing_metadata())["x-request-id"] == "trailers-1"


def test_the_edge_retries_a_services_unavailable(runtime_edge: RuntimeEdge) -> None:
    response = httpx.get(f"{runtime_edge.envoy.edge_url}/v1/models/shed-edge", timeout=DEADLINE)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "2"
    assert runtime_edge.servicer.attempts["shed-edge"] == 2


def test_the_mesh_retries_a_services_unavailable(runtime_edge: RuntimeEdge) -> None:
    with grpc.insecure_channel(runtime_edge.envoy.mesh_addr) as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        model = stub.GetModel(predict_pb2.GetModelRequest(model_id="shed-mesh"), timeout=DEADLINE)
    assert model.version == "2"
    assert runtime_edge.servicer.attempts["shed-mesh"] == 2


def test_the_mesh_gives_up_after_three_attempts(runtime_edge: RuntimeEdge) -> None:
    with grpc.insecure_channel(runtime_edge.envoy.mesh_addr) as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetModel(predict_pb2.GetModelRequest(model_id="down-mesh"), timeout=DEADLINE)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert runtime_edge.servicer.attempts["down-mesh"] == 3


def test_a_mesh_client_makes_at_most_six_attempts(runtime_edge: RuntimeEdge) -> None:
    """The channel's retryPolicy (2 attempts) times the mesh listener's (3): 2 x 3."""
    method = ("airline.predict.v1.PredictionService", "GetModel")
    channel = dial(runtime_edge.envoy.mesh_addr, default_timeout=DEADLINE, idempotent=[method])
    with channel, pytest.raises(grpc.RpcError) as failed:
        predict_pb2_grpc.PredictionServiceStub(channel).GetModel(
            predict_pb2.GetModelRequest(model_id="down-bounded")
        )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert runtime_edge.servicer.attempts["down-bounded"] == 6

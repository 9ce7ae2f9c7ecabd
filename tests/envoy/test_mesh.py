"""The mesh listener: binary gRPC between services, routed by service, with retries."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc
from tests.envoy.conftest import PASSWORD, EdgeStack, ProbeEdge
from tests.support import at_most_as_sent

pytestmark = pytest.mark.integration


@pytest.fixture
def probe_mesh(probe_edge: ProbeEdge) -> Iterator[predict_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(probe_edge.envoy.mesh_addr) as channel:
        yield predict_pb2_grpc.PredictionServiceStub(channel)


def seen(model: predict_pb2.Model) -> dict[str, object]:
    answer: dict[str, object] = json.loads(model.description)
    return answer


def test_internal_methods_reach_user_svc(edge_stack: EdgeStack) -> None:
    with grpc.insecure_channel(edge_stack.envoy.mesh_addr) as channel:
        stub = user_internal_pb2_grpc.UserInternalServiceStub(channel)
        answer = stub.VerifyPassword(
            user_internal_pb2.VerifyPasswordRequest(
                email=edge_stack.member.email, password=PASSWORD
            ),
            timeout=5,
        )
    assert answer.user.user_id == edge_stack.member.user_id


def test_a_method_no_service_serves_is_unimplemented(edge_stack: EdgeStack) -> None:
    """Health and reflection belong to each instance, not to the mesh."""
    with (
        grpc.insecure_channel(edge_stack.envoy.mesh_addr) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_callers_deadline_is_passed_on(
    probe_mesh: predict_pb2_grpc.PredictionServiceStub,
) -> None:
    model = probe_mesh.GetModel(predict_pb2.GetModelRequest(model_id="mesh-deadline-1"), timeout=3)
    assert 2 < float(seen(model)["time_remaining"]) <= at_most_as_sent(3)  # type: ignore[arg-type]


def test_a_call_without_a_deadline_gets_the_default(
    probe_mesh: predict_pb2_grpc.PredictionServiceStub,
) -> None:
    model = probe_mesh.GetModel(predict_pb2.GetModelRequest(model_id="mesh-deadline-2"))
    assert 10 < float(seen(model)["time_remaining"]) <= at_most_as_sent(15)  # type: ignore[arg-type]


def test_unavailable_is_retried(probe_mesh: predict_pb2_grpc.PredictionServiceStub) -> None:
    model = probe_mesh.GetModel(predict_pb2.GetModelRequest(model_id="flaky-mesh-1"), timeout=5)
    assert seen(model)["attempt"] == 2


def test_retries_stop_after_two(
    probe_edge: ProbeEdge, probe_mesh: predict_pb2_grpc.PredictionServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        probe_mesh.GetModel(predict_pb2.GetModelRequest(model_id="down-mesh-1"), timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe_edge.probe.attempts["down-mesh-1"] == 3


def test_the_request_id_is_passed_on_and_returned(
    probe_mesh: predict_pb2_grpc.PredictionServiceStub,
) -> None:
    model, call = probe_mesh.GetModel.with_call(
        predict_pb2.GetModelRequest(model_id="mesh-request-id"),
        metadata=(("x-request-id", "mesh-id-9"),),
        timeout=5,
    )
    assert seen(model)["metadata"]["x-request-id"] == "mesh-id-9"  # type: ignore[index]
    assert dict(call.initial_metadata())["x-request-id"] == "mesh-id-9"

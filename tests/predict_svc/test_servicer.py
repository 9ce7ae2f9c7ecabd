"""PredictionService over gRPC: models, metrics and batch prediction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_status import rpc_status

from airline.predict.v1 import predict_pb2
from services.runtime.errors import MAX_VIOLATIONS, field_violations
from tests.conftest import Stack

FLIGHT = {
    "carrier": "UA",
    "origin": "EWR",
    "destination": "ORD",
    "scheduled_departure": "2026-12-01T17:30:00-05:00",
}


def _request(*instances: Mapping[str, Any]) -> predict_pb2.PredictRequest:
    structs = []
    for instance in instances:
        s = struct_pb2.Struct()
        s.update(instance)
        structs.append(s)
    return predict_pb2.PredictRequest(model_id="flight-delay", instances=structs)


def test_flight_delay_model_is_listed_with_holdout_metrics(stack: Stack) -> None:
    models = stack.predictions.ListModels(predict_pb2.ListModelsRequest(), timeout=10).models
    (model,) = [m for m in models if m.model_id == "flight-delay"]
    assert {"roc_auc", "brier_score", "accuracy", "base_rate"} <= set(model.metrics)
    assert model.metrics["roc_auc"] > 0.6
    assert {f.name for f in model.features} == set(FLIGHT)
    assert model.version


def test_get_model_returns_it_and_unknown_is_not_found(stack: Stack) -> None:
    got = stack.predictions.GetModel(
        predict_pb2.GetModelRequest(model_id="flight-delay"), timeout=10
    )
    assert got.model_id == "flight-delay"
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.GetModel(predict_pb2.GetModelRequest(model_id="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" not in str(err.value.details())  # no error message quotes a submitted value


def test_predict_needs_a_signed_in_caller(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.Predict(_request(FLIGHT), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_predict_answers_each_instance_in_order(stack: Stack) -> None:
    me = stack.sign_up()
    late_evening = {**FLIGHT, "scheduled_departure": "2026-07-10T20:00:00-04:00"}
    early_morning = {**FLIGHT, "scheduled_departure": "2026-10-10T06:00:00-04:00"}
    response = stack.predictions.Predict(
        _request(late_evening, early_morning), metadata=me.auth, timeout=10
    )
    evening, morning = (p.delay_probability for p in response.predictions)
    assert 0 <= morning < evening <= 1  # summer evenings are the late ones in the data
    assert response.model_version


def test_a_thousand_instances_are_predicted_in_one_call(stack: Stack) -> None:
    me = stack.sign_up()
    response = stack.predictions.Predict(_request(*[FLIGHT] * 1000), metadata=me.auth, timeout=30)
    assert len(response.predictions) == 1000


def test_a_thousand_and_one_instances_are_invalid(stack: Stack) -> None:
    me = stack.sign_up()
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.Predict(_request(*[FLIGHT] * 1001), metadata=me.auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["instances"]


def test_no_instances_are_invalid(stack: Stack) -> None:
    me = stack.sign_up()
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.Predict(_request(), metadata=me.auth, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_feature_is_named_by_instance_and_field(stack: Stack) -> None:
    me = stack.sign_up()
    bad = {**FLIGHT, "origin": "newark", "scheduled_departure": "tomorrow"}
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.Predict(_request(FLIGHT, bad), metadata=me.auth, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in field_violations(err.value)}
    assert fields == {"instances[1].origin", "instances[1].scheduled_departure"}


def _status_size(err: grpc.RpcError) -> int:
    found = rpc_status.from_call(err)
    assert found is not None
    return len(found.SerializeToString())


def test_a_thousand_bad_instances_answer_a_bounded_invalid_argument(stack: Stack) -> None:
    """Every violation listed would outgrow a gRPC trailer; the status keeps the first 50."""
    me = stack.sign_up()
    long_key = "ключ" * 200  # unknown feature names are echoed in field paths
    bad = {**FLIGHT, "origin": "newark", long_key: 1}
    with pytest.raises(grpc.RpcError) as err:
        stack.predictions.Predict(_request(*[bad] * 1000), metadata=me.auth, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err.value)
    assert 0 < len(violations) <= MAX_VIOLATIONS
    assert violations[0][0].startswith("instances[0].")
    assert "2000 in all" in str(err.value.details())
    assert _status_size(err.value) < 5 * 1024

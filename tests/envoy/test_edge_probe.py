"""The edge in front of the probe server: JSON printing, deadlines, retries, tokens."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import httpx
import pytest

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from tests.envoy.conftest import ProbeEdge, status_body
from tests.support import at_most_as_sent

pytestmark = pytest.mark.integration


def seen_by_probe(response: httpx.Response) -> dict[str, Any]:
    """What the probe's GetModel reported receiving."""
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = json.loads(response.json()["description"])
    return seen


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_an_unset_optional_field_is_absent_and_zero_values_are_printed(
    probe_edge: ProbeEdge,
) -> None:
    with probe_edge.client() as client:
        booking = client.get("/v1/bookings/b-1", headers=bearer(probe_edge.probe.token()))
    assert booking.status_code == 200, booking.text
    assert "delay_risk" not in booking.json()
    assert booking.json()["price_cents"] == 0
    assert booking.json()["state"] == "CONFIRMED"  # enums by name


def test_false_and_zero_are_printed(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        flight = client.get("/v1/flights/f-1")
        user = client.get("/v1/users/u-1", headers=bearer(probe_edge.probe.token()))
    assert flight.json()["seats_available"] == 0
    assert user.json()["active"] is False
    assert user.json()["roles"] == []


def test_the_rest_deadline_header_reaches_the_service_as_its_deadline(
    probe_edge: ProbeEdge,
) -> None:
    with probe_edge.client() as client:
        response = client.get(
            "/v1/models/deadline-1", headers={"x-envoy-upstream-rq-timeout-ms": "1500"}
        )
    assert 0.5 < seen_by_probe(response)["time_remaining"] <= at_most_as_sent(1.5)


def test_a_rest_request_without_a_deadline_gets_the_default(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/deadline-2")
    assert 10 < seen_by_probe(response)["time_remaining"] <= at_most_as_sent(15)


def test_a_client_deadline_is_capped(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get(
            "/v1/models/deadline-3", headers={"x-envoy-upstream-rq-timeout-ms": "86400000"}
        )
    assert 50 < seen_by_probe(response)["time_remaining"] <= at_most_as_sent(60)


def test_a_grpc_clients_deadline_is_passed_on(probe_edge: ProbeEdge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{probe_edge.envoy.edge_port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        model = stub.GetModel(predict_pb2.GetModelRequest(model_id="deadline-4"), timeout=2)
    # What matters is that it sees the client's 2 s and not the edge's 15 s default.
    assert 1 < json.loads(model.description)["time_remaining"] <= at_most_as_sent(2)


def test_the_request_id_reaches_the_service(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/request-id-1", headers={"x-request-id": "abc-123"})
    assert seen_by_probe(response)["metadata"]["x-request-id"] == "abc-123"


def test_unavailable_is_retried(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/flaky-1")
    assert seen_by_probe(response)["attempt"] == 2


def test_unavailable_every_time_is_503_after_two_retries(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/down-1")
    assert response.status_code == 503
    assert status_body(response)["code"] == 14
    assert probe_edge.probe.attempts["down-1"] == 3


def test_a_created_hint_becomes_201_with_the_location(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/created-1")
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/models/created-1"
    assert "x-http-status" not in response.headers


def test_grpc_clients_of_the_edge_keep_the_status_hint(probe_edge: ProbeEdge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{probe_edge.envoy.edge_port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        _, call = stub.GetModel.with_call(
            predict_pb2.GetModelRequest(model_id="created-2"), timeout=5
        )
    assert dict(call.initial_metadata())["x-http-status"] == "201"


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "someone-else"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
    ],
    ids=["wrong-audience", "wrong-issuer", "expired"],
)
def test_a_signed_token_with_wrong_claims_is_401(
    probe_edge: ProbeEdge, claims: dict[str, Any]
) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/bookings/b-2", headers=bearer(probe_edge.probe.token(**claims)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert status_body(response)["code"] == 16

"""Every request gets a clean answer from the edge: sizes, types, routes, headers.

Against the probe (what only the edge decides, or what the real services do only
in rare states) and, for the sign-up limit, the real services.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from tests.envoy.conftest import SERVICES, SIGNUP_LIMIT, EdgeStack, Envoy, ProbeEdge, status_body
from tests.support import free_ports, wait_for

pytestmark = pytest.mark.integration

# edge.lua's limits (README: "Limits at the edge").
MAX_URL_BYTES = 4096
MAX_HEADER_BYTES = 6144
INTERNAL_HEADERS = ("grpc-status", "grpc-message", "x-envoy-upstream-service-time", "server")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def field_violations(body: dict[str, Any]) -> list[dict[str, str]]:
    [detail] = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    violations: list[dict[str, str]] = detail["field_violations"]
    return violations


# --- 1. sizes ---------------------------------------------------------------------------


def test_a_30k_id_in_a_path_is_414_with_a_status_body(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/flights/" + "f" * 30_000)
    assert response.status_code == 414
    body = status_body(response)
    assert body["code"] == 3
    assert "fff" not in response.text


def test_a_30k_query_value_is_414_not_429(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/flights", params={"origin": "J" * 30_000})
    assert response.status_code == 414
    assert status_body(response)["code"] == 3


@pytest.mark.parametrize("size", [7_000, 30_000])
def test_an_oversized_header_is_431_with_a_status_body(probe_edge: ProbeEdge, size: int) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/big-header", headers={"x-big": "h" * size})
    assert response.status_code == 431
    assert status_body(response)["code"] == 3
    assert "hhh" not in response.text


def test_headers_beyond_the_codec_limit_are_431(probe_edge: ProbeEdge) -> None:
    """Over max_request_headers_kb (60 KiB) Envoy's codec refuses before any filter."""
    with probe_edge.client() as client:
        response = client.get("/v1/models/huge", headers={"x-big": "h" * 70_000})
    assert response.status_code == 431
    assert status_body(response)["code"] == 3


def test_requests_at_the_limits_always_reach_the_service(probe_edge: ProbeEdge) -> None:
    """What the edge lets through stays under grpc's 8 KiB metadata soft limit, where
    the service would refuse a share of requests at random (429)."""
    model_id = "at-limit-" + "m" * (MAX_URL_BYTES - 200)
    path = f"/v1/models/{model_id}"
    filler = "x" * (MAX_HEADER_BYTES - len(path) - 700)
    with probe_edge.client() as client:
        answers = [client.get(path, headers={"x-filler": filler}).status_code for _ in range(20)]
    assert answers == [200] * 20


def test_a_grpc_client_with_oversized_metadata_gets_invalid_argument(
    probe_edge: ProbeEdge,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{probe_edge.envoy.edge_port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetModel(
                predict_pb2.GetModelRequest(model_id="big-metadata"),
                metadata=(("x-big", "m" * 7_000),),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- 2. wrong JSON types ------------------------------------------------------------------


def test_a_wrong_json_type_names_the_field_not_the_value(probe_edge: ProbeEdge) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.31")  # a token bucket of its own
    with httpx.Client(base_url=probe_edge.envoy.edge_url, transport=transport) as client:
        response = client.post(
            "/v1/auth/token", json={"email": "a@example.com", "password": 73519468}
        )
    assert response.status_code == 400
    body = status_body(response)
    assert "73519468" not in response.text
    assert body["code"] == 3
    assert body["message"] == "password: wrong JSON type or value (expected a string)"
    assert field_violations(body) == [
        {"field": "password", "description": "wrong JSON type or value (expected a string)"}
    ]


@pytest.mark.parametrize(
    ("path", "body", "violation"),
    [
        ("/v1/flights", {"seats_total": "secret-ish"}, ("flight.seats_total", "an integer")),
        (
            "/v1/flights",
            {"departure_time": "secret-ish"},
            ("flight.departure_time", "an RFC 3339 timestamp"),
        ),
        ("/v1/bookings", {"seat_class": "secret-ish"}, ("seat_class", "one of the enum's names")),
        ("/v1/models/m:predict", {"instances": ["secret-ish"]}, ("instances[0]", "an object")),
    ],
)
def test_a_wrong_value_is_not_quoted_back(
    probe_edge: ProbeEdge, path: str, body: dict[str, Any], violation: tuple[str, str]
) -> None:
    with probe_edge.client() as client:
        response = client.post(path, json=body, headers=bearer(probe_edge.probe.token()))
    assert response.status_code == 400
    assert "secret-ish" not in response.text
    field, expected = violation
    assert field_violations(status_body(response)) == [
        {"field": field, "description": f"wrong JSON type or value (expected {expected})"}
    ]


def test_a_wrong_query_value_is_not_quoted_back(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/flights", params={"page_size": "secret-ish"})
    assert response.status_code == 400
    assert "secret-ish" not in response.text
    assert field_violations(status_body(response))[0]["field"] == "page_size"


# --- 3. no internals on REST responses ----------------------------------------------------


def test_a_rest_success_carries_no_internal_headers(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/clean-1")
    assert response.status_code == 200
    for name in INTERNAL_HEADERS:
        assert name not in response.headers, name
    assert "x-request-id" in response.headers


def test_a_rest_error_carries_no_internal_headers(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/down-clean")
    assert response.status_code == 503
    for name in INTERNAL_HEADERS:
        assert name not in response.headers, name


def test_grpc_clients_keep_their_trailers(probe_edge: ProbeEdge) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{probe_edge.envoy.edge_port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        model, call = stub.GetModel.with_call(
            predict_pb2.GetModelRequest(model_id="trailers-1"), timeout=5
        )
    assert model.model_id == "trailers-1"
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.trailing_metadata())["x-probe-trailer"] == "kept"


def test_a_header_name_grpc_cannot_carry_is_dropped_not_a_500(probe_edge: ProbeEdge) -> None:
    """HTTP allows `x^y` as a header name, gRPC metadata does not: the call still succeeds."""
    with probe_edge.client() as client:
        response = client.get("/v1/models/odd-header", headers={"x^y": "1", "a|b": "2"})
    assert response.status_code == 200, response.text


# --- 4. paths and methods -----------------------------------------------------------------


def test_a_trailing_slash_is_404(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/flights/")
    assert response.status_code == 404
    assert status_body(response)["code"] == 5


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/flights/f-1", "GET"),
        ("DELETE", "/v1/flights", "GET, POST"),
        ("GET", "/v1/auth/token", "POST"),
        ("POST", "/v1/users/u-1", "DELETE, GET, PATCH"),
    ],
)
def test_an_unknown_method_on_a_known_path_is_405_with_allow(
    probe_edge: ProbeEdge, method: str, path: str, allow: str
) -> None:
    with probe_edge.client() as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert status_body(response)["code"] == 12


# --- 5. Retry-After -----------------------------------------------------------------------


def test_a_services_resource_exhausted_is_429_with_retry_after(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/exhausted-1")
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1


def test_a_services_own_retry_after_is_kept(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/busy-1")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


def test_a_services_unavailable_is_503_with_retry_after(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/down-retry-after")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1


@pytest.fixture(scope="module")
def dead_edge(envoy_factory: Callable[[], Envoy]) -> Iterator[Envoy]:
    """An edge whose every instance is a port nothing listens on."""
    [nobody] = free_ports(1)
    envoy = envoy_factory()
    envoy.start(envoy.render({name: f"127.0.0.1:{nobody}" for name in SERVICES}))
    yield envoy
    envoy.stop()


def test_no_healthy_upstream_is_503_with_retry_after(dead_edge: Envoy) -> None:
    def refused() -> httpx.Response | None:
        response = httpx.get(f"{dead_edge.edge_url}/v1/models", timeout=5)
        return response if response.status_code == 503 else None

    response = wait_for(refused, "the dead edge to answer 503")
    assert status_body(response)["code"] == 14
    assert int(response.headers["retry-after"]) >= 1


# --- 6. 401s ------------------------------------------------------------------------------


def test_a_services_401_carries_www_authenticate(probe_edge: ProbeEdge) -> None:
    with probe_edge.client() as client:
        response = client.get("/v1/models/unauthenticated-1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert status_body(response)["code"] == 16


def test_a_wrong_audience_over_grpc_is_unauthenticated(probe_edge: ProbeEdge) -> None:
    token = probe_edge.probe.token(aud="someone-else")
    with grpc.insecure_channel(f"127.0.0.1:{probe_edge.envoy.edge_port}") as channel:
        stub = booking_pb2_grpc.BookingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetBooking(
                booking_pb2.GetBookingRequest(booking_id="b-aud"),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- 7. the sign-up limit -----------------------------------------------------------------


def test_sign_up_is_rate_limited_per_client_address(edge_stack: EdgeStack) -> None:
    """Refused sign-ups (a password too short, answered by user-svc) count too."""
    flooder = edge_stack.client(local_address="127.0.0.32")
    short = {"email": f"flood.{time.monotonic_ns()}@example.com", "password": "short"}
    answers = [flooder.post("/v1/users", json=short) for _ in range(SIGNUP_LIMIT + 1)]
    assert [a.status_code for a in answers] == [400] * SIGNUP_LIMIT + [429]
    limited = answers[-1]
    assert status_body(limited)["code"] == 8
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit"] == str(SIGNUP_LIMIT)
    assert limited.headers["x-ratelimit-remaining"] == "0"
    other = edge_stack.client(local_address="127.0.0.33").post("/v1/users", json=short)
    assert other.status_code == 400
    assert json.loads(other.text)["code"] == 3

"""The edge in front of the real mesh: clean answers to oversized, mistyped and
misrouted requests, and no internals on REST responses (issue 6)."""

from __future__ import annotations

import grpc
import httpx
import pytest

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from tests.integration.conftest import Account, Mesh

pytestmark = pytest.mark.integration

INTERNAL_HEADERS = ("grpc-status", "grpc-message", "x-envoy-upstream-service-time", "server")


def expect_status(response: httpx.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == code


def test_a_30k_flight_id_in_the_path_is_414(http: httpx.Client) -> None:
    response = http.get("/v1/flights/" + "F" * 30_000)
    expect_status(response, 414, 3)
    assert "FFFF" not in response.text


def test_a_30k_query_value_is_414(http: httpx.Client) -> None:
    expect_status(http.get("/v1/flights", params={"origin": "J" * 30_000}), 414, 3)


def test_a_30k_booking_id_is_414(http: httpx.Client, flyer: Account) -> None:
    response = http.get("/v1/bookings/" + "b" * 30_000, headers=flyer.headers)
    expect_status(response, 414, 3)


def test_an_oversized_header_is_431(http: httpx.Client) -> None:
    expect_status(http.get("/v1/flights", headers={"x-note": "n" * 30_000}), 431, 3)


def test_a_wrong_json_type_is_400_without_the_value(http: httpx.Client) -> None:
    response = http.post(
        "/v1/auth/token", json={"email": "someone@example.com", "password": 73519468}
    )
    expect_status(response, 400, 3)
    assert "73519468" not in response.text
    [detail] = response.json()["details"]
    assert detail["field_violations"][0]["field"] == "password"


def test_a_rest_success_carries_no_internals(http: httpx.Client) -> None:
    response = http.get("/v1/flights", params={"page_size": 1})
    assert response.status_code == 200
    for name in INTERNAL_HEADERS:
        assert name not in response.headers, name


def test_grpc_clients_of_the_edge_still_get_their_status(mesh: Mesh) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.edge}") as channel:
        stub = booking_pb2_grpc.BookingServiceStub(channel)
        flights, call = stub.ListFlights.with_call(
            booking_pb2.ListFlightsRequest(page_size=1), timeout=10
        )
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetFlight(booking_pb2.GetFlightRequest(flight_id="no-such-flight"), timeout=10)
    assert call.code() == grpc.StatusCode.OK
    assert len(flights.flights) == 1
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_trailing_slash_is_404(http: httpx.Client) -> None:
    expect_status(http.get("/v1/flights/"), 404, 5)


def test_put_on_a_flight_is_405_with_allow(http: httpx.Client) -> None:
    flight_id = http.get("/v1/flights", params={"page_size": 1}).json()["flights"][0]["flight_id"]
    response = http.put(f"/v1/flights/{flight_id}", json={})
    expect_status(response, 405, 12)
    assert response.headers["allow"] == "GET"

"""The edge listener in front of the real services: API.md as REST and gRPC clients see it."""

from __future__ import annotations

import json
import time

import grpc
import jsonschema
import pytest

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc
from tests.envoy.conftest import (
    ORIGIN,
    PASSWORD,
    ROOT,
    TOKEN_LIMIT,
    EdgeStack,
    status_body,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

FLIGHT_DELAY_INSTANCE = {
    "carrier": "UA",
    "origin": "EWR",
    "destination": "IAH",
    "scheduled_departure": "2026-12-01T08:00:00Z",
}


def test_healthz_answers_200_when_every_service_has_a_healthy_instance(
    edge_stack: EdgeStack,
) -> None:
    assert edge_stack.client().get("/healthz").status_code == 200


def test_list_models_answers_json_with_proto_field_names(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/models")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    model = response.json()["models"][0]
    assert model["model_id"] == "flight-delay"
    assert {"version", "description", "features", "metrics", "create_time"} <= model.keys()
    assert "next_page_token" in response.json()  # printed even when empty


def test_unknown_model_is_404_with_a_status_body(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/models/nope")
    assert response.status_code == 404
    body = status_body(response)
    assert body["code"] == 5
    assert "nope" not in str(body["message"])  # no error message quotes a submitted value


def test_unknown_path_is_404_with_a_status_body(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/nothing-here")
    assert response.status_code == 404
    assert status_body(response)["code"] == 5


def test_unknown_query_parameter_is_400(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/models", params={"colour": "blue"})
    assert response.status_code == 400
    assert status_body(response)["code"] == 3


def test_malformed_json_is_400(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert status_body(response)["code"] == 3


def test_unknown_json_field_is_400_naming_the_field(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/users",
        json={"email": "x@example.com", "password": "12345678", "display_name": "X", "admin": 1},
    )
    assert response.status_code == 400
    body = status_body(response)
    assert body["code"] == 3
    details = body["details"]
    assert isinstance(details, list)
    [detail] = details
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["field_violations"] == [{"field": "admin", "description": "unknown field"}]


def test_unknown_field_in_a_nested_message_is_400(edge_stack: EdgeStack) -> None:
    """CreateFlight's body is a Flight: its keys are checked, not the request's."""
    response = edge_stack.client().post(
        "/v1/flights", json={"number": "UA1", "gate": "C3"}, headers=edge_stack.admin.bearer
    )
    assert response.status_code == 400
    assert "gate" in str(status_body(response)["message"])


def test_free_form_prediction_instances_are_not_checked_for_keys(edge_stack: EdgeStack) -> None:
    """`instances` are google.protobuf.Struct: any key is the service's to judge."""
    response = edge_stack.client().post(
        "/v1/models/flight-delay:predict",
        json={"instances": [{**FLIGHT_DELAY_INSTANCE, "tail_number": "N1"}]},
        headers=edge_stack.member.bearer,
    )
    body = status_body(response)
    assert response.status_code == 400
    assert body["message"] != "unknown field: tail_number"
    assert "instances[0].tail_number" in str(body["message"])  # predict-svc's own check


def test_an_admin_deactivates_a_user_and_false_is_printed(edge_stack: EdgeStack) -> None:
    target = edge_stack.sign_up("Deactivated")
    response = edge_stack.client().patch(
        f"/v1/users/{target.user_id}",
        params={"update_mask": "active"},
        json={"active": False},
        headers=edge_stack.admin.bearer,
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False


def test_unknown_key_in_a_patch_body_is_400(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().patch(
        f"/v1/users/{edge_stack.member.user_id}",
        params={"update_mask": "display_name"},
        json={"display_name": "M", "password": "new password"},
        headers=edge_stack.member.bearer,
    )
    assert response.status_code == 400
    assert "password" in str(status_body(response)["message"])


def test_request_fields_may_be_lower_camel_case(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/users",
        json={"email": "camel@example.com", "password": "12345678", "displayName": "Camel"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "Camel"


def documented_body(path: str, verb: str) -> jsonschema.Draft202012Validator:
    """A validator of the operation's request body as generated/openapi.json documents it."""
    document = json.loads((ROOT / "generated" / "openapi.json").read_text())
    body = document["paths"][path][verb]["requestBody"]["content"]["application/json"]
    return jsonschema.Draft202012Validator({**body["schema"], "components": document["components"]})


def test_a_lower_camel_case_body_is_valid_by_the_document_and_booked(
    edge_stack: EdgeStack,
) -> None:
    client = edge_stack.client()
    listed = client.get("/v1/flights", params={"page_size": 1})
    [flight] = listed.json()["flights"]
    body = {
        "flightId": flight["flight_id"],
        "seatClass": "ECONOMY",
        "passengerName": "Ada Camel",
        "requestId": f"camel-{time.monotonic_ns()}",
    }
    assert documented_body("/v1/bookings", "post").is_valid(body)
    response = client.post("/v1/bookings", json=body, headers=edge_stack.member.bearer)
    assert response.status_code == 201, response.text
    booked = response.json()
    assert (booked["flight_id"], booked["passenger_name"]) == (flight["flight_id"], "Ada Camel")


def test_a_field_in_both_spellings_is_400_as_the_document_says(edge_stack: EdgeStack) -> None:
    """The transcoder would keep the later of `display_name` and `displayName`: refused."""
    body = {
        "email": "twice@example.com",
        "password": "secret-Pa55word",
        "display_name": "First Name",
        "displayName": "Second Name",
    }
    assert not documented_body("/v1/users", "post").is_valid(body)
    response = edge_stack.client().post("/v1/users", json=body)
    assert response.status_code == 400
    status = status_body(response)
    assert status["code"] == 3
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {
                    "field": "displayName",
                    "description": "this field is already in the body under its other name",
                }
            ],
        }
    ]
    for value in body.values():
        assert value not in response.text


def documented_query(path: str, verb: str) -> dict[str, str]:
    """The operation's query parameters as generated/openapi.json lists them: alias -> name."""
    document = json.loads((ROOT / "generated" / "openapi.json").read_text())
    parameters = document["paths"][path][verb]["parameters"]
    return {p["name"]: p.get("x-alias-of", p["name"]) for p in parameters if p["in"] == "query"}


@pytest.mark.parametrize("name", ["page_size", "pageSize"])
def test_a_query_parameter_works_under_either_documented_name(
    edge_stack: EdgeStack, name: str
) -> None:
    assert documented_query("/v1/flights", "get")[name] == "page_size"
    client = edge_stack.client()
    for size in (1, 2):
        response = client.get("/v1/flights", params={name: size})
        assert response.status_code == 200, response.text
        assert len(response.json()["flights"]) == size


def test_an_update_mask_in_lower_camel_case_changes_the_field(edge_stack: EdgeStack) -> None:
    account = edge_stack.sign_up("Mask Camel")
    response = edge_stack.client().patch(
        f"/v1/users/{account.user_id}",
        params={"updateMask": "displayName"},
        json={"display_name": "Renamed Camel"},
        headers=account.bearer,
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Renamed Camel"


@pytest.mark.parametrize(
    "query",
    [
        "page_size=17&pageSize=23",
        "pageSize=23&origin=EWR&page%5Fsize=17",  # a percent-encoded name is the same name
    ],
)
def test_a_query_parameter_in_both_spellings_is_400_naming_the_second(
    edge_stack: EdgeStack, query: str
) -> None:
    """The transcoder would keep the later of `page_size` and `pageSize`: refused."""
    response = edge_stack.client().get(f"/v1/flights?{query}")
    assert response.status_code == 400
    status = status_body(response)
    second = "pageSize" if query.startswith("page_size") else "page_size"
    assert status["code"] == 3
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {
                    "field": second,
                    "description": "this field is already in the query under its other name",
                }
            ],
        }
    ]
    for value in ("17", "23"):
        assert value not in response.text


def test_an_update_mask_in_both_spellings_is_400(edge_stack: EdgeStack) -> None:
    """The transcoder would merge the two masks: refused like any field named twice."""
    response = edge_stack.client().patch(
        f"/v1/users/{edge_stack.member.user_id}",
        params=[("update_mask", "display_name"), ("updateMask", "roles")],
        json={"display_name": "Twice", "roles": ["user"]},
        headers=edge_stack.member.bearer,
    )
    assert response.status_code == 400
    assert status_body(response)["message"] == "field given twice: updateMask"


def test_create_user_is_201_with_a_location(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/users",
        json={"email": "located@example.com", "password": "12345678", "display_name": "L"},
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"/v1/users/{response.json()['user_id']}"
    assert "x-http-status" not in response.headers


def test_delete_is_204_with_no_body(edge_stack: EdgeStack) -> None:
    doomed = edge_stack.sign_up("Doomed")
    response = edge_stack.client().delete(f"/v1/users/{doomed.user_id}", headers=doomed.bearer)
    assert response.status_code == 204
    assert response.content == b""
    assert "content-length" not in response.headers
    assert "x-http-status" not in response.headers


def test_body_over_one_mebibyte_is_413(edge_stack: EdgeStack) -> None:
    big = b'{"email": "' + b"a" * (1024 * 1024) + b'"}'
    response = edge_stack.client().post(
        "/v1/users", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert status_body(response)["code"] == 3


def test_the_client_request_id_is_echoed(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/models", headers={"x-request-id": "client-id-42"})
    assert response.headers["x-request-id"] == "client-id-42"


def test_a_request_id_is_made_when_the_client_sends_none(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().get("/v1/nothing-here")
    assert len(response.headers["x-request-id"]) >= 32


def test_predict_without_a_token_is_401_with_www_authenticate(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/models/flight-delay:predict", json={"instances": [FLIGHT_DELAY_INSTANCE]}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert status_body(response)["code"] == 16


def test_a_garbage_token_is_401(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/models/flight-delay:predict",
        json={"instances": [FLIGHT_DELAY_INSTANCE]},
        headers={"authorization": "Bearer not.a.token"},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert status_body(response)["code"] == 16


def test_a_garbage_token_is_401_on_a_route_anyone_may_call(edge_stack: EdgeStack) -> None:
    """allow_missing, not allow_missing_or_failed: a bad token is never ignored."""
    response = edge_stack.client().get(
        "/v1/models", headers={"authorization": "Bearer not.a.token"}
    )
    assert response.status_code == 401


def test_a_valid_token_reaches_predict(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/v1/models/flight-delay:predict",
        json={"instances": [FLIGHT_DELAY_INSTANCE]},
        headers=edge_stack.member.bearer,
    )
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert 0.0 <= prediction["delay_probability"] <= 1.0


def test_signing_in_through_the_edge_gives_a_token_the_edge_accepts(
    edge_stack: EdgeStack,
) -> None:
    client = edge_stack.client(local_address="127.0.0.9")  # a token bucket of its own
    tokens = client.post(
        "/v1/auth/token", json={"email": edge_stack.member.email, "password": PASSWORD}
    )
    assert tokens.status_code == 200, tokens.text
    me = client.get(
        "/v1/users/me", headers={"authorization": f"Bearer {tokens.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["user_id"] == edge_stack.member.user_id


def test_cors_preflight_from_an_allowed_origin_is_answered(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().options(
        "/v1/models/flight-delay:predict",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"]


def test_cors_preflight_from_another_origin_gets_no_cors_headers(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().options(
        "/v1/models",
        headers={"origin": "http://evil.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers


def test_error_responses_carry_cors_headers_for_an_allowed_origin(
    edge_stack: EdgeStack,
) -> None:
    response = edge_stack.client().get("/v1/users/me", headers={"origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in response.headers["access-control-expose-headers"]


def test_token_issuing_is_rate_limited_per_client_address(edge_stack: EdgeStack) -> None:
    """The limit acts before auth-svc: wrong passwords count like right ones."""
    flooder = edge_stack.client(local_address="127.0.0.7")
    wrong = {"email": edge_stack.member.email, "password": "wrong password"}
    answers = [flooder.post("/v1/auth/token", json=wrong) for _ in range(TOKEN_LIMIT + 1)]
    assert [a.status_code for a in answers] == [401] * TOKEN_LIMIT + [429]
    limited = answers[-1]
    assert status_body(limited)["code"] == 8
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit"] == str(TOKEN_LIMIT)
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in limited.headers
    # Another address has its own bucket.
    other = edge_stack.client(local_address="127.0.0.8").post("/v1/auth/token", json=wrong)
    assert other.status_code == 401


def test_internal_service_has_no_rest_route(edge_stack: EdgeStack) -> None:
    response = edge_stack.client().post(
        "/airline.user.v1.UserInternalService/VerifyPassword",
        json={"email": edge_stack.member.email, "password": PASSWORD},
    )
    assert response.status_code == 404
    assert status_body(response)["code"] == 5


def test_internal_service_is_unimplemented_for_grpc_clients_of_the_edge(
    edge_stack: EdgeStack,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{edge_stack.envoy.edge_port}") as channel:
        stub = user_internal_pb2_grpc.UserInternalServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.VerifyPassword(
                user_internal_pb2.VerifyPasswordRequest(
                    email=edge_stack.member.email, password=PASSWORD
                ),
                metadata=tuple(edge_stack.admin.bearer.items()),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_clients_call_public_methods_on_the_edge(edge_stack: EdgeStack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{edge_stack.envoy.edge_port}") as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        model = stub.GetModel(predict_pb2.GetModelRequest(model_id="flight-delay"), timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(predict_pb2.PredictRequest(model_id="flight-delay"), timeout=5)
    assert model.model_id == "flight-delay"
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_access_log_lines_are_json_with_the_request_id(edge_stack: EdgeStack) -> None:
    edge_stack.client().get("/v1/models", headers={"x-request-id": "logged-id-7"})
    log = edge_stack.envoy.workdir / "access.log"

    def logged() -> dict[str, object] | None:
        # Envoy writes while this reads: the text after the last newline may be half a line.
        for line in log.read_text().split("\n")[:-1]:
            entry: dict[str, object] = json.loads(line)
            if entry["request_id"] == "logged-id-7":
                return entry
        return None

    entry = wait_for(logged, "the access log line", 60)
    assert entry["path"] == "/v1/models"
    assert entry["grpc_method"] == "/airline.predict.v1.PredictionService/ListModels"
    assert entry["status"] == 200

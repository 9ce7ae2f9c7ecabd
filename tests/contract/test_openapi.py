"""contract/openapi.py on the real descriptor set: a valid OpenAPI 3.1 document of the edge."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from contract import openapi
from contract.routes import Contract
from contract.schemas import ALIAS_OF, required_fields
from tests.contract.conftest import ROOT

Doc = dict[str, Any]


def schema(document: Doc, name: str) -> Doc:
    return document["components"]["schemas"][name]  # type: ignore[no-any-return]


def operation(document: Doc, path: str, verb: str) -> Doc:
    return document["paths"][path][verb]  # type: ignore[no-any-return]


def test_document_validates_as_openapi_3_1(document: Doc) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_make_gen_wrote_this_same_document() -> None:
    """generated/openapi.json is the generator's output, not an edited copy."""
    written = json.loads((ROOT / "generated" / "openapi.json").read_text())
    from contract.routes import load

    assert written == openapi.document(load(ROOT / "generated" / "airline.pb"))


def test_every_public_method_is_an_operation(contract: Contract, document: Doc) -> None:
    operations = {(verb, path) for path, item in document["paths"].items() for verb in item}
    assert operations == {(r.verb, r.path) for r in contract.routes}
    assert not any("UserInternal" in json.dumps(item) for item in document["paths"].values())


def test_creates_answer_201_with_location_and_delete_204(document: Doc) -> None:
    for path in ("/v1/users", "/v1/flights", "/v1/bookings"):
        created = operation(document, path, "post")["responses"]
        assert "200" not in created
        assert created["201"]["headers"]["Location"]["required"] is True
    deleted = operation(document, "/v1/users/{user_id}", "delete")["responses"]
    assert "content" not in deleted["204"]
    assert "200" in operation(document, "/v1/bookings/{booking_id}:cancel", "post")["responses"]


def test_proto3_json_mapping(document: Doc) -> None:
    booking = schema(document, "airline.booking.v1.Booking")
    assert booking["additionalProperties"] is False
    assert booking["properties"]["create_time"]["format"] == "date-time"
    assert booking["properties"]["booking_id"]["readOnly"] is True
    seat_class = schema(document, "airline.booking.v1.Booking.SeatClass")
    assert seat_class["enum"][:2] == ["SEAT_CLASS_UNSPECIFIED", "ECONOMY"]
    create = schema(document, "airline.booking.v1.CreateBookingRequest")
    required = {"flight_id", "seat_class", "passenger_name", "request_id"}
    assert required_fields(create) == required
    password = schema(document, "airline.user.v1.CreateUserRequest")["properties"]["password"]
    assert password["writeOnly"] is True
    assert (password["minLength"], password["maxLength"]) == (8, 128)
    metrics = schema(document, "airline.predict.v1.Model")["properties"]["metrics"]
    assert metrics["additionalProperties"] == {"type": "number"}


def test_int64_fields_are_strings() -> None:
    from google.protobuf import descriptor_pb2

    from contract.schemas import scalar

    field = descriptor_pb2.FieldDescriptorProto(type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)
    assert scalar(field)["type"] == "string"


def test_descriptions_come_from_proto_comments(document: Doc) -> None:
    flight = schema(document, "airline.booking.v1.Flight")
    assert flight["description"] == "A scheduled flight."
    assert flight["properties"]["number"]["description"].startswith("Carrier code and number")
    cancel = operation(document, "/v1/bookings/{booking_id}:cancel", "post")
    assert cancel["summary"] == "Cancels a booking and frees its seat"


def test_query_parameters_are_the_fields_outside_path_and_body(document: Doc) -> None:
    flights = operation(document, "/v1/flights", "get")["parameters"]
    assert [p["name"] for p in flights if ALIAS_OF not in p] == [
        "origin", "destination", "departure_date", "order_by", "page_size", "page_token",
    ]  # fmt: skip
    assert all(p["in"] == "query" for p in flights)
    patch = operation(document, "/v1/users/{user_id}", "patch")["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in patch] == [
        ("user_id", "path", True),
        # Required under one of its two names, which OpenAPI cannot say: its description does.
        ("update_mask", "query", False),
        ("updateMask", "query", False),
    ]
    assert patch[1]["description"].endswith("Required, as `update_mask` or `updateMask`.")


def test_every_multi_word_query_parameter_has_its_lower_camel_case_alias(document: Doc) -> None:
    """Each alias: optional, the parameter's schema again, marked with the name it stands for."""
    for path, item in document["paths"].items():
        for verb, op in item.items():
            query = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
            originals = {name: p for name, p in query.items() if ALIAS_OF not in p}
            aliases = {name: p for name, p in query.items() if ALIAS_OF in p}
            expected = {
                name.split("_")[0] + "".join(w.capitalize() for w in name.split("_")[1:]): name
                for name in originals
                if "_" in name
            }
            assert {name: p[ALIAS_OF] for name, p in aliases.items()} == expected, (verb, path)
            for alias in aliases.values():
                assert alias["required"] is False
                assert alias["schema"] == originals[alias[ALIAS_OF]]["schema"]
                assert alias["description"].startswith(f"alias of {alias[ALIAS_OF]} ")
    flights = operation(document, "/v1/flights", "get")["parameters"]
    assert [p["name"] for p in flights if ALIAS_OF in p] == [
        "departureDate", "orderBy", "pageSize", "pageToken",
    ]  # fmt: skip


def test_protected_routes_need_a_bearer_token(document: Doc) -> None:
    assert operation(document, "/v1/bookings", "post")["security"] == [{"bearer": []}]
    assert {} in operation(document, "/v1/flights", "get")["security"]
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_documented_errors_have_their_status_and_the_status_schema(document: Doc) -> None:
    booking = operation(document, "/v1/bookings", "post")["responses"]
    for status in ("400", "401", "403", "404", "409", "413", "500", "503", "504"):
        body = booking[status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/google.rpc.Status"}
    token = operation(document, "/v1/auth/token", "post")["responses"]["429"]["headers"]
    assert {"Retry-After", "x-ratelimit-limit", "x-ratelimit-remaining"} <= set(token)


@pytest.mark.parametrize("part", ["requestBody", "responses"])
def test_every_example_fits_its_schema(document: Doc, part: str) -> None:
    """Each operation's examples validate against their own (resolved) schemas."""
    checked = 0
    for item in document["paths"].values():
        for op in item.values():
            bodies = (
                [op["requestBody"]] if part == "requestBody" and "requestBody" in op else []
            ) or ([r for r in op["responses"].values()] if part == "responses" else [])
            for body in bodies:
                media = body.get("content", {}).get("application/json", {})
                if "example" in media:
                    resolver = {**media["schema"], "components": document["components"]}
                    jsonschema.validate(media["example"], resolver)
                    checked += 1
    assert checked >= (9 if part == "requestBody" else 19)


def request_body_validator(document: Doc, path: str, verb: str) -> jsonschema.Validator:
    """A JSON Schema 2020-12 validator of the operation's request body, as documented."""
    body = operation(document, path, verb)["requestBody"]["content"]["application/json"]
    resolved = {**body["schema"], "components": document["components"]}
    return jsonschema.Draft202012Validator(resolved)


def test_every_multi_word_input_field_has_its_lower_camel_case_alias(document: Doc) -> None:
    """Each alias: the field's schema again, write-only, marked with the field it stands for."""
    aliases = 0
    for name, component in document["components"]["schemas"].items():
        properties = component.get("properties", {})
        for field, sub in properties.items():
            if ALIAS_OF not in sub:
                continue
            aliases += 1
            original = properties[sub[ALIAS_OF]]
            head, *rest = sub[ALIAS_OF].split("_")
            assert field == head + "".join(p.capitalize() for p in rest), (name, field)
            assert sub["writeOnly"] is True
            assert not original.get("readOnly"), (name, field)
            same = {k: v for k, v in sub.items() if k not in ("description", "writeOnly", ALIAS_OF)}
            assert same == {
                k: v for k, v in original.items() if k not in ("description", "writeOnly")
            }
            assert component["dependentSchemas"][field] == {"not": {"required": [sub[ALIAS_OF]]}}
        if name.startswith("airline.") and "properties" in component:
            assert component["additionalProperties"] is False, name
    assert aliases > 10
    booking = schema(document, "airline.booking.v1.Booking")["properties"]
    assert "bookingId" not in booking  # output only: no request carries it
    assert "flightId" in booking


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"flightId": "f", "seatClass": "ECONOMY", "passengerName": "A", "requestId": "r"}, True),
        ({"flight_id": "f", "seatClass": "ECONOMY", "passenger_name": "A", "requestId": "r"}, True),
        ({"flightId": "f", "seatClass": "ECONOMY", "passengerName": "A"}, False),
        ({"flightId": "f", "seatClass": "ECONOMY", "passengerName": "", "requestId": "r"}, False),
        (
            {"flightId": "f", "flight_id": "f", "seatClass": "ECONOMY", "passengerName": "A"}
            | {"requestId": "r"},
            False,
        ),
        ({"flightId": "f", "seatClass": "ECONOMY", "passengerName": "A", "requestID": "r"}, False),
    ],
)
def test_the_document_takes_either_name_of_a_field_but_not_both(
    document: Doc, body: Doc, valid: bool
) -> None:
    validator = request_body_validator(document, "/v1/bookings", "post")
    assert validator.is_valid(body) is valid


def test_a_path_variable_in_the_body_is_optional_under_either_name(document: Doc) -> None:
    validator = request_body_validator(document, "/v1/bookings/{booking_id}:cancel", "post")
    assert validator.is_valid({})
    assert validator.is_valid({"bookingId": "b"})
    assert not validator.is_valid({"bookingId": "b", "booking_id": "b"})

"""An example value for each request and response body, built from its schema.

Field names pick realistic values (an email for `email`, an IATA code for `origin`);
anything else gets a value of its type. Request examples leave out read-only
fields, response examples write-only ones, and both the lowerCamelCase aliases.
"""

from __future__ import annotations

from typing import Any

from contract.schemas import ALIAS_OF, REF, Schema, SchemaBuilder

_BY_NAME: dict[str, Any] = {
    "email": "ada@example.com",
    "password": "correct horse battery",
    "display_name": "Ada",
    "passenger_name": "Ada Lovelace",
    "request_id": "b7f3c2e0-checkout-1",
    "user_id": "6f1c1a52-4a5e-4a43-9a8e-0d6a8c9b8f11",
    "flight_id": "0b8e4c7e-5f7a-4c59-8a1d-1b7f4f1f6a2e",
    "booking_id": "5d2a0c3e-9b1f-4f0e-8e43-2c1d7a9f3b60",
    "model_id": "flight-delay",
    "number": "UA1545",
    "origin": "EWR",
    "destination": "IAH",
    "carrier": "UA",
    "currency": "USD",
    "roles": ["user"],
    "token_type": "Bearer",
    "access_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiIuLi4ifQ.c2ln",
    "refresh_token": "rt_5kq2m9x8c7v6b5n4",
    "expires_in": 900,
    "next_page_token": "",
    "seats_total": 180,
    "seats_available": 179,
    "price_cents": 25900,
    "delay_risk": 0.18,
    "delay_probability": 0.18,
    "version": "2026-11-21",
    "model_version": "2026-11-21",
    "instances": [
        {
            "carrier": "UA",
            "origin": "EWR",
            "destination": "ORD",
            "scheduled_departure": "2026-12-01T17:30:00-05:00",
        }
    ],
}
_BY_TYPE: dict[str, Any] = {
    "string": "string",
    "integer": 1,
    "number": 0.5,
    "boolean": True,
    "object": {},
}
_FORMATS = {"date-time": "2026-12-01T22:30:00Z", "date": "2026-12-01", "email": "ada@example.com"}


def request(builder: SchemaBuilder, schema: Schema) -> Any:
    return _example(builder, schema, skip="readOnly", depth=0)


def response(builder: SchemaBuilder, schema: Schema) -> Any:
    return _example(builder, schema, skip="writeOnly", depth=0)


def _example(builder: SchemaBuilder, schema: Schema, skip: str, depth: int) -> Any:
    if "$ref" in schema:
        return _example(builder, builder.components[schema["$ref"][len(REF) :]], skip, depth)
    if "enum" in schema:
        values = [v for v in schema["enum"] if not str(v).endswith("_UNSPECIFIED")]
        return (values or schema["enum"])[0]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema and depth < 4:
        return {
            name: _field(builder, name, sub, skip, depth)
            for name, sub in schema["properties"].items()
            if not sub.get(skip) and ALIAS_OF not in sub
        }
    if kind == "array":
        return [_example(builder, schema.get("items", {}), skip, depth + 1)]
    if "format" in schema and schema["format"] in _FORMATS:
        return _FORMATS[schema["format"]]
    return _BY_TYPE.get(kind if isinstance(kind, str) else "")


def _field(builder: SchemaBuilder, name: str, schema: Schema, skip: str, depth: int) -> Any:
    if name in _BY_NAME:
        return _BY_NAME[name]
    return _example(builder, schema, skip, depth + 1)

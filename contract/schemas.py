"""JSON Schema for proto messages, as Envoy's transcoder maps them to JSON (proto3 JSON).

Names are the proto field names (snake_case), which is how the edge prints them;
int64 kinds are strings, Timestamp an RFC 3339 string, enums their names, and a key
the message lacks is refused (the edge answers 400), hence `additionalProperties: false`.
On input the edge also takes each field's lowerCamelCase JSON name (`passengerName`):
a message lists it as a write-only property marked `x-alias-of`, a required field
with an alias is required under either name, and a body may not use both names of one
field (the edge refuses that with 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2

from contract.routes import Contract, field_behaviors

Schema = dict[str, Any]
Field = descriptor_pb2.FieldDescriptorProto

REF = "#/components/schemas/"
# The extension keyword that marks a property as another's lowerCamelCase alias.
ALIAS_OF = "x-alias-of"

_INT32 = {Field.TYPE_INT32, Field.TYPE_SINT32, Field.TYPE_SFIXED32}
_UINT32 = {Field.TYPE_UINT32, Field.TYPE_FIXED32}
_INT64 = {Field.TYPE_INT64, Field.TYPE_SINT64, Field.TYPE_SFIXED64}
_UINT64 = {Field.TYPE_UINT64, Field.TYPE_FIXED64}

# The JSON forms proto3 gives the well-known types.
WELL_KNOWN: Mapping[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Field paths, comma-separated (snake_case or lowerCamelCase).",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
}

# What the services check beyond the proto types (services/*/domain.py and
# services/runtime/pagination.py; tests/contract/test_schemas.py holds them equal).
LIMITS: Mapping[str, Schema] = {
    "airline.user.v1.CreateUserRequest.email": {"format": "email", "maxLength": 254},
    "airline.user.v1.CreateUserRequest.password": {"minLength": 8, "maxLength": 128},
    "airline.user.v1.CreateUserRequest.display_name": {"maxLength": 100},
    "airline.user.v1.User.display_name": {"maxLength": 100},
    "airline.booking.v1.CreateBookingRequest.passenger_name": {"minLength": 1, "maxLength": 100},
    "airline.booking.v1.CreateBookingRequest.request_id": {"pattern": "^[A-Za-z0-9._:-]{1,64}$"},
    "airline.booking.v1.Flight.origin": {"pattern": "^[A-Z]{3}$"},
    "airline.booking.v1.Flight.destination": {"pattern": "^[A-Z]{3}$"},
    "airline.booking.v1.Flight.currency": {"pattern": "^[A-Z]{3}$"},
    "airline.booking.v1.Flight.seats_total": {"minimum": 1, "maximum": 1000},
    "airline.booking.v1.Flight.price_cents": {"minimum": 1, "maximum": 10_000_000},
    # Query filters: empty is the same as absent (no filter, the default order).
    "airline.booking.v1.ListFlightsRequest.departure_date": {
        "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"
    },
    "airline.booking.v1.ListFlightsRequest.order_by": {
        "enum": ["", "departure_time", "departure_time desc", "price", "price desc"]
    },
    "airline.predict.v1.PredictRequest.instances": {"minItems": 1, "maxItems": 1000},
}
# page_size in every list request: 0 means the default (20), above 100 is clamped.
PAGE_SIZE: Schema = {"minimum": 0, "description_suffix": "Default 20; above 100 is clamped to 100."}


def scalar(field: Field) -> Schema:
    """The schema of one value of a non-message field (enums by reference)."""
    kind = field.type
    if kind == Field.TYPE_STRING:
        return {"type": "string"}
    if kind == Field.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    if kind == Field.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in (Field.TYPE_DOUBLE, Field.TYPE_FLOAT):
        return {"type": "number"}
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _UINT32:
        return {"type": "integer", "format": "int64", "minimum": 0}
    if kind in _INT64 | _UINT64:
        return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    if kind == Field.TYPE_ENUM:
        return {"$ref": REF + field.type_name.lstrip(".")}
    raise ValueError(f"{field.name}: unsupported type {kind}")


def json_name(field: Field) -> str:
    """The field's proto3 JSON name (lowerCamelCase), as protoc computes it."""
    if field.json_name:
        return field.json_name
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def input_alias(field: Field) -> str | None:
    """The other name the edge accepts for `field` in a request body, if it has one.

    None where the JSON name is the field name (`email`), and for output-only fields,
    which a request has no reason to carry.
    """
    alias = json_name(field)
    if alias == field.name or "OUTPUT_ONLY" in field_behaviors(field):
        return None
    return alias


def alias_schema(original: str, schema: Schema) -> Schema:
    """The property `original`'s schema again, as its write-only lowerCamelCase alias."""
    alias = {k: v for k, v in schema.items() if k != "description"}
    alias["description"] = (
        f"Alias of `{original}` (its proto3 JSON name), accepted in requests; responses "
        f"use `{original}`. A body names a field once: both names are refused (400)."
    )
    alias["writeOnly"] = True
    alias[ALIAS_OF] = original
    return alias


def required_group(group: Schema) -> str | None:
    """The field an `allOf` entry requires under either of its names, if it is such a group."""
    options = group.get("anyOf", [])
    if options and all(set(o) == {"required"} for o in options):
        return str(options[0]["required"][0])
    return None


def required_fields(schema: Schema) -> set[str]:
    """The fields `schema` requires, under their proto names (aliases' groups included)."""
    names = set(schema.get("required", []))
    groups = (required_group(g) for g in schema.get("allOf", []))
    return names | {name for name in groups if name}


class SchemaBuilder:
    """Component schemas for the messages and enums a document names, built once each."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.components: dict[str, Schema] = {}

    def ref(self, name: str) -> Schema:
        """A schema for the message or enum `name`: inline for well-known types, else a $ref."""
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name not in self.components:
            self.components[name] = {}  # reserved first: messages may refer to themselves
            if name in self.contract.enums:
                self.components[name] = self._enum(name)
            else:
                self.components[name] = self._message(name)
        return {"$ref": REF + name}

    def field(self, owner: str, field: Field) -> Schema:
        """The schema of a field of message `owner`, with its comment, behaviours and limits."""
        message = self.contract.messages.get(field.type_name.lstrip("."))
        if message is not None and message.options.map_entry:
            key, value = message.field
            schema: Schema = {"type": "object", "additionalProperties": self._value(value)}
            if key.type != Field.TYPE_STRING:
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$|^true$|^false$"}
        elif field.label == Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self._value(field)}
        else:
            schema = self._value(field)
        full = f"{owner}.{field.name}"
        schema.update(LIMITS.get(full, {}))
        if field.name == "page_size":
            schema["minimum"] = PAGE_SIZE["minimum"]
        behaviors = field_behaviors(field)
        if "OUTPUT_ONLY" in behaviors:
            schema["readOnly"] = True
        if "INPUT_ONLY" in behaviors:
            schema["writeOnly"] = True
        description = self.contract.comment(full)
        if field.name == "page_size":
            description = f"{description} {PAGE_SIZE['description_suffix']}".strip()
        if description:
            schema["description"] = description
        if "$ref" in schema and len(schema) > 1:
            # OpenAPI 3.1 allows siblings of $ref; keep the reference first for readers.
            schema = {"$ref": schema.pop("$ref"), **schema}
        return schema

    def _value(self, field: Field) -> Schema:
        if field.type in (Field.TYPE_MESSAGE, Field.TYPE_GROUP):
            return self.ref(field.type_name.lstrip("."))
        if field.type == Field.TYPE_ENUM:
            return self.ref(field.type_name.lstrip("."))
        return scalar(field)

    def _message(self, name: str) -> Schema:
        message = self.contract.messages[name]
        properties: dict[str, Schema] = {}
        required: list[str] = []
        either: list[Schema] = []  # a required field with an alias: one name or the other
        once: dict[str, Schema] = {}  # an alias excludes its field's proto name
        for field in message.field:
            properties[field.name] = self.field(name, field)
            alias = input_alias(field)
            if alias:
                properties[alias] = alias_schema(field.name, properties[field.name])
                once[alias] = {"not": {"required": [field.name]}}
            if "REQUIRED" in field_behaviors(field):
                if alias:
                    either.append({"anyOf": [{"required": [field.name]}, {"required": [alias]}]})
                else:
                    required.append(field.name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if either:
            schema["allOf"] = either
        if once:
            schema["dependentSchemas"] = once
        schema["additionalProperties"] = False
        if self.contract.comment(name):
            schema["description"] = self.contract.comment(name)
        return {"title": name.rsplit(".", 1)[-1], **schema}

    def _enum(self, name: str) -> Schema:
        enum = self.contract.enums[name]
        lines = [f"- `{v.name}`: {self.contract.comment(f'{name}.{v.name}')}" for v in enum.value]
        description = "\n".join([self.contract.comment(name), "", *lines]).strip()
        return {
            "title": name.rsplit(".", 1)[-1],
            "type": "string",
            "enum": [v.name for v in enum.value],
            "description": description,
        }

"""The OpenAPI 3.1 document of the REST API, generated from the descriptor set by `make gen`.

    python -m contract.openapi generated/airline.pb generated/openapi.json

Every public method becomes an operation at its `google.api.http` path and verb, with
the bodies, statuses, errors and security the edge really gives (docs/API.md).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contract import examples
from contract.routes import Contract, Route, load
from contract.schemas import ALIAS_OF, REF, Schema, SchemaBuilder, input_alias, required_group

TITLE = "airline-mesh REST API"
STATUS = "google.rpc.Status"

# gRPC code name -> (code number, HTTP status): the transcoder's mapping (API.md).
CODES: dict[str, tuple[int, int]] = {
    "CANCELLED": (1, 499),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400),
    "ABORTED": (10, 409),
    "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "DATA_LOSS": (15, 500),
    "UNAUTHENTICATED": (16, 401),
}
_CODE_WORD = re.compile(r"\b(" + "|".join(CODES) + r")\b")

# What any route can answer whatever its comment says: bad JSON or an unknown query
# parameter (400), a present but bad token (401), and the mesh's own failures.
_ALWAYS = ("INVALID_ARGUMENT", "UNAUTHENTICATED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED")
_REASONS = {
    400: "Bad input (see the BadRequest detail), bad JSON, or an unknown key or query parameter.",
    401: "No valid access token where one is needed, or a token that is not valid.",
    403: "The token is valid but lacks the right.",
    404: "No such resource (or another user's).",
    409: "Conflict with the current state.",
    413: "The request body is over 1 MiB.",
    414: "The URL is over 4 KiB.",
    429: "Too many requests: wait `Retry-After` seconds.",
    431: "The request headers are over 6 KiB together.",
    499: "The client cancelled the request.",
    500: "An unexpected failure; the body carries the request id, never details.",
    501: "Not implemented.",
    503: "No healthy instance could answer; retry later.",
    504: "The deadline passed before the answer.",
}
_REQUEST_ID = {
    "description": "The request's id (the client's if it sent one); every log line carries it.",
    "schema": {"type": "string"},
}


def error_statuses(route: Route) -> list[int]:
    """The HTTP statuses of the errors `route` can give, from its comment and the edge."""
    named = set(_CODE_WORD.findall(route.comment)) | set(_ALWAYS)
    statuses = {CODES[name][1] for name in named}
    if route.path_fields:
        statuses.add(404)
    if route.body:
        statuses.add(413)
    statuses |= {414, 431}  # the edge's size limits, before any service is asked
    return sorted(statuses)


def document(contract: Contract) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the public routes of `contract`."""
    builder = SchemaBuilder(contract)
    paths: dict[str, dict[str, Any]] = {}
    for route in contract.routes:
        paths.setdefault(route.path, {})[route.verb] = _operation(contract, builder, route)
    schemas = dict(sorted(builder.components.items()))
    schemas.update(_error_schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": _version(contract),
            "description": _description(),
        },
        "servers": [{"url": "/", "description": "the edge that serves this document"}],
        "tags": [
            {"name": name.rsplit(".", 1)[-1], "description": comment}
            for name, comment in sorted(contract.services.items())
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /v1/auth/token.",
                }
            },
        },
    }


def _version(contract: Contract) -> str:
    """The API version: the proto package version every public service shares (v1)."""
    versions = sorted({name.split(".")[-2] for name in contract.services})
    return ",".join(versions)


def _description() -> str:
    return (
        "The public REST/JSON API of the airline mesh, served by Envoy's gRPC-JSON "
        "transcoder and generated from the protos (never edited by hand).\n\n"
        "Responses use the proto field names (snake_case); requests accept them and "
        "lowerCamelCase (the properties and parameters marked `x-alias-of`), never both "
        "names of one field in one request. A JSON key or query parameter the method does "
        "not know is refused with 400. Errors are `google.rpc.Status` bodies. See docs/API.md."
    )


def _operation(contract: Contract, builder: SchemaBuilder, route: Route) -> dict[str, Any]:
    first = route.comment.split("\n\n", 1)[0].replace("\n", " ")
    summary = first.split(". ", 1)[0].rstrip(".")
    operation: dict[str, Any] = {
        "operationId": f"{route.service.rsplit('.', 1)[-1]}_{route.method}",
        "tags": [route.service.rsplit(".", 1)[-1]],
        "summary": summary,
        "description": f"{route.comment}\n\ngRPC: `{route.grpc_path}`".strip(),
        "security": [{}, {"bearer": []}] if route.open else [{"bearer": []}],
    }
    parameters = _parameters(contract, builder, route)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(builder, route)
    if body:
        operation["requestBody"] = body
    operation["responses"] = _responses(builder, route)
    return operation


def _parameters(contract: Contract, builder: SchemaBuilder, route: Route) -> list[Schema]:
    """Path variables, then (for fields outside the body) query parameters, then their aliases.

    The edge takes a query parameter's lowerCamelCase name too (`pageSize`), but not
    both names in one request (400): each alias is listed as an optional parameter
    marked `x-alias-of`, and a required parameter with an alias is required under one
    of its names, which OpenAPI cannot say but its description does.
    """
    request = contract.messages[route.request]
    by_name = {f.name: f for f in request.field}
    parameters: list[Schema] = []
    for name in route.path_fields:
        schema = builder.field(route.request, by_name[name])
        description = schema.pop("description", "")
        schema.pop("readOnly", None)
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description,
                "schema": {**schema, "minLength": 1, "pattern": "^[^/]+$"},
            }
        )
    if route.body == "*":
        return parameters
    aliases: list[Schema] = []
    for field in request.field:
        if field.name in route.path_fields or field.name == route.body:
            continue
        schema = builder.field(route.request, field)
        description = schema.pop("description", "")
        required = field.name == "update_mask"
        alias = input_alias(field)
        if alias:
            aliases.append(_query_alias(alias, field.name, schema))
            if required:
                description = f"{description} Required, as `{field.name}` or `{alias}`.".strip()
        parameters.append(
            {
                "name": field.name,
                "in": "query",
                "required": required and not alias,
                "description": description,
                "schema": schema,
            }
        )
    return parameters + aliases


def _query_alias(alias: str, original: str, schema: Schema) -> Schema:
    """The query parameter `original` again, under its lowerCamelCase name."""
    return {
        "name": alias,
        "in": "query",
        "required": False,
        "description": (
            f"alias of {original} (its proto3 JSON name). A request names a parameter "
            "once: both names are refused (400)."
        ),
        "schema": dict(schema),
        ALIAS_OF: original,
    }


def _request_body(builder: SchemaBuilder, route: Route) -> Schema | None:
    if not route.body:
        return None
    if route.body == "*":
        # Path variables are in the path; the body may repeat them but need not.
        schema = _without(builder, route.request, route.path_fields)
    else:
        field = next(
            f for f in builder.contract.messages[route.request].field if f.name == route.body
        )
        schema = builder.ref(field.type_name.lstrip("."))
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": schema,
                "example": examples.request(builder, schema),
            }
        },
    }


def _without(builder: SchemaBuilder, name: str, fields: Sequence[str]) -> Schema:
    """The component `name` with `fields` not required (they come from the path)."""
    ref = builder.ref(name)
    if not fields:
        return ref
    component = builder.components[name]
    body_name = f"{name}.Body"
    body = {**component, "title": f"{component['title']} body"}
    body["required"] = [r for r in component.get("required", []) if r not in fields]
    # A required field with an alias is an anyOf of its two names (schemas.py).
    body["allOf"] = [g for g in component.get("allOf", []) if required_group(g) not in fields]
    for key in ("required", "allOf"):
        if not body[key]:
            del body[key]
    builder.components[body_name] = body
    return {"$ref": REF + body_name}


def _responses(builder: SchemaBuilder, route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    status = route.success_status
    headers: dict[str, Any] = {"x-request-id": _REQUEST_ID}
    if status == 204:
        responses["204"] = {"description": "Done; no body.", "headers": headers}
    else:
        schema = builder.ref(route.response)
        if status == 201:
            headers["Location"] = {
                "description": "The path of the new resource.",
                "required": True,
                "schema": {"type": "string"},
            }
        responses[str(status)] = {
            "description": "Created." if status == 201 else "OK.",
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": schema,
                    "example": examples.response(builder, schema),
                }
            },
        }
    for code in error_statuses(route):
        responses[str(code)] = _error_response(code)
    responses["default"] = {
        "description": "Any other error, with the same google.rpc.Status body.",
        "content": {"application/json": {"schema": {"$ref": REF + STATUS}}},
    }
    return responses


def _error_response(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"x-request-id": _REQUEST_ID}
    if status == 401:
        headers["WWW-Authenticate"] = {
            "description": "`Bearer` (with the error) when the edge refused the token.",
            "schema": {"type": "string"},
        }
    if status == 429:
        headers.update(
            {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "x-ratelimit-limit": {
                    "description": "Requests allowed per window.",
                    "schema": {"type": "string"},
                },
                "x-ratelimit-remaining": {
                    "description": "Requests left in this window.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "x-ratelimit-reset": {
                    "description": "Seconds until the window resets.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            }
        )
    code = {v[1]: (k, v[0]) for k, v in reversed(CODES.items())}.get(status)
    example = {"code": code[1] if code else 3, "message": _REASONS.get(status, "error")}
    return {
        "description": _REASONS.get(status, "Error."),
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": REF + STATUS}, "example": example}},
    }


def _error_schemas() -> dict[str, Schema]:
    any_detail: Schema = {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    }
    return {
        STATUS: {
            "title": "Status",
            "description": "Every error: the gRPC code, a message, and typed details.",
            "type": "object",
            "properties": {
                "code": {"type": "integer", "description": "The gRPC status code."},
                "message": {"type": "string", "description": "For developers, not end users."},
                "details": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"$ref": REF + "google.rpc.BadRequest"},
                            {"$ref": REF + "google.rpc.ErrorInfo"},
                            any_detail,
                        ]
                    },
                },
            },
            "required": ["code"],
        },
        "google.rpc.BadRequest": {
            "title": "BadRequest",
            "description": "Names each bad field of the request.",
            "type": "object",
            "properties": {
                "@type": {"const": "type.googleapis.com/google.rpc.BadRequest"},
                "field_violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string", "description": "Path of the field."},
                            "description": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["@type"],
        },
        "google.rpc.ErrorInfo": {
            "title": "ErrorInfo",
            "description": "Why: a machine-readable `reason` (docs/API.md lists them).",
            "type": "object",
            "properties": {
                "@type": {"const": "type.googleapis.com/google.rpc.ErrorInfo"},
                "reason": {"type": "string"},
                "domain": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["@type"],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m contract.openapi DESCRIPTOR_SET OUT\n")
        return 2
    text = json.dumps(document(load(Path(args[0]))), indent=2, ensure_ascii=False)
    Path(args[1]).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

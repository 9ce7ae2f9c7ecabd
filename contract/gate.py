"""What a change removed from the REST contract: the OpenAPI half of the contract gate.

    python -m contract.gate BASE_OPENAPI_JSON CURRENT_OPENAPI_JSON

Lists every path, operation, query parameter, response field, request field and enum
value the base document has and the current one lacks, and every request field that
became required or success status that changed. Any of them fails the gate (exit 1)
unless the API version (info.version: v1, v2, ...) changed too. scripts/contract-gate.sh
runs it beside `buf breaking`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from contract.schemas import required_fields

Doc = Mapping[str, Any]


def breaking_changes(base: Doc, current: Doc) -> list[str]:
    """Human-readable lines, one per change that can break a client of `base`."""
    return [*_operations(base, current), *_schemas(base, current)]


def _operations(base: Doc, current: Doc) -> Iterator[str]:
    for path, item in base["paths"].items():
        now = current["paths"].get(path)
        if now is None:
            yield f"removed path {path}"
            continue
        for verb, operation in item.items():
            if verb not in now:
                yield f"removed operation {verb.upper()} {path}"
                continue
            yield from _operation(f"{verb.upper()} {path}", operation, now[verb])


def _operation(label: str, base: Doc, current: Doc) -> Iterator[str]:
    before = {(p["name"], p["in"]): p for p in base.get("parameters", [])}
    after = {(p["name"], p["in"]): p for p in current.get("parameters", [])}
    for key, parameter in before.items():
        if key not in after:
            yield f"{label}: removed {key[1]} parameter {key[0]}"
        elif after[key].get("required") and not parameter.get("required"):
            yield f"{label}: {key[1]} parameter {key[0]} became required"
    for key, parameter in after.items():
        if key not in before and parameter.get("required"):
            yield f"{label}: new required {key[1]} parameter {key[0]}"
    success = {s for s in base["responses"] if s.startswith("2")}
    now = {s for s in current["responses"] if s.startswith("2")}
    if success != now:
        yield f"{label}: success status {sorted(success)} became {sorted(now)}"


def _schemas(base: Doc, current: Doc) -> Iterator[str]:
    schemas = current["components"]["schemas"]
    for name, schema in base["components"]["schemas"].items():
        now = schemas.get(name)
        if now is None:
            yield f"removed schema {name}"
            continue
        for value in schema.get("enum", []):
            if value not in now.get("enum", []):
                yield f"{name}: removed enum value {value}"
        properties = now.get("properties", {})
        for field in schema.get("properties", {}):
            if field not in properties:
                yield f"{name}: removed field {field}"
        newly_required = required_fields(now) - required_fields(schema)
        for field in sorted(newly_required):
            yield f"{name}: field {field} became required"


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m contract.gate BASE_OPENAPI CURRENT_OPENAPI\n")
        return 2
    base, current = (json.loads(Path(a).read_text()) for a in args)
    changes = breaking_changes(base, current)
    for line in changes:
        print(f"breaking: {line}")
    versions = (base["info"]["version"], current["info"]["version"])
    if changes and versions[0] == versions[1]:
        print(f"contract gate: {len(changes)} breaking change(s) within API {versions[1]}")
        return 1
    if changes:
        print(f"contract gate: breaking changes allowed: API {versions[0]} -> {versions[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

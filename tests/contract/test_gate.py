"""The contract gate: contract/gate.py on documents, scripts/contract-gate.sh end to end."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from contract import gate
from contract.gate import breaking_changes
from contract.schemas import ALIAS_OF, required_fields
from tests.contract.conftest import DESCRIPTOR, ROOT

Doc = dict[str, Any]
BOOKING = "airline.booking.v1.Booking"


def test_the_same_document_has_no_breaking_change(document: Doc) -> None:
    assert breaking_changes(document, copy.deepcopy(document)) == []


def test_adding_an_optional_field_and_an_operation_is_not_breaking(document: Doc) -> None:
    current = copy.deepcopy(document)
    current["components"]["schemas"][BOOKING]["properties"]["seat_number"] = {"type": "string"}
    current["paths"]["/v1/airports"] = {"get": {"responses": {"200": {}}}}
    assert breaking_changes(document, current) == []


def test_removals_and_new_requirements_are_breaking(document: Doc) -> None:
    current = copy.deepcopy(document)
    del current["components"]["schemas"][BOOKING]["properties"]["passenger_name"]
    del current["paths"]["/v1/bookings/{booking_id}:cancel"]
    del current["paths"]["/v1/users/{user_id}"]["delete"]
    flights = current["paths"]["/v1/flights"]["get"]
    flights["parameters"] = [p for p in flights["parameters"] if p["name"] != "origin"]
    current["components"]["schemas"]["airline.user.v1.User"]["required"] = ["display_name"]
    assert breaking_changes(document, current) == [
        "removed path /v1/bookings/{booking_id}:cancel",
        "GET /v1/flights: removed query parameter origin",
        "removed operation DELETE /v1/users/{user_id}",
        f"{BOOKING}: removed field passenger_name",
        "airline.user.v1.User: field display_name became required",
    ]


def _gate(current: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/contract-gate.sh", "HEAD"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CURRENT_DESCRIPTOR": str(current)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_gate_passes_for_the_protos_of_head() -> None:
    result = _gate(DESCRIPTOR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "contract gate: passed" in result.stdout


def test_gate_fails_when_a_field_is_removed_within_v1(tmp_path: Path) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    booking_file = next(f for f in files.file if f.package == "airline.booking.v1")
    booking = next(m for m in booking_file.message_type if m.name == "Booking")
    kept = [f for f in booking.field if f.name != "passenger_name"]
    del booking.field[:]
    booking.field.extend(kept)
    changed = tmp_path / "changed.pb"
    changed.write_bytes(files.SerializeToString())
    result = _gate(changed)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"breaking: {BOOKING}: removed field passenger_name" in result.stdout
    assert 'field "5" with name "passenger_name" on message "Booking" was deleted' in result.stdout


def test_breaking_changes_pass_when_the_api_version_changes(document: Doc, tmp_path: Path) -> None:
    current = copy.deepcopy(document)
    del current["paths"]["/v1/flights"]
    current["info"]["version"] = "v2"
    (tmp_path / "base.json").write_text(json.dumps(document))
    (tmp_path / "current.json").write_text(json.dumps(current))
    assert gate.main([str(tmp_path / "base.json"), str(tmp_path / "current.json")]) == 0
    current["info"]["version"] = document["info"]["version"]
    (tmp_path / "current.json").write_text(json.dumps(current))
    assert gate.main([str(tmp_path / "base.json"), str(tmp_path / "current.json")]) == 1


def _without_aliases(document: Doc) -> Doc:
    """The document as it was before lowerCamelCase aliases: `required` lists, no aliases."""
    old = copy.deepcopy(document)
    for component in old["components"]["schemas"].values():
        properties = component.get("properties", {})
        for name in [n for n, sub in properties.items() if ALIAS_OF in sub]:
            del properties[name]
        component.pop("dependentSchemas", None)
        names = required_fields(component)
        component.pop("allOf", None)
        if names:
            component["required"] = sorted(names)
    for item in old["paths"].values():
        for operation in item.values():
            parameters = [p for p in operation.get("parameters", []) if ALIAS_OF not in p]
            for parameter in parameters:
                # Required under either name is not `required`; it was before aliases.
                parameter["required"] |= "Required, as `" in parameter["description"]
            if parameters:
                operation["parameters"] = parameters
    return old


def test_adding_the_lower_camel_case_aliases_is_not_breaking(document: Doc) -> None:
    old = _without_aliases(document)
    assert ALIAS_OF not in json.dumps([old["paths"], old["components"]])
    assert breaking_changes(old, document) == []


def test_an_optional_query_alias_is_not_breaking_and_a_required_one_is(document: Doc) -> None:
    current = copy.deepcopy(document)
    flights = current["paths"]["/v1/flights"]["get"]["parameters"]
    flights.append({"name": "airportCode", "in": "query", "required": False, ALIAS_OF: "x"})
    assert breaking_changes(document, current) == []
    flights[-1]["required"] = True
    assert breaking_changes(document, current) == [
        "GET /v1/flights: new required query parameter airportCode"
    ]


def test_a_field_required_under_either_name_is_a_new_requirement(document: Doc) -> None:
    """A new anyOf(name, alias) group counts as a required field, like `required` does."""
    current = copy.deepcopy(document)
    booking = current["components"]["schemas"][BOOKING]
    booking.setdefault("allOf", []).append(
        {"anyOf": [{"required": ["passenger_name"]}, {"required": ["passengerName"]}]}
    )
    assert breaking_changes(document, current) == [
        f"{BOOKING}: field passenger_name became required"
    ]

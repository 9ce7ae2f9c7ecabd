"""The live edge against its own OpenAPI document: schemathesis, signed in.

The document is generated/openapi.json, which the edge serves as it is (GET /openapi.json,
tests/envoy/test_docs.py); loaded at collection, since schemathesis' lazy
`from_fixture` fails on pytest 9 (it reads `request.node._nodeid`). Every operation
gets a bounded number of generated requests, valid and invalid, and every answer must
be documented, match its schema, and never be a 5xx.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import ROOT, Account, Mesh

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
schema = schemathesis.openapi.from_path(ROOT / "generated" / "openapi.json")


@pytest.fixture(scope="module")
def signed_in(mesh: Mesh) -> Account:
    return mesh.sign_up()


@schema.parametrize()
@settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_edge_answers_as_its_document_says(case: Any, mesh: Mesh, signed_in: Account) -> None:
    # Explicit auth, named as the document names it, so ignored_auth's probes can take
    # it away or replace it (a lower-case copy would ride along with the probes).
    transport = {
        "base_url": mesh.edge,
        "headers": {"Authorization": f"Bearer {signed_in.access_token}"},
        "timeout": 20,
    }
    response = case.call(**transport)
    case.validate_response(
        response, checks=CHECKS, headers=transport["headers"], transport_kwargs=transport
    )


def test_a_header_name_grpc_cannot_carry_is_dropped(mesh: Mesh, signed_in: Account) -> None:
    """HTTP allows `x^y` as a header name, gRPC metadata does not: the edge drops it."""
    response = httpx.get(
        f"{mesh.edge}/v1/bookings", headers={**signed_in.headers, "x^y": "1"}, timeout=10
    )
    assert response.status_code == 200, response.text

"""Property-based fuzzing of every public REST route against the real mesh.

The routes come from contract/routes.py (every method with a google.api.http rule in
the descriptor set Envoy transcodes with), so a new route is fuzzed without touching
this file. Whatever
a client sends, in the path, the query or the body, signed in or not, the edge must
answer below 500, and every error must be a google.rpc.Status JSON body of bounded
size. The number of cases per route is bounded (FUZZ_EXAMPLES, default 25).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import routes
from contract.routes import Route
from tests.integration.conftest import Account, Mesh
from tests.integration.rest import bearer, sign_in

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# An error body larger than this would not fit comfortably in a gRPC trailer.
MAX_ERROR_BYTES = 16_384
MAX_URL_CHARS = 60_000
_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")
Field = descriptor_pb2.FieldDescriptorProto


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString((ROOT / "generated/airline.pb").read_bytes())


def _messages() -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, types: Any) -> None:
        for message in types:
            found[f"{prefix}.{message.name}"] = message
            walk(f"{prefix}.{message.name}", message.nested_type)

    for file in _descriptor_set().file:
        walk(f".{file.package}", file.message_type)
    return found


def name(route: Route) -> str:
    return f"{route.verb.upper()} {route.template}"


MESSAGES = _messages()
ROUTES = routes.load(ROOT / "generated" / "airline.pb").routes

# --- values ---------------------------------------------------------------------------

_LONG = st.sampled_from([64, 65, 129, 257, 1025, 9000, 40_000]).map(lambda n: "x" * n)
_SPECIAL = st.sampled_from(
    ["", "me", "0", "-1", " ", "../..", "%", "null", "💥", "\x00", "a/b", "9999-12-31", "ZZZ"]
)
TEXT = st.one_of(st.text(max_size=40), _LONG, _SPECIAL)
# Raw bytes for paths and queries: invalid UTF-8 included, percent-encoded on the wire.
RAW = st.one_of(
    TEXT.map(lambda s: quote(s, safe="")),
    st.binary(min_size=1, max_size=24).map(lambda b: quote(b, safe="")),
)
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Headers that frame or route the request itself: not the API's, not fuzzed.
FRAMING = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "expect",
    "content-type",
    "authorization",
    "proxy-connection",
}
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_ANY = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def field_value(field: Field, depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON value for `field`: usually of its type, sometimes of any type."""
    if field.type == Field.TYPE_MESSAGE and depth < 3:
        nested = MESSAGES.get(field.type_name)
        typed = message_json(nested, depth + 1) if nested else JSON_ANY
    elif field.type in (Field.TYPE_STRING, Field.TYPE_BYTES, Field.TYPE_ENUM):
        typed = TEXT
    elif field.type == Field.TYPE_BOOL:
        typed = st.booleans()
    else:
        typed = st.one_of(st.integers(min_value=-(2**65), max_value=2**65), TEXT)
    if field.label == Field.LABEL_REPEATED:
        typed = st.lists(typed, max_size=5)
    return st.one_of(typed, typed, typed, JSON_ANY)


def message_json(
    message: descriptor_pb2.DescriptorProto, depth: int = 0, skip: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object for `message`: a subset of its fields, sometimes an unknown key."""
    fields = [f for f in message.field if f.name not in skip]
    known = st.fixed_dictionaries({}, optional={f.name: field_value(f, depth) for f in fields})
    extra = st.dictionaries(st.text(min_size=1, max_size=10), JSON_SCALAR, max_size=1)
    return st.builds(lambda a, b: {**b, **a}, known, st.one_of(st.just({}), extra))


@st.composite
def requests(draw: st.DrawFn, route: Route) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, url path with query, headers, body) for one fuzz case of `route`."""
    message = MESSAGES["." + route.request]
    path = _VARIABLE.sub(lambda _: draw(RAW), route.template)
    query: list[tuple[str, str]] = []
    body: bytes | None = None
    if route.body:
        if route.body == "*":
            payload: Any = draw(message_json(message, skip=route.path_fields))
        else:
            field = next(f for f in message.field if f.name == route.body)
            payload = draw(field_value(field))
        body = json.dumps(payload).encode() if draw(st.integers(0, 9)) else draw(st.binary())
    if route.body != "*":
        scalars = [
            f.name
            for f in message.field
            if f.type != Field.TYPE_MESSAGE and f.name not in route.path_fields
        ]
        names = st.sampled_from(scalars or ["page_size"])
        for name in draw(st.lists(st.one_of(names, names, st.text(max_size=6)), max_size=4)):
            query.append((quote(name, safe=""), draw(RAW)))
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    # httpx sends no URL over 64 KiB; the edge refuses far shorter ones (414).
    path = path[:MAX_URL_CHARS]
    token = draw(st.sampled_from(["user", "admin", "none", "garbage"]))
    headers = {"content-type": "application/json"} if body is not None else {}
    # Any header name HTTP allows (RFC 9110 tchar), with any printable value.
    names = st.text(TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in FRAMING)
    for name in draw(st.lists(names, max_size=2)):
        # h11 refuses to send a value with leading or trailing whitespace.
        value = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20))
        headers[name] = value
    return route.verb.upper(), path, {**headers, "x-fuzz-token": token}, body


# --- the property ---------------------------------------------------------------------


def check_answer(case: str, response: httpx.Response) -> None:
    """No 5xx, and every error is a bounded google.rpc.Status JSON body."""
    assert response.status_code < 500, f"{case} -> {response.status_code} {response.text[:300]}"
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", "").startswith("application/json"), case
    assert len(response.content) <= MAX_ERROR_BYTES, f"{case}: {len(response.content)} bytes"
    body = response.json()
    assert isinstance(body, dict), f"{case}: {body!r}"
    assert set(body) <= {"code", "message", "details"}, f"{case}: {body!r}"
    assert isinstance(body.get("code"), int), f"{case}: {body!r}"
    assert isinstance(body.get("message"), str), f"{case}: {body!r}"
    assert isinstance(body.get("details", []), list), f"{case}: {body!r}"


@pytest.fixture(scope="module")
def fuzz_admin(mesh: Mesh, admin_headers: dict[str, str]) -> Account:
    """An admin of its own, so that fuzzing DELETE /v1/users/me spares the session's admin."""
    account = mesh.sign_up()
    with mesh.client() as http:
        granted = http.patch(
            f"/v1/users/{account.user['user_id']}",
            params={"update_mask": "roles"},
            json={"roles": ["user", "admin"]},
            headers=admin_headers,
        )
        assert granted.status_code == 200, granted.text
        token = sign_in(http, account.user["email"])["access_token"]
    return Account(granted.json(), token, account.refresh_token)


def test_the_fuzzer_sees_every_public_route() -> None:
    """The descriptor set yields the public routes of API.md (and no internal method)."""
    seen = {name(r) for r in ROUTES}
    assert "POST /v1/bookings" in seen
    assert "PATCH /v1/users/{user_id}" in seen
    assert "POST /v1/models/{model_id}:predict" in seen
    assert not any("Internal" in r.service for r in ROUTES)
    assert len(ROUTES) >= 17


@pytest.mark.parametrize("route", ROUTES, ids=name)
def test_no_input_gets_a_server_error_or_a_bare_error_body(
    mesh: Mesh, fuzz_admin: Account, route: Route
) -> None:
    """Any path, query or body on any route: below 500, errors as google.rpc.Status."""
    user = mesh.sign_up()
    tokens = {
        "user": bearer(user.access_token),
        "admin": bearer(fuzz_admin.access_token),
        "none": {},
        "garbage": {"authorization": "Bearer not.a.token"},
    }

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests(route))
    def property_(case: tuple[str, str, dict[str, str], bytes | None]) -> None:
        verb, path, drawn, body = case
        headers = {k: v for k, v in drawn.items() if k != "x-fuzz-token"}
        auth = tokens[drawn["x-fuzz-token"]]
        with mesh.client() as http:
            response = http.request(verb, path, headers={**headers, **auth}, content=body)
        check_answer(f"{verb} {path[:200]}", response)

    property_()

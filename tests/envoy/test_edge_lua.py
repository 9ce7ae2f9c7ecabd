"""envoy/edge.lua on its own, in LuaJIT (Envoy's Lua) through lupa: no Envoy running.

The chunk is the one the renderer inlines (the generated tables from the real
descriptor set, then edge.lua), with a `return` of its local functions appended so
that each can be called alone. Where a function takes Envoy's request or response
handle, a small recorder written in Lua stands in for the handle's few methods it
calls; the filter inside the real Envoy is tested in test_edge.py and
test_edge_hygiene.py.
"""

from __future__ import annotations

import json
from typing import Any

import lupa.luajit21 as lupa
import pytest
from google.protobuf import descriptor_pb2

from contract.routes import load
from envoy_bootstrap import body_schema
from envoy_bootstrap.render import TEMPLATES
from tests.envoy.conftest import ROOT

DESCRIPTOR = ROOT / "generated" / "airline.pb"
EXPORTS = (
    "unknown_keys",
    "body_message",
    "refuse_unknown_route",
    "query_named_twice",
    "refuse_named_twice",
    "without_quoted_value",
    "expected_json",
    "messages",
)
# Envoy's handles, as far as the functions under test use them: what they answer
# with is recorded in `sent`, a rewritten body in `text`.
FAKE_HANDLES = """
local function request_handle()
  local handle = {sent = nil, metadata = {}}
  function handle:respond(headers, body) self.sent = {headers = headers, body = body} end
  function handle:streamInfo()
    local info = {}
    function info.dynamicMetadata()
      return {set = function(_, filter, key, value) handle.metadata[key] = value end}
    end
    return info
  end
  return handle
end

local function response_handle(text)
  local body = {text = text}
  function body:length() return #self.text end
  function body:getBytes(from, length) return string.sub(self.text, from + 1, from + length) end
  function body:setBytes(new) self.text = new end
  local handle = {}
  function handle:body() return body end
  return handle, body
end

-- Schemas as body_schema.py writes them: key -> true (any value) or a nested
-- message's table; `nested` refers to itself, so it nests as deep as wanted.
local nested = {name = true, items = {code = true}}
nested.inner = nested

return request_handle, response_handle, nested
"""


@pytest.fixture(scope="module")
def edge() -> Any:
    """edge.lua's local functions, loaded once with the real generated tables."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    source = body_schema.generate(files, load(DESCRIPTOR)) + (TEMPLATES / "edge.lua").read_text()
    exports = ", ".join(f"{name} = {name}" for name in EXPORTS)
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    functions = runtime.execute(f"{source}\nreturn {{{exports}}}")
    request_handle, response_handle, nested = runtime.execute(FAKE_HANDLES)
    functions.request_handle = request_handle
    functions.response_handle = response_handle
    functions.nested = nested
    return functions


def keys(edge: Any, text: str, schema: Any) -> tuple[list[str] | None, bool]:
    found, not_json, *_ = edge.unknown_keys(text, schema)
    return (None if found is None else list(found.values())), bool(not_json)


def user_body(edge: Any) -> Any:
    return edge.body_message("POST", "/v1/users")


def named_twice(edge: Any, text: str, schema: Any) -> list[str]:
    _, _, twice = edge.unknown_keys(text, schema)
    return list(twice.values())


@pytest.mark.parametrize("name", ["displayName", "display_name"])
def test_a_body_with_known_keys_passes_in_either_spelling(edge: Any, name: str) -> None:
    body = json.dumps({"email": "a@example.com", "password": "x", name: "A"})
    assert keys(edge, body, user_body(edge)) == ([], False)
    assert named_twice(edge, body, user_body(edge)) == []


def test_a_field_named_in_both_spellings_is_found_under_its_second_name(edge: Any) -> None:
    body = '{"email": "a@example.com", "displayName": "A", "display_name": "B"}'
    assert keys(edge, body, user_body(edge)) == ([], False)
    assert named_twice(edge, body, user_body(edge)) == ["display_name"]


def test_a_key_given_twice_and_a_nested_field_in_both_spellings_are_found(edge: Any) -> None:
    flight = edge.body_message("POST", "/v1/flights")
    body = '{"seats_total": 1, "seatsTotal": 2, "number": "UA1", "number": "UA2"}'
    assert named_twice(edge, body, flight) == ["seatsTotal", "number"]
    booking = edge.body_message("POST", "/v1/bookings")
    body = '{"flightId": "f", "seat_class": "ECONOMY", "passenger_name": "A", "requestId": "r"}'
    assert named_twice(edge, body, booking) == []


def test_keys_of_a_free_form_value_may_repeat(edge: Any) -> None:
    schema = edge.messages["airline.predict.v1.PredictRequest"]
    body = '{"instances": [{"carrier": "UA", "carrier": "AA"}]}'
    assert named_twice(edge, body, schema) == []


def test_unknown_keys_are_named_with_their_paths(edge: Any) -> None:
    body = '{"bogus": 1, "inner": {"name": "x", "extra": true}, "items": [{"code": 1}, {"no": 2}]}'
    assert keys(edge, body, edge.nested) == (["bogus", "inner.extra", "items[1].no"], False)


def test_an_unknown_key_of_a_real_body_is_found_and_escapes_are_decoded(edge: Any) -> None:
    body = (
        '{"email": "a@example.com", "bogus": {"deeper": [1, 2]}, '
        '"x\\u00e9": null, "e\\u006dail": 1}'
    )
    assert keys(edge, body, user_body(edge)) == (["bogus", "x?"], False)


def test_keys_of_a_free_form_value_are_not_checked(edge: Any) -> None:
    schema = edge.messages["airline.predict.v1.PredictRequest"]
    body = '{"instances": [{"carrier": "UA", "anything": 1}], "extra": {"a": 1}}'
    assert keys(edge, body, schema) == (["extra"], False)


def test_values_of_any_json_type_are_read_past(edge: Any) -> None:
    body = (
        '{"email": "\\"quoted\\" \\\\ \\/ \\n", "password": -1.5e3, '
        '"display_name": [true, false, null, {}]}'
    )
    assert keys(edge, body, user_body(edge)) == ([], False)


@pytest.mark.parametrize(
    "body",
    [
        '{"email": }',
        "{'email': 1}",
        '{"email": 1} trailing',
        '{"email": NaN}',
        '{"email": tru}',
        '{"email": "unterminated}',
        '{"email": "\\x"}',
        '{"email": "\\u12"}',
        '{"email" 1}',
        '{"email": 1,}',
        "[1, 2",
        "",
    ],
)
def test_what_is_not_json_is_said_to_be_so(edge: Any, body: str) -> None:
    assert keys(edge, body, user_body(edge)) == (None, True)


def test_keys_below_the_depth_limit_are_not_checked_but_the_json_is(edge: Any) -> None:
    shallow = '{"inner": ' * 3 + '{"bogus": 1}' + "}" * 3
    deep = '{"inner": ' * 40 + '{"bogus": 1}' + "}" * 40
    assert keys(edge, shallow, edge.nested) == (["inner.inner.inner.bogus"], False)
    assert keys(edge, deep, edge.nested) == ([], False)
    assert keys(edge, deep[:-1], edge.nested) == (None, True)


def test_routes_without_a_body_have_no_message(edge: Any) -> None:
    assert edge.body_message("GET", "/v1/users/me") is None
    assert edge.body_message("POST", "/v1/users?x=1") is not None


def refused(edge: Any, method: str, path: str) -> tuple[str, dict[str, Any], str] | None:
    """(status, body, Allow) of the route table's answer, None when it lets the request on."""
    handle = edge.request_handle()
    if not edge.refuse_unknown_route(handle, method, path):
        assert handle.sent is None
        return None
    assert handle.metadata["status_body"] is True  # passed on as the google.rpc.Status
    headers = handle.sent.headers
    return headers[":status"], json.loads(handle.sent.body), headers["allow"] or ""


def test_every_route_of_the_contract_is_let_on(edge: Any) -> None:
    for route in load(DESCRIPTOR).routes:
        path = route.path.replace("{", "").replace("}", "")
        assert refused(edge, route.verb.upper(), path + "?page_size=1") is None, route


def test_paths_outside_the_api_are_not_judged(edge: Any) -> None:
    assert refused(edge, "GET", "/healthz") is None
    assert refused(edge, "GET", "/docs") is None


def test_an_unknown_path_under_the_api_is_404(edge: Any) -> None:
    for path in ("/v1/nothing", "/v1/users/abc/", "/v1/users/abc/extra", "/v1/"):
        status, body, allow = refused(edge, "GET", path) or ("", {}, "")
        assert (status, body, allow) == ("404", {"code": 5, "message": "no such path"}, "")


def test_another_method_on_a_route_is_405_with_allow(edge: Any) -> None:
    status, body, allow = refused(edge, "PUT", "/v1/users/abc") or ("", {}, "")
    assert status == "405"
    assert body["code"] == 12
    assert allow == "DELETE, GET, PATCH"
    assert refused(edge, "GET", "/v1/auth/token") == (
        "405",
        {"code": 12, "message": "this method is not allowed here; see Allow"},
        "POST",
    )


def query_twice(edge: Any, method: str, path: str) -> list[str]:
    return list(edge.query_named_twice(method, path).values())


@pytest.mark.parametrize("query", ["page_size=1", "pageSize=1", "page_size=1&page_size=2"])
def test_a_query_naming_each_parameter_in_one_spelling_passes(edge: Any, query: str) -> None:
    assert query_twice(edge, "GET", f"/v1/flights?{query}&orderBy=price&page_token=t") == []


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/flights?page_size=1&pageSize=2", ["pageSize"]),
        ("GET", "/v1/flights?pageSize=2&origin=EWR&page_size=1&pageSize=3", ["page_size"]),
        ("GET", "/v1/flights?orderBy=price&order_by=&departure_date=x&departureDate=y",
         ["order_by", "departureDate"]),
        ("GET", "/v1/bookings?user_id=a&userId=b", ["userId"]),
        ("GET", "/v1/models?pageToken=a&page_token=b", ["page_token"]),
        ("PATCH", "/v1/users/u1?update_mask=display_name&updateMask=roles", ["updateMask"]),
        # Keys are percent-decoded, as the transcoder decodes them.
        ("GET", "/v1/flights?page%5Fsize=1&page%53ize=2", ["pageSize"]),
    ],
)  # fmt: skip
def test_a_query_naming_a_parameter_in_both_spellings_is_found_under_the_second(
    edge: Any, method: str, path: str, expected: list[str]
) -> None:
    assert query_twice(edge, method, path) == expected


def test_queries_of_routes_with_a_whole_body_or_none_are_not_judged(edge: Any) -> None:
    """A `body: "*"` route has no query parameters: the transcoder refuses them itself."""
    assert query_twice(edge, "POST", "/v1/bookings?request_id=a&requestId=b") == []
    assert query_twice(edge, "GET", "/v1/flights") == []
    assert query_twice(edge, "GET", "/v1/nothing?page_size=1&pageSize=2") == []


def test_both_spellings_in_a_query_are_refused_with_a_bad_request(edge: Any) -> None:
    handle = edge.request_handle()
    edge.refuse_named_twice(
        handle, edge.query_named_twice("GET", "/v1/users?a=1&pageSize=2&page_size=3"), "query"
    )
    assert handle.sent.headers[":status"] == "400"
    assert handle.metadata["status_body"] is True
    assert json.loads(handle.sent.body) == {
        "code": 3,
        "message": "field given twice: page_size",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [
                    {
                        "field": "page_size",
                        "description": "this field is already in the query under its other name",
                    }
                ],
            }
        ],
    }


def rewritten(edge: Any, text: str) -> str:
    handle, body = edge.response_handle(text)
    edge.without_quoted_value(handle)
    return str(body.text)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("TYPE_STRING", "a string"),
        ("TYPE_INT64", "an integer"),
        ("TYPE_BOOL", "true or false"),
        ("type.googleapis.com/google.protobuf.Timestamp", "an RFC 3339 timestamp"),
        ("type.googleapis.com/airline.booking.v1.Booking.SeatClass", "one of the enum's names"),
        ("type.googleapis.com/airline.booking.v1.Flight", "an object"),
    ],
)
def test_the_wrong_type_message_names_the_field_and_not_the_value(
    edge: Any, kind: str, expected: str
) -> None:
    original = json.dumps(
        {"code": 3, "message": f"password: invalid value 73519468 for type {kind}"},
        separators=(",", ":"),
    )
    text = rewritten(edge, original)
    assert "73519468" not in text
    status = json.loads(text)
    description = f"wrong JSON type or value (expected {expected})"
    assert status == {
        "code": 3,
        "message": f"password: {description}",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "password", "description": description}],
            }
        ],
    }


def test_other_400_bodies_are_left_as_they_are(edge: Any) -> None:
    original = '{"code":3,"message":"page_token: the page token is not valid"}'
    assert rewritten(edge, original) == original
    assert rewritten(edge, "") == ""

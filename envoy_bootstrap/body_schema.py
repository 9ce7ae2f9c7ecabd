"""Which JSON keys each REST request body may carry, as a Lua table for the edge.

Envoy's transcoder silently drops JSON fields the request message does not have
(the transcoding library hard-codes `ignore_unknown_fields`; Envoy has no option
for it, see envoyproxy/envoy#46623), while API.md refuses them with 400. This
module derives, from the descriptor set Envoy transcodes with, the REST routes
that carry a body and the keys every message in those bodies accepts (proto name
and lowerCamelCase); edge.lua checks request bodies against it. It also lists
every REST method and path template, for edge.lua's 404 and 405 (with Allow), with the
request message whose fields its query parameters name; the routes are contract/routes.py's,
the one list of them. ALIASES (lowerCamelCase -> proto name) serves bodies and queries alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from contract.routes import Contract

Field = descriptor_pb2.FieldDescriptorProto

# Well-known types have their own JSON forms (strings, free objects): any content.
_FREE_FORM_PREFIX = ".google.protobuf."
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")
_VARIABLE = re.compile(r"(\{[^}]*\})")


@dataclass(frozen=True)
class BodyRoute:
    """A REST method and path that carries a JSON body of `message`."""

    method: str
    pattern: str  # a Lua pattern matching the path (without the query)
    message: str  # full name, no leading dot


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, types: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in types:
            name = f"{prefix}.{message.name}"
            found[name] = message
            walk(name, message.nested_type)

    for file in files.file:
        walk(f".{file.package}" if file.package else "", file.message_type)
    return found


def enum_names(files: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Full names (no leading dot) of every enum, for edge.lua's wrong-type message."""
    found: list[str] = []

    def walk(prefix: str, types: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in types:
            name = f"{prefix}.{message.name}" if prefix else message.name
            found.extend(f"{name}.{enum.name}" for enum in message.enum_type)
            walk(name, message.nested_type)

    for file in files.file:
        package = file.package
        found.extend(f"{package}.{e.name}" if package else e.name for e in file.enum_type)
        walk(package, file.message_type)
    return sorted(found)


def lua_pattern(template: str) -> str:
    """An HTTP rule path template (`/v1/users/{user.user_id}`) as an anchored Lua pattern."""
    parts = []
    for part in _VARIABLE.split(template):
        if part.startswith("{"):
            parts.append(".+" if "**" in part else "[^/]+")
        else:
            parts.append(_LUA_MAGIC.sub(r"%\1", part))
    return "^" + "".join(parts) + "$"


@dataclass(frozen=True)
class HttpRoute:
    """A REST method and path template of a public method (google.api.http)."""

    method: str
    pattern: str  # a Lua pattern matching the path (without the query)
    template: str
    query: str = ""  # the request message the query parameters fill; "" if the body is "*"


def http_routes(contract: Contract) -> list[HttpRoute]:
    """Every (method, path template) the transcoder serves: contract/routes.py's routes."""
    return [
        HttpRoute(
            r.verb.upper(),
            lua_pattern(r.template),
            r.template,
            "" if r.body == "*" else r.request,
        )
        for r in contract.routes
    ]


def api_prefixes(routes: Iterable[HttpRoute]) -> list[str]:
    """The first path segments of the templates (`/v1/`): the paths the API owns."""
    return sorted({"/" + r.template.lstrip("/").split("/", 1)[0] + "/" for r in routes})


def body_routes(contract: Contract) -> list[BodyRoute]:
    """The public routes whose HTTP rule takes a body, with the body's message."""
    found = []
    for route in contract.routes:
        if not route.body:
            continue
        message = route.request
        if route.body != "*":
            fields = contract.messages[route.request].field
            message = next(f for f in fields if f.name == route.body).type_name.lstrip(".")
        found.append(BodyRoute(route.verb.upper(), lua_pattern(route.template), message))
    return found


def accepted_keys(
    files: descriptor_pb2.FileDescriptorSet, roots: Iterable[str]
) -> dict[str, dict[str, str | bool]]:
    """For each message reachable from `roots`: key -> nested message name, or True (any)."""
    messages = _messages(files)
    schema: dict[str, dict[str, str | bool]] = {}
    pending = [f".{root}" for root in roots]
    while pending:
        name = pending.pop()
        if name.lstrip(".") in schema:
            continue
        keys: dict[str, str | bool] = {}
        for field in messages[name].field:
            value: str | bool = True
            nested = messages.get(field.type_name) if field.type == Field.TYPE_MESSAGE else None
            is_map = nested is not None and nested.options.map_entry
            if (
                nested is not None
                and not is_map
                and not field.type_name.startswith(_FREE_FORM_PREFIX)
            ):
                value = field.type_name.lstrip(".")
                pending.append(field.type_name)
            keys[field.name] = value
            keys[field.json_name or field.name] = value
        schema[name.lstrip(".")] = keys
    return schema


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_aliases(
    files: descriptor_pb2.FileDescriptorSet, names: Iterable[str]
) -> dict[str, dict[str, str]]:
    """For each message named: its fields' lowerCamelCase keys -> their proto names.

    Only where the two differ; edge.lua refuses a body or a query naming one field twice,
    in both spellings (protobuf's own JSON parsers do; the transcoder keeps the later).
    """
    messages = _messages(files)
    found: dict[str, dict[str, str]] = {}
    for name in names:
        renamed = {
            f.json_name: f.name
            for f in messages[f".{name}"].field
            if f.json_name not in ("", f.name)
        }
        if renamed:
            found[name] = renamed
    return found


def lua_source(
    routes: Iterable[BodyRoute],
    schema: Mapping[str, Mapping[str, str | bool]],
    paths: Iterable[HttpRoute] = (),
    enums: Iterable[str] = (),
    aliases: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """Lua defining BODY_ROUTES, MESSAGES, ALIASES, HTTP_ROUTES, API_PREFIXES and ENUMS."""
    paths = list(paths)
    lines = ["-- Generated by envoy_bootstrap from the descriptor set; see body_schema.py."]
    lines.append("local ENUMS = {")
    lines.extend(f"  [{_lua_string(name)}] = true," for name in enums)
    lines.append("}")
    lines.append("local HTTP_ROUTES = {")
    for path in paths:
        fields = [path.method, path.pattern, *([path.query] if path.query else [])]
        lines.append(f"  {{{', '.join(_lua_string(v) for v in fields)}}},")
    lines.append("}")
    prefixes = ", ".join(_lua_string(prefix) for prefix in api_prefixes(paths))
    lines.append(f"local API_PREFIXES = {{{prefixes}}}")
    lines.append("local BODY_ROUTES = {")
    for route in routes:
        args = ", ".join(_lua_string(v) for v in (route.method, route.pattern, route.message))
        lines.append(f"  {{{args}}},")
    lines.append("}")
    lines.append("local MESSAGES = {")
    for name in sorted(schema):
        lines.append(f"  [{_lua_string(name)}] = {{")
        for key, value in sorted(schema[name].items()):
            shown = "true" if value is True else _lua_string(str(value))
            lines.append(f"    [{_lua_string(key)}] = {shown},")
        lines.append("  },")
    lines.append("}")
    lines.append("local ALIASES = {")
    for name, renamed in sorted((aliases or {}).items()):
        lines.append(f"  [{_lua_string(name)}] = {{")
        for key, value in sorted(renamed.items()):
            lines.append(f"    [{_lua_string(key)}] = {_lua_string(value)},")
        lines.append("  },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(files: descriptor_pb2.FileDescriptorSet, contract: Contract) -> str:
    routes = body_routes(contract)
    schema = accepted_keys(files, {r.message for r in routes})
    paths = http_routes(contract)
    aliases = field_aliases(files, set(schema) | {p.query for p in paths if p.query})
    return lua_source(routes, schema, paths, enum_names(files), aliases)

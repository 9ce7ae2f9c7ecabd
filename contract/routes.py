"""The public routes, read from the descriptor set: one source for every tool that needs them.

A service is public when its methods carry `google.api.http` rules (UserInternalService
has none and is never listed). Each route says its gRPC method, HTTP verb and path, which
part of the request is the body, whether a token is needed, and the proto comments.
Every gRPC service, public or not, belongs to a workload: the process that serves it,
named in Consul, in Envoy's clusters and in certificates after its proto package
(`airline.user.v1.*` is `user-svc`). Envoy's bootstrap, the mesh, the OpenAPI document
and the tests all read the services, routes and workloads from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

DescriptorSet = descriptor_pb2.FileDescriptorSet
Message = descriptor_pb2.DescriptorProto
Enum = descriptor_pb2.EnumDescriptorProto

# Methods anyone may call: a token is optional there, but one that is sent must be
# valid. Every other public method needs a token. The edge's jwt_authn rules are
# rendered from this (envoy_bootstrap/render.py).
OPEN_METHODS = frozenset(
    {
        "airline.auth.v1.AuthService/CreateToken",
        "airline.auth.v1.AuthService/RefreshToken",
        "airline.auth.v1.AuthService/RevokeToken",
        "airline.auth.v1.AuthService/GetJwks",
        "airline.user.v1.UserService/CreateUser",
        "airline.booking.v1.BookingService/ListFlights",
        "airline.booking.v1.BookingService/GetFlight",
        "airline.predict.v1.PredictionService/ListModels",
        "airline.predict.v1.PredictionService/GetModel",
    }
)

# What the edge answers on success besides 200 (the services say so in response
# metadata: `created(...)`, `no_content()`; tests/contract/test_routes.py reads them).
CREATED_METHODS = frozenset(
    {
        "airline.user.v1.UserService/CreateUser",
        "airline.booking.v1.BookingService/CreateFlight",
        "airline.booking.v1.BookingService/CreateBooking",
    }
)
NO_CONTENT_METHODS = frozenset({"airline.user.v1.UserService/DeleteUser"})

# Methods the edge limits per client address, by their limit's name (a table of
# ratelimit/limits.toml; envoy_bootstrap/rate_limits.py): guessing a password and
# signing up cost a bcrypt hash each. Rendered as a route of their own on the edge.
RATE_LIMITED_METHODS: Mapping[str, str] = {
    "airline.auth.v1.AuthService/CreateToken": "create_token",
    "airline.user.v1.UserService/CreateUser": "create_user",
}

# Methods that may run twice (reads; CreateBooking is idempotent by its request_id):
# the edge retries them on a reset too, as when an instance's host dies with the call
# on its connection. Any other method may have run when its connection reset.
RETRIED_ON_RESET_METHODS = frozenset(
    {
        "airline.booking.v1.BookingService/ListFlights",
        "airline.booking.v1.BookingService/GetFlight",
        "airline.booking.v1.BookingService/CreateBooking",
        "airline.booking.v1.BookingService/ListBookings",
        "airline.booking.v1.BookingService/GetBooking",
    }
)

_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")

# FileDescriptorProto / DescriptorProto field numbers that source_code_info paths use.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


@dataclass(frozen=True)
class Route:
    """One public method: its gRPC name and the HTTP rule the edge transcodes it by."""

    service: str  # full name, e.g. airline.user.v1.UserService
    method: str  # e.g. GetUser
    request: str  # full message name, no leading dot
    response: str
    verb: str  # lower case: get, post, patch, delete, put
    template: str  # the rule's path, e.g. /v1/users/{user_id}
    body: str  # "" (no body), "*" (the whole request) or a request field name
    comment: str

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def open(self) -> bool:
        """True where a token is optional (API.md's "anyone")."""
        return self.name in OPEN_METHODS

    @property
    def name(self) -> str:
        """`service/method`, as the method sets above spell it."""
        return f"{self.service}/{self.method}"

    @property
    def success_status(self) -> int:
        """The HTTP status of a success: 201 for creates, 204 for deletes, else 200."""
        return (
            201 if self.name in CREATED_METHODS else 204 if self.name in NO_CONTENT_METHODS else 200
        )

    @property
    def rate_limit(self) -> str | None:
        """The name of the edge's limit on this method, if it has one."""
        return RATE_LIMITED_METHODS.get(self.name)

    @property
    def retried_on_reset(self) -> bool:
        return self.name in RETRIED_ON_RESET_METHODS

    @property
    def path(self) -> str:
        """The path with plain `{name}` variables, as OpenAPI writes them."""
        return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", self.template)

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _VARIABLE.finditer(self.template))


# The mesh's own API (certificate signing), served by the control plane: no workload
# of its own, never routed by the edge or the mesh listener.
MESH_PACKAGE = "airline.mesh."


def workload(service: str) -> str:
    """The workload serving a gRPC service: its package's name with `-svc` (`user-svc`)."""
    return f"{service.split('.')[1]}-svc"


@dataclass(frozen=True)
class Contract:
    """The descriptor set, indexed: routes, messages, enums and comments by full name."""

    routes: tuple[Route, ...]
    services: Mapping[str, str]  # public service full name -> its comment
    messages: Mapping[str, Message]
    enums: Mapping[str, Enum]
    comments: Mapping[str, str]  # full name (message, field, enum, value) -> comment
    # Every gRPC service of the workloads, public or internal, in descriptor order
    # (not the mesh's own, MESH_PACKAGE).
    all_services: tuple[str, ...] = ()

    def comment(self, name: str) -> str:
        return self.comments.get(name, "")

    @property
    def workloads(self) -> tuple[str, ...]:
        """Every workload (auth-svc, ...), once each, in descriptor order."""
        return tuple(dict.fromkeys(workload(s) for s in self.all_services))

    @property
    def open_methods(self) -> tuple[str, ...]:
        """The gRPC paths of the public methods that need no token."""
        return tuple(dict.fromkeys(r.grpc_path for r in self.routes if r.open))

    def methods_of(self, service: str) -> tuple[Route, ...]:
        """A public service's routes, one per method (its first HTTP binding)."""
        first: dict[str, Route] = {}
        for route in self.routes:
            if route.service == service:
                first.setdefault(route.name, route)
        return tuple(first.values())

    def served_by(self, name: str) -> tuple[str, ...]:
        """The gRPC services workload `name` serves."""
        return tuple(s for s in self.all_services if workload(s) == name)


def load(path: Path) -> Contract:
    """The contract in the descriptor set at `path` (generated/airline.pb)."""
    return from_descriptor_set(DescriptorSet.FromString(path.read_bytes()))


def from_descriptor_set(files: DescriptorSet) -> Contract:
    index = _Index()
    routes: list[Route] = []
    services: dict[str, str] = {}
    every: list[str] = []
    for file in files.file:
        located = _comments_by_path(file)
        prefix = file.package
        index.add(prefix, (), file, located)
        for s, service in enumerate(file.service):
            full = f"{prefix}.{service.name}"
            if not full.startswith(MESH_PACKAGE):
                every.append(full)
            found = list(_routes(full, (_FILE_SERVICE, s), service, located))
            if found:
                services[full] = located.get((_FILE_SERVICE, s), "")
                routes.extend(found)
    return Contract(
        tuple(routes), services, index.messages, index.enums, index.comments, tuple(every)
    )


def field_behaviors(field: descriptor_pb2.FieldDescriptorProto) -> frozenset[str]:
    """The field's `google.api.field_behavior` names (REQUIRED, OUTPUT_ONLY, ...)."""
    values = field.options.Extensions[field_behavior_pb2.field_behavior]
    return frozenset(field_behavior_pb2.FieldBehavior.Name(v) for v in values)


def _routes(
    service: str,
    path: tuple[int, ...],
    proto: descriptor_pb2.ServiceDescriptorProto,
    located: Mapping[tuple[int, ...], str],
) -> Iterator[Route]:
    for m, method in enumerate(proto.method):
        if not method.options.HasExtension(annotations_pb2.http):
            continue
        rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
        for each in (rule, *rule.additional_bindings):
            verb = each.WhichOneof("pattern")
            if verb not in _VERBS:
                raise ValueError(f"{service}/{method.name}: unsupported HTTP rule {verb}")
            yield Route(
                service=service,
                method=method.name,
                request=method.input_type.lstrip("."),
                response=method.output_type.lstrip("."),
                verb=verb,
                template=getattr(each, verb),
                body=each.body,
                comment=located.get((*path, _SERVICE_METHOD, m), ""),
            )


@dataclass
class _Index:
    """Messages, enums and comments by full name, filled one file at a time."""

    messages: dict[str, Message] = field(default_factory=dict)
    enums: dict[str, Enum] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        prefix: str,
        path: tuple[int, ...],
        scope: descriptor_pb2.FileDescriptorProto | Message,
        located: Mapping[tuple[int, ...], str],
    ) -> None:
        """The messages and enums declared in `scope` (a file or a message), nested ones too.

        `path` is the scope's source path (empty for a file); the field numbers that
        lead to its messages and enums differ between a file and a message.
        """
        if isinstance(scope, descriptor_pb2.FileDescriptorProto):
            types, message_tag, enum_tag = scope.message_type, _FILE_MESSAGE, _FILE_ENUM
        else:
            types, message_tag, enum_tag = scope.nested_type, _MESSAGE_NESTED, _MESSAGE_ENUM
        for i, message in enumerate(types):
            full, here = f"{prefix}.{message.name}", (*path, message_tag, i)
            self.messages[full] = message
            self.comments[full] = located.get(here, "")
            for f, member in enumerate(message.field):
                name, at = f"{full}.{member.name}", (*here, _MESSAGE_FIELD, f)
                self.comments[name] = located.get(at, "")
            self.add(full, here, message, located)
        for i, enum in enumerate(scope.enum_type):
            full, here = f"{prefix}.{enum.name}", (*path, enum_tag, i)
            self.enums[full] = enum
            self.comments[full] = located.get(here, "")
            for v, value in enumerate(enum.value):
                self.comments[f"{full}.{value.name}"] = located.get((*here, _ENUM_VALUE, v), "")


def _comments_by_path(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments by source path; needs a set built with --include_source_info."""
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            lines = (line.strip() for line in text.splitlines())
            found[tuple(location.path)] = "\n".join(lines).strip()
    return found

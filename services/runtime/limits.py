"""What a request must be before any handler sees it: parseable, with every string
valid UTF-8 and within its documented length.

The server interceptor parses each request with `checked_parser`; a request that
fails is handed on as a `Rejected` and `refuse_rejected` turns it into
INVALID_ARGUMENT inside the interceptor's error handling, where grpcio itself would
have answered INTERNAL ("Exception deserializing request!"). Lengths come from one
table keyed by full field name; each field's proto comment states the same number,
and a test holds the two together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from services.runtime.errors import InvalidArgument

# Where a domain rule is stricter (a 3-letter IATA code) the limit here is a ceiling
# above it, so a merely wrong value still gets every violation from the domain check;
# the ceiling only stops abuse before any handler work.
ID_CHARS = 64
EMAIL_CHARS = 254
PASSWORD_CHARS = 128
NAME_CHARS = 100
CODE_CHARS = 32
TOKEN_CHARS = 128
PAGE_TOKEN_CHARS = 512
DEFAULT_MAX_CHARS = 1024
"""For strings the table does not name (e.g. the health check's service name)."""
CSR_CHARS = 8192  # a P-256 CSR in PEM is under 1 KiB
IP_CHARS = 45  # the longest textual IPv6 address
LOOKUP_MAX_IDS = 100  # ids in one LookupUsers: user-svc's check, its clients' batch size
REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_CHARS}}}")


def is_request_id(value: str) -> bool:
    """Whether `value` may be a request id (x-request-id): what is logged and passed on."""
    return _REQUEST_ID.fullmatch(value) is not None


MAX_CHARS: Mapping[str, int] = {
    "airline.mesh.v1.SignCertificateRequest.csr_pem": CSR_CHARS,
    "airline.mesh.v1.SignCertificateRequest.ip_addresses": IP_CHARS,
    "airline.auth.v1.CreateTokenRequest.email": EMAIL_CHARS,
    "airline.auth.v1.CreateTokenRequest.password": PASSWORD_CHARS,
    "airline.auth.v1.RefreshTokenRequest.refresh_token": TOKEN_CHARS,
    "airline.auth.v1.RevokeTokenRequest.refresh_token": TOKEN_CHARS,
    "airline.user.v1.User.user_id": ID_CHARS,
    "airline.user.v1.User.email": EMAIL_CHARS,
    "airline.user.v1.User.display_name": NAME_CHARS,
    "airline.user.v1.User.roles": 16,
    "airline.user.v1.CreateUserRequest.email": EMAIL_CHARS,
    "airline.user.v1.CreateUserRequest.password": PASSWORD_CHARS,
    "airline.user.v1.CreateUserRequest.display_name": NAME_CHARS,
    "airline.user.v1.GetUserRequest.user_id": ID_CHARS,
    "airline.user.v1.ListUsersRequest.page_token": PAGE_TOKEN_CHARS,
    "airline.user.v1.UpdateUserRequest.user_id": ID_CHARS,
    "airline.user.v1.DeleteUserRequest.user_id": ID_CHARS,
    "airline.user.v1.VerifyPasswordRequest.email": EMAIL_CHARS,
    "airline.user.v1.VerifyPasswordRequest.password": PASSWORD_CHARS,
    "airline.user.v1.LookupUserRequest.user_id": ID_CHARS,
    "airline.user.v1.LookupUsersRequest.user_ids": ID_CHARS,
    "airline.user.v1.LookupUsersRequest.request_ids": REQUEST_ID_CHARS,
    "airline.booking.v1.Flight.flight_id": ID_CHARS,
    "airline.booking.v1.Flight.number": CODE_CHARS,
    "airline.booking.v1.Flight.origin": CODE_CHARS,
    "airline.booking.v1.Flight.destination": CODE_CHARS,
    "airline.booking.v1.Flight.currency": CODE_CHARS,
    "airline.booking.v1.ListFlightsRequest.origin": CODE_CHARS,
    "airline.booking.v1.ListFlightsRequest.destination": CODE_CHARS,
    "airline.booking.v1.ListFlightsRequest.departure_date": CODE_CHARS,
    "airline.booking.v1.ListFlightsRequest.order_by": ID_CHARS,
    "airline.booking.v1.ListFlightsRequest.page_token": PAGE_TOKEN_CHARS,
    "airline.booking.v1.GetFlightRequest.flight_id": ID_CHARS,
    "airline.booking.v1.CreateBookingRequest.flight_id": ID_CHARS,
    "airline.booking.v1.CreateBookingRequest.passenger_name": NAME_CHARS,
    "airline.booking.v1.CreateBookingRequest.request_id": ID_CHARS,
    "airline.booking.v1.ListBookingsRequest.page_token": PAGE_TOKEN_CHARS,
    "airline.booking.v1.ListBookingsRequest.user_id": ID_CHARS,
    "airline.booking.v1.GetBookingRequest.booking_id": ID_CHARS,
    "airline.booking.v1.CancelBookingRequest.booking_id": ID_CHARS,
    "airline.predict.v1.ListModelsRequest.page_token": PAGE_TOKEN_CHARS,
    "airline.predict.v1.GetModelRequest.model_id": ID_CHARS,
    "airline.predict.v1.PredictRequest.model_id": ID_CHARS,
    "google.protobuf.FieldMask.paths": ID_CHARS,
}

# Free-form JSON the owning domain validates (predict's instances); walking it here
# would only repeat that work. Its size is bounded by the edge's body limit.
_NOT_WALKED = frozenset({"google.protobuf.Struct", "google.protobuf.Value"})
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Rejected:
    """A request refused before its handler ran, and why (never quoting its bytes)."""

    violations: tuple[tuple[str, str], ...] = ()
    message: str = ""


def length_violations(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """Every string in `message` (nested ones too) longer than its limit, by field path."""
    found: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            limit = MAX_CHARS.get(field.full_name, DEFAULT_MAX_CHARS)
            # Paths are spelled only for a violation: most strings are within their limit.
            if not field.is_repeated:
                if len(value) > limit:
                    found.append((f"{prefix}{field.name}", f"must be at most {limit} characters"))
                continue
            for index, item in enumerate(value):
                if len(item) > limit:
                    where = f"{prefix}{field.name}[{index}]"
                    found.append((where, f"must be at most {limit} characters"))
        elif _walked(field):
            if not field.is_repeated:
                found += length_violations(value, f"{prefix}{field.name}.")
                continue
            for index, item in enumerate(value):
                found += length_violations(item, f"{prefix}{field.name}[{index}].")
    return found


def shortest_limit(descriptor: Descriptor) -> float:
    """The smallest length limit of any string a `descriptor` message can hold (inf: none).

    A string of n characters takes at least n bytes of the encoded request, so a
    request no longer than this cannot break a limit and need not be walked.
    """
    return _shortest(descriptor, set())


def checked_parser(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering a `Rejected` instead of raising or passing a bad request."""
    if deserializer is None:
        return None
    # Generated stubs pass `SomeRequest.FromString`, a method bound to the class.
    descriptor: Descriptor | None = getattr(
        getattr(deserializer, "__self__", None), "DESCRIPTOR", None
    )
    # Worked out once per method: most requests (GetFlight's 38 bytes under a 64-character
    # limit) are too short to break any limit, and skip the walk.
    walk_above = shortest_limit(descriptor) if descriptor is not None else 0

    def parse(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except DecodeError:
            return _unparsable(raw, descriptor)
        if len(raw) > walk_above and isinstance(message, Message):
            found = length_violations(message)
            if found:
                return Rejected(tuple(found))
        return message

    return parse


Behavior = Callable[[Any, grpc.ServicerContext], Any]


def refuse_rejected(behavior: Behavior) -> Behavior:
    """`behavior`, raising InvalidArgument for a request `checked_parser` rejected."""

    def serve(request: Any, grpc_context: grpc.ServicerContext) -> Any:
        if isinstance(request, Rejected):
            raise InvalidArgument(request.violations, request.message)
        return behavior(request, grpc_context)

    return serve


def _walked(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type is not None
        and field.message_type.full_name not in _NOT_WALKED
    )


def _shortest(descriptor: Descriptor, seen: set[str]) -> float:
    if descriptor.full_name in seen:  # a recursive message: its fields are counted already
        return math.inf
    seen.add(descriptor.full_name)
    shortest = math.inf
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            shortest = min(shortest, MAX_CHARS.get(field.full_name, DEFAULT_MAX_CHARS))
        elif _walked(field) and field.message_type is not None:
            shortest = min(shortest, _shortest(field.message_type, seen))
    return shortest


def _unparsable(raw: bytes, descriptor: Descriptor | None) -> Rejected:
    path = _first_invalid_utf8(raw, descriptor) if descriptor is not None else None
    if path is not None:
        return Rejected(((path, "must be valid UTF-8"),))
    kind = descriptor.full_name if descriptor is not None else "request"
    return Rejected(message=f"the request is not a valid {kind} message")


def _first_invalid_utf8(raw: bytes, descriptor: Descriptor, depth: int = 0) -> str | None:
    """The path of the first string field in wire-format `raw` that is not UTF-8.

    protobuf only says the message failed to parse; reading the wire format lets the
    error name the field. None when no string field is at fault (or `raw` is garbage).
    """
    pos = 0
    try:
        while pos < len(raw) and depth < _MAX_DEPTH:
            key, pos = _varint(raw, pos)
            wire_type = key & 7
            if wire_type == 0:
                _, pos = _varint(raw, pos)
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                size, pos = _varint(raw, pos)
                chunk, pos = raw[pos : pos + size], pos + size
                field = descriptor.fields_by_number.get(key >> 3)
                found = _utf8_problem(chunk, field, depth) if field is not None else None
                if found is not None:
                    return found
            else:
                return None  # groups or garbage: no field to name
    except (IndexError, ValueError):  # truncated or malformed: nothing to name
        return None
    return None


def _utf8_problem(chunk: bytes, field: FieldDescriptor, depth: int) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return field.name
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        inner = _first_invalid_utf8(chunk, field.message_type, depth + 1)
        return None if inner is None else f"{field.name}.{inner}"
    return None


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")

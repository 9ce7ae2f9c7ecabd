"""Requests are parsed, UTF-8 checked and length checked before any handler runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, field_mask_pb2
from google.protobuf.message import Message

from airline.booking.v1 import booking_pb2
from airline.predict.v1 import predict_pb2
from airline.user.v1 import user_internal_pb2, user_pb2
from services.runtime.errors import field_violations
from services.runtime.limits import MAX_CHARS, checked_parser, length_violations, shortest_limit
from tests.conftest import Stack

DESCRIPTOR_SET = Path(__file__).parents[2] / "generated" / "airline.pb"
LONG = "x" * 30_000

Located = tuple[descriptor_pb2.DescriptorProto, str, list[int]]
"""A message, the proto file it is in, and its source path in that file."""


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The protos as `make gen` compiled them, comments included."""
    return list(descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file)


def _request_messages() -> dict[str, Located]:
    """Every top-level airline message by full name."""
    found: dict[str, Located] = {}
    for proto in _files():
        if proto.package.startswith("airline."):
            for index, message in enumerate(proto.message_type):
                found[f"{proto.package}.{message.name}"] = (message, proto.name, [4, index])
    return found


def _comments() -> dict[tuple[str, tuple[int, ...]], str]:
    return {
        (proto.name, tuple(loc.path)): loc.leading_comments
        for proto in _files()
        for loc in proto.source_code_info.location
    }


def _input_types() -> set[str]:
    return {
        method.input_type.lstrip(".")
        for proto in _files()
        if proto.package.startswith("airline.")
        for service in proto.service
        for method in service.method
    }


def _reachable(
    name: str,
    messages: dict[str, Located],
    seen: set[str],
) -> None:
    if name in seen or name not in messages:
        return
    seen.add(name)
    for field in messages[name][0].field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
            _reachable(field.type_name.lstrip("."), messages, seen)


def test_every_request_string_has_a_limit_its_comment_documents() -> None:
    messages, comments = _request_messages(), _comments()
    seen: set[str] = set()
    for name in _input_types():
        _reachable(name, messages, seen)
    problems = []
    for name in sorted(seen):
        message, file, path = messages[name]
        for index, field in enumerate(message.field):
            if field.type != descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                continue
            full = f"{name}.{field.name}"
            comment = comments.get((file, (*path, 2, index)), "")
            documented = re.search(r"At most (\d+) characters", comment)
            if full not in MAX_CHARS:
                problems.append(f"{full}: no limit in the table")
            elif documented is None or int(documented.group(1)) != MAX_CHARS[full]:
                problems.append(
                    f"{full}: comment does not say 'At most {MAX_CHARS[full]} characters'"
                )
    assert problems == []


def _invalid_argument(call: object, request: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10, **kwargs)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value


def test_strings_over_their_limit_are_named_with_the_limit() -> None:
    request = user_pb2.UpdateUserRequest(
        user=user_pb2.User(display_name="d" * 101, roles=["user", "r" * 17]),
        update_mask=field_mask_pb2.FieldMask(paths=["p" * 65]),
    )
    assert length_violations(request) == [
        ("user.display_name", "must be at most 100 characters"),
        ("user.roles[1]", "must be at most 16 characters"),
        ("update_mask.paths[0]", "must be at most 64 characters"),
    ]


def test_strings_within_their_limit_pass() -> None:
    assert length_violations(booking_pb2.GetFlightRequest(flight_id="f" * 64)) == []


@pytest.mark.parametrize(
    ("service", "method", "request_message", "field"),
    [
        ("booking", "GetFlight", booking_pb2.GetFlightRequest(flight_id=LONG), "flight_id"),
        ("booking", "GetBooking", booking_pb2.GetBookingRequest(booking_id=LONG), "booking_id"),
        (
            "booking",
            "CancelBooking",
            booking_pb2.CancelBookingRequest(booking_id=LONG),
            "booking_id",
        ),
        ("booking", "ListFlights", booking_pb2.ListFlightsRequest(origin=LONG), "origin"),
        ("user", "GetUser", user_pb2.GetUserRequest(user_id=LONG), "user_id"),
        ("user", "DeleteUser", user_pb2.DeleteUserRequest(user_id=LONG), "user_id"),
        ("predict", "GetModel", predict_pb2.GetModelRequest(model_id=LONG), "model_id"),
        ("predict", "Predict", predict_pb2.PredictRequest(model_id=LONG), "model_id"),
    ],
)
def test_a_thirty_thousand_character_id_is_invalid_argument_naming_it(
    stack: Stack, service: str, method: str, request_message: object, field: str
) -> None:
    assert stack.admin is not None
    stub = {"booking": stack.bookings, "user": stack.users, "predict": stack.predictions}[service]
    err = _invalid_argument(getattr(stub, method), request_message, metadata=stack.admin.auth)
    assert field_violations(err) == [(field, f"must be at most {MAX_CHARS_OF[field]} characters")]
    assert "xxxx" not in str(err.details())


MAX_CHARS_OF = {"flight_id": 64, "booking_id": 64, "user_id": 64, "model_id": 64, "origin": 32}


def test_a_half_megabyte_flight_id_in_a_booking_is_invalid_argument(stack: Stack) -> None:
    me = stack.sign_up()
    request = booking_pb2.CreateBookingRequest(
        flight_id="f" * 500_000,
        seat_class=booking_pb2.Booking.ECONOMY,
        passenger_name="Ada Lovelace",
        request_id="half-a-megabyte",
    )
    err = _invalid_argument(stack.bookings.CreateBooking, request, metadata=me.auth)
    assert [f for f, _ in field_violations(err)] == ["flight_id"]


def _raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A call that sends `bytes` as they are: protobuf refuses to serialise invalid UTF-8."""
    return channel.unary_unary(method)


def test_invalid_utf8_in_a_string_field_is_invalid_argument_naming_it(stack: Stack) -> None:
    body = b"\x0a\x04\xff\xfeAB"  # field 1 (flight_id), length 4, not UTF-8
    call = _raw(stack.channels["booking"], "/airline.booking.v1.BookingService/GetFlight")
    err = _invalid_argument(call, body)
    assert field_violations(err) == [("flight_id", "must be valid UTF-8")]


def test_invalid_utf8_in_a_nested_string_is_named_by_its_path(stack: Stack) -> None:
    assert stack.admin is not None
    body = b"\x0a\x04\x12\x02\xc3\x28"  # flight { number: <invalid UTF-8> }
    call = _raw(stack.channels["booking"], "/airline.booking.v1.BookingService/CreateFlight")
    err = _invalid_argument(call, body, metadata=stack.admin.auth)
    assert field_violations(err) == [("flight.number", "must be valid UTF-8")]


def test_bytes_that_are_no_message_are_invalid_argument(stack: Stack) -> None:
    call = _raw(stack.channels["user"], "/airline.user.v1.UserService/GetUser")
    err = _invalid_argument(call, b"\x0a\x50abc")  # a length past the end
    assert "not a valid airline.user.v1.GetUserRequest" in str(err.details())
    assert field_violations(err) == []


def test_internal_methods_are_checked_too() -> None:
    parse = checked_parser(user_internal_pb2.LookupUserRequest.FromString)
    assert parse is not None
    rejected = parse(user_internal_pb2.LookupUserRequest(user_id=LONG).SerializeToString())
    assert getattr(rejected, "violations", None) == (("user_id", "must be at most 64 characters"),)


@pytest.mark.parametrize("char", ["x", "é", "✈"], ids=["ascii", "two-byte", "three-byte"])
@pytest.mark.parametrize(
    ("make", "field", "limit"),
    [
        (lambda s: booking_pb2.GetFlightRequest(flight_id=s), "flight_id", 64),
        (lambda s: booking_pb2.ListFlightsRequest(origin=s), "origin", 32),
        (lambda s: user_pb2.UpdateUserRequest(user=user_pb2.User(roles=[s])), "user.roles[0]", 16),
    ],
    ids=["GetFlight", "ListFlights", "UpdateUser"],
)
def test_the_parser_refuses_one_character_over_a_limit_however_short_the_request(
    make: Callable[[str], Message], field: str, limit: int, char: str
) -> None:
    """Requests too short to break any limit skip the walk; one character more is still caught."""
    request_type = type(make(""))
    parse = checked_parser(request_type.FromString)
    assert parse is not None
    at_limit = parse(make(char * limit).SerializeToString())
    assert isinstance(at_limit, request_type)
    over = parse(make(char * (limit + 1)).SerializeToString())
    assert getattr(over, "violations", None) == ((field, f"must be at most {limit} characters"),)


def test_the_shortest_limit_counts_nested_strings_and_stops_at_recursion() -> None:
    assert shortest_limit(booking_pb2.GetFlightRequest.DESCRIPTOR) == 64
    assert shortest_limit(user_pb2.UpdateUserRequest.DESCRIPTOR) == 16  # user.roles
    assert shortest_limit(descriptor_pb2.DescriptorProto.DESCRIPTOR) == 1024  # self-nesting

"""Property-based fuzzing of every servicer method over real gRPC: whatever a client
sends, the answer is a status it can act on, never INTERNAL, UNKNOWN or DATA_LOSS,
and never an oversized one.

Requests are built from each method's input descriptor, so a new method or field is
fuzzed without touching this file. Runs derandomized (the same cases every run) so
CI is reproducible; set FUZZ_EXAMPLES (and FUZZ_RANDOM=1) locally to search further.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airline.auth.v1 import auth_pb2
from airline.booking.v1 import booking_pb2
from airline.predict.v1 import predict_pb2
from airline.user.v1 import user_internal_pb2, user_pb2
from tests.conftest import Account, Stack

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
STATUS_BUDGET = 8 * 1024
# Methods that could lock the shared admin out of the session's stack run as a
# throwaway user instead.
AS_THROWAWAY = {"UpdateUser", "DeleteUser"}

SERVICES = {
    "auth": auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    "booking": booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
    "predict": predict_pb2.DESCRIPTOR.services_by_name["PredictionService"],
    "user": user_pb2.DESCRIPTOR.services_by_name["UserService"],
    "user-internal": user_internal_pb2.DESCRIPTOR.services_by_name["UserInternalService"],
}
CHANNEL_OF = {"user-internal": "user"}
METHODS = [(name, method) for name, service in SERVICES.items() for method in service.methods]

# Text a careless or hostile client sends: empty, huge, non-ASCII, control characters,
# near-valid ids, codes and dates.
_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=string.printable, max_size=80),
    st.sampled_from(["me", "JFK", "9999-12-31", "0001-01-01", "price desc", "admin", "é.é"]),
    st.builds(lambda n: "x" * n, st.integers(60, 70_000)),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=10),
)
_FEATURE_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        _TEXT,
        st.sampled_from(["UA", "EWR", "2026-12-01T17:30:00-05:00", "9999-12-31T23:59:59-05:00"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=5,
)
_FEATURE_KEYS = st.sampled_from(["carrier", "origin", "destination", "scheduled_departure"])


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


_INSTANCES = st.lists(
    st.dictionaries(_FEATURE_KEYS | _TEXT, _FEATURE_VALUES, max_size=6).map(_struct),
    max_size=4,
) | st.integers(0, 1200).map(lambda n: [_struct({"origin": "x"})] * n)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kinds: dict[int, st.SearchStrategy[Any]] = {
        FieldDescriptor.TYPE_STRING: _TEXT,
        FieldDescriptor.TYPE_BOOL: st.booleans(),
        FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
        FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
        FieldDescriptor.TYPE_DOUBLE: st.floats(),
        FieldDescriptor.TYPE_ENUM: st.integers(-5, 10),  # unknown numbers too
    }
    return kinds[field.type]


def _messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(
            cls, seconds=st.integers(-(2**40), 2**40), nanos=st.integers(-(2**31), 2**31 - 1)
        )
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.full_name == "airline.predict.v1.PredictRequest.instances":
            fields[field.name] = _INSTANCES
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 2 or field.message_type is None:
                continue
            value = _messages(field.message_type, depth + 1)
        else:
            value = _scalar(field)
        fields[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda given: _build(cls, given))


def _build(cls: Callable[[], Message], given: dict[str, Any]) -> Message:
    message = cls()
    for name, value in given.items():
        target = getattr(message, name)
        if isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@pytest.fixture(scope="module")
def throwaway(stack: Stack) -> Account:
    return stack.sign_up(display_name="Fuzz Target")


@pytest.mark.slow
@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m.full_name for _, m in METHODS])
def test_no_request_gets_a_server_fault(
    stack: Stack, throwaway: Account, service: str, method: MethodDescriptor
) -> None:
    assert stack.admin is not None
    caller = throwaway if method.name in AS_THROWAWAY else stack.admin
    output = message_factory.GetMessageClass(method.output_type)
    call: grpc.UnaryUnaryMultiCallable[Message, Message] = stack.channels[
        CHANNEL_OF.get(service, service)
    ].unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=output.FromString,
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=_messages(method.input_type), signed_in=st.booleans())
    def answers_cleanly(request: Message, signed_in: bool) -> None:
        metadata = caller.auth if signed_in else None
        assert _fault(call, request, metadata) is None, method.full_name

    answers_cleanly()


def _fault(call: Any, request: Message, metadata: tuple[tuple[str, str], ...] | None) -> str | None:
    """What is wrong with the answer to `request`, or None when it is clean."""
    try:
        call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as err:
        if err.code() in SERVER_FAULTS:
            return f"{err.code().name}: {err.details()}"
        found = rpc_status.from_call(err)
        if found is not None and len(found.SerializeToString()) >= STATUS_BUDGET:
            return f"a status of {len(found.SerializeToString())} bytes"
    return None

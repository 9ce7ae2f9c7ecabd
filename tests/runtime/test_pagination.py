"""Page sizes and tamper-evident page tokens."""

import grpc
import pytest

from airline.booking.v1 import booking_pb2
from airline.predict.v1 import predict_pb2
from airline.user.v1 import user_pb2
from services.runtime.errors import InvalidArgument, field_violations
from services.runtime.pagination import PageTokens, page_size
from tests.conftest import Stack

QUERY = {"origin": "JFK", "order_by": "price"}


def test_page_size_defaults_to_twenty_and_clamps_to_one_hundred() -> None:
    assert page_size(0) == 20
    assert page_size(7) == 7
    assert page_size(5000) == 100


def test_negative_page_size_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as err:
        page_size(-1)
    assert err.value.violations[0][0] == "page_size"


def test_token_round_trips_its_cursor() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": ["2026-01-01T00:00:00Z", "abc"]}, QUERY)
    assert tokens.decode(token, QUERY) == {"after": ["2026-01-01T00:00:00Z", "abc"]}


def test_empty_token_means_first_page() -> None:
    assert PageTokens(b"k").decode("", QUERY) is None


@pytest.mark.parametrize(
    "edit", [lambda t: "x" + t, lambda t: t[:-2], lambda t: t + "==", str.upper]
)
def test_edited_token_is_refused(edit: object) -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument) as err:
        tokens.decode(edit(token), QUERY)  # type: ignore[operator]
    assert err.value.violations[0][0] == "page_token"


def test_token_replayed_with_other_filters_is_refused() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument):
        tokens.decode(token, {**QUERY, "origin": "EWR"})


def test_token_signed_with_another_key_is_refused() -> None:
    token = PageTokens(b"a" * 32).encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument):
        PageTokens(b"b" * 32).decode(token, QUERY)


@pytest.mark.parametrize("token", ["é", "abc.é", "é.abc", "\u2603.\u2603", "\x00.\x00"])
def test_non_ascii_token_is_refused_not_a_crash(token: str) -> None:
    """hmac.compare_digest raises TypeError on non-ASCII str; that was an INTERNAL."""
    with pytest.raises(InvalidArgument) as err:
        PageTokens(b"k" * 32).decode(token, QUERY)
    assert err.value.violations[0][0] == "page_token"


@pytest.mark.parametrize(
    ("service", "method", "request_type"),
    [
        ("bookings", "ListFlights", booking_pb2.ListFlightsRequest),
        ("bookings", "ListBookings", booking_pb2.ListBookingsRequest),
        ("users", "ListUsers", user_pb2.ListUsersRequest),
        ("predictions", "ListModels", predict_pb2.ListModelsRequest),
    ],
)
def test_every_list_method_refuses_a_non_ascii_token(
    stack: Stack, service: str, method: str, request_type: type
) -> None:
    assert stack.admin is not None
    call = getattr(getattr(stack, service), method)
    with pytest.raises(grpc.RpcError) as err:
        call(request_type(page_token="\u00e9.\u00e9"), metadata=stack.admin.auth, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["page_token"]

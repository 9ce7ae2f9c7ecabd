"""Error statuses stay small whatever the input: they travel in HTTP/2 trailers."""

from __future__ import annotations

from google.rpc import error_details_pb2, status_pb2

from services.runtime.errors import (
    MAX_VIOLATIONS,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    clip,
)

STATUS_BUDGET = 5 * 1024


def _size(err: InvalidArgument | NotFound | FailedPrecondition) -> int:
    status = err.to_status()
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return len(details)


def _bad_request(err: InvalidArgument) -> error_details_pb2.BadRequest:
    status = status_pb2.Status.FromString(
        dict(err.to_status().trailing_metadata)["grpc-status-details-bin"]
    )
    bad = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad)
    return bad


def test_many_violations_keep_the_first_fifty_and_count_the_rest() -> None:
    err = InvalidArgument([(f"instances[{i}].origin", "must be an IATA code") for i in range(1000)])
    kept = _bad_request(err).field_violations
    assert len(kept) == MAX_VIOLATIONS
    assert kept[0].field == "instances[0].origin"
    assert "and 997 more (1000 in all, 50 listed in the details)" in err.message
    assert _size(err) < STATUS_BUDGET


def test_huge_fields_descriptions_and_messages_are_clipped() -> None:
    huge = "\u00e9" * 100_000
    err = InvalidArgument([(huge, huge)] * 100)
    assert _size(err) < STATUS_BUDGET
    assert len(err.message.encode()) <= 512


def test_huge_message_and_metadata_are_clipped_for_every_error_kind() -> None:
    huge = "x" * 100_000
    for err in (
        NotFound(huge, metadata={f"k{i}": huge for i in range(100)}),
        FailedPrecondition(huge, reason="FLIGHT_DEPARTED"),
    ):
        assert _size(err) < STATUS_BUDGET


def test_a_short_error_is_left_as_it_is() -> None:
    err = InvalidArgument([("email", "is required")])
    assert err.message == "email: is required"
    assert [(v.field, v.description) for v in _bad_request(err).field_violations] == [
        ("email", "is required")
    ]


def test_clip_never_splits_a_character() -> None:
    clipped = clip("\u00e9" * 10, 8)
    assert clipped == "\u00e9\u00e9..."
    assert len(clipped.encode()) <= 8

"""Conversions between Python values and protobuf well-known types."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp for an aware datetime (a naive one is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_fields(moment: datetime) -> dict[str, int]:
    """A Timestamp's fields for an aware datetime: exact, whole seconds and nanos.

    For a message's constructor: building a Timestamp with FromDatetime and having the
    constructor copy it in cost 3x more.
    """
    since = moment - _EPOCH
    return {"seconds": since.days * 86_400 + since.seconds, "nanos": since.microseconds * 1000}

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

"""Python values as protobuf well-known types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from services.runtime.messages import timestamp, timestamp_fields

MOMENTS = [
    datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2030, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=-5))),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_timestamp_fields_are_the_timestamp_of_the_same_instant(moment: datetime) -> None:
    """To the microsecond, before the epoch and in other zones too."""
    fields = timestamp_pb2.Timestamp(**timestamp_fields(moment))
    assert fields == timestamp(moment)
    assert fields.ToDatetime(tzinfo=UTC) == moment

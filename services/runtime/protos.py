"""Small conversions between stored values and well-known protobuf types, for servicers."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from services.runtime.errors import InvalidArgument


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    """A Timestamp from microseconds since the epoch."""
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(us)
    return ts


def optional_timestamp(us: int) -> timestamp_pb2.Timestamp | None:
    """As `timestamp`, but unset (None) for 0: a time that has not happened."""
    return timestamp(us) if us else None


def microseconds(ts: timestamp_pb2.Timestamp, field: str) -> int:
    """A request's Timestamp in microseconds; INVALID_ARGUMENT naming `field` if out of range."""
    try:
        return int(ts.ToMicroseconds())
    except (ValueError, OverflowError):
        raise InvalidArgument.for_field(field, "is not a valid timestamp") from None

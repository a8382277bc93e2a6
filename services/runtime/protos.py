"""Small conversions between stored values and well-known protobuf types, for servicers."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from devmesh.options.v1 import options_pb2
from services.runtime.errors import FieldViolation, InvalidArgument

# An error names a few paths, each bounded: the whole status must stay small (trailers).
MAX_REPORTED_NUMBERS = 10  # non-finite numbers named in one error; the rest are counted
MAX_QUOTED_KEY = 64  # characters of one document key in a path
MAX_PATH = 256  # characters of a path after its field; a longer one keeps its end
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A path into a document as it is walked: (parent, key or index), rendered only on error.
_Path = tuple[Any, str | int] | None


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


def document(message: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A request's Struct as a JSON object (numbers as the floats the Struct holds).

    A Struct's number_value can hold NaN and ±Infinity, which JSON cannot: each is refused
    with INVALID_ARGUMENT naming its path under `field` (`environment.content.db.port`), here,
    before any code that stores or validates JSON sees it.
    """
    non_finite: list[tuple[_Path, float]] = []
    converted = _object(message, None, non_finite)
    if non_finite:
        raise _non_finite_numbers(field, non_finite)
    return converted


def _object(message: struct_pb2.Struct, path: _Path, non_finite: list[tuple[_Path, float]]) -> dict[str, Any]:
    return {key: _value(value, (path, key), non_finite) for key, value in message.fields.items()}


def _value(value: struct_pb2.Value, path: _Path, non_finite: list[tuple[_Path, float]]) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            non_finite.append((path, number))
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _object(value.struct_value, path, non_finite)
    if kind == "list_value":
        return [_value(item, (path, i), non_finite) for i, item in enumerate(value.list_value.values)]
    return None  # null_value, or no kind set: JSON null either way


def field_path(field: str, path: _Path) -> str:
    """`field` followed by a document path: `.key` for identifier keys, `["key"]` otherwise,
    `[index]` for list items (AIP-193 field paths). Long keys and paths are shortened (`…`)."""
    parts: list[str] = []
    while path is not None:
        path, step = path
        if isinstance(step, int):
            parts.append(f"[{step}]")
            continue
        key = step if len(step) <= MAX_QUOTED_KEY else step[:MAX_QUOTED_KEY] + "…"
        parts.append(f".{key}" if _IDENTIFIER.fullmatch(step) else f"[{json.dumps(key, ensure_ascii=False)}]")
    rendered = "".join(reversed(parts))
    return field + (rendered if len(rendered) <= MAX_PATH else "…" + rendered[-MAX_PATH:])


def _non_finite_numbers(field: str, found: list[tuple[_Path, float]]) -> InvalidArgument:
    violations = [
        FieldViolation(
            field_path(field, path),
            f"{_json_name(number)} is not a JSON number; numbers must be finite",
            "NUMBER_NOT_FINITE",
        )
        for path, number in found[:MAX_REPORTED_NUMBERS]
    ]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return InvalidArgument(
        f"{violations[0].field}: {violations[0].description}{more}", violations, reason="NUMBER_NOT_FINITE"
    )


def _json_name(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def channel_of(message: type[Message]) -> str:
    """The pub/sub channel a contract names for announcing `message` (its `channel` option)."""
    channel = str(message.DESCRIPTOR.GetOptions().Extensions[options_pb2.channel])
    if not channel:
        raise ValueError(f"{message.DESCRIPTOR.full_name} names no channel")
    return channel

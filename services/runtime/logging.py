"""structlog configured for one JSON object per line on stderr.

Every line carries the request id of the call it belongs to (from the context var), so
domain code logs `log.info("config.environment.updated", namespace=..., revision=...)` and
the line can be joined with the `rpc.completed` line of the same call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from services.runtime import request_context


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = request_context.request_id.get()
    if rid and "request_id" not in event:
        event["request_id"] = rid
    return event


def _dumps(event: Any, **_: Any) -> bytes:
    return orjson.dumps(event, default=str)


# Set by `configure`: where `line` writes and from which level. None: structlog's defaults.
_fast: tuple[Any, int] | None = None


def line(logger_name: str, event: str, fields: dict[str, Any]) -> None:
    """One info-level JSON line in the same shape structlog's chain makes, without the chain:
    for the one line every RPC writes. Falls back to structlog until `configure` ran."""
    if _fast is None:
        structlog.get_logger(logger_name=logger_name).info(event, **fields)
        return
    stream, threshold = _fast
    if threshold > logging.INFO:
        return
    fields["logger_name"], fields["event"], fields["level"] = logger_name, event, "info"
    fields["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    rid = request_context.request_id.get()
    if rid and "request_id" not in fields:
        fields["request_id"] = rid
    stream.write(orjson.dumps(fields, default=str) + b"\n")
    stream.flush()


def configure(level: str = "info", *, stream: Any = None) -> None:
    """Route structlog and stdlib logging to JSON lines at `level`."""
    global _fast
    numeric = logging.getLevelName(level.upper())
    stream = stream or sys.stderr
    _fast = (getattr(stream, "buffer", stream), numeric)
    logging.basicConfig(level=numeric, stream=stream, format="%(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_request_id,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),  # one log line per RPC: keep it cheap
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(getattr(stream, "buffer", stream)),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(logger_name=name)

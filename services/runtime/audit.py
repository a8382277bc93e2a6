"""The audit trail: one event per mutation, credential failure and permission denial, from
every service, in a bounded Redis Stream (`devmesh:audit`) and in the log.

An event names who (actor), what (action: the permission), on what (resource), the result
(status code and reason), when, the request id and the peer. It never carries a request
payload, a key, a token or a secret value. Writing it never fails the call: when Redis is
down the event still reaches the log, and `devmesh_audit_write_failures_total` counts it.

Every value is bounded (`bounded_event`): events are written for calls refused before any
credential was checked, so without a bound anyone could grow the stream by megabytes a call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from services.runtime.bounds import clip
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.telemetry import AUDIT_WRITE_FAILURES

log = get_logger("devmesh.audit")

STREAM = "devmesh:audit"
DETAIL_PREFIX = "detail."  # stream fields carrying a service's extra notes

MAX_RESOURCE = 512  # characters of the resource name kept; longer names are clipped, marked
MAX_VALUE = 256  # characters of any other value
MAX_DETAILS = 16  # a service's notes per event
MAX_DETAIL_KEY = 64
DETAILS_LEFT_OUT = DETAIL_PREFIX + "left_out"  # how many notes did not fit


def bounded_event(event: Mapping[str, Any]) -> dict[str, str]:
    """`event` as stored: every value a string, clipped; at most MAX_DETAILS notes. Applied when
    writing and again when reading, so events written before the bounds existed are bounded too."""
    bounded: dict[str, str] = {}
    details = 0
    for key, value in event.items():
        if key.startswith(DETAIL_PREFIX) and key != DETAILS_LEFT_OUT:
            details += 1
            if details > MAX_DETAILS:
                continue
            key = DETAIL_PREFIX + clip(key[len(DETAIL_PREFIX) :], MAX_DETAIL_KEY)
        limit = MAX_RESOURCE if key == "resource" else MAX_VALUE
        bounded[key] = clip(str(value), limit)
    if details > MAX_DETAILS:
        bounded[DETAILS_LEFT_OUT] = str(details - MAX_DETAILS)
    return bounded


class AuditLog:
    def __init__(self, redis: Redis, *, retention: int) -> None:
        self._redis = redis
        self._retention = retention

    async def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        result: str,
        reason: str,
        request_id: str,
        peer: str,
        method: str,
        service: str,
        details: Mapping[str, str] | None = None,
    ) -> None:
        raw: dict[str, Any] = {
            "time_us": int(time.time() * 1_000_000),
            "actor": actor,
            "action": action,
            "resource": resource,
            "result": result,
            "reason": reason,
            "request_id": request_id,
            "peer": peer,
            "method": method,
            "service": service,
        }
        for key, value in (details or {}).items():
            raw[DETAIL_PREFIX + key] = value
        event = bounded_event(raw)
        log.info("audit.event", **event)
        try:
            await self._redis.xadd(STREAM, event, maxlen=self._retention, approximate=True)
        except Exception as exc:
            AUDIT_WRITE_FAILURES.inc()
            log.warning("audit.write_failed", error=type(exc).__name__, request_id=request_id)

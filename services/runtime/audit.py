"""The audit trail: one event per mutation, credential failure and permission denial, from
every service, in a bounded Redis Stream (`devmesh:audit`) and in the log.

An event names who (actor), what (action: the permission), on what (resource), the result
(status code and reason), when, the request id and the peer. It never carries a request
payload, a key, a token or a secret value. Writing it never fails the call: when Redis is
down the event still reaches the log, and `devmesh_audit_write_failures_total` counts it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.telemetry import AUDIT_WRITE_FAILURES

log = get_logger("devmesh.audit")

STREAM = "devmesh:audit"
DETAIL_PREFIX = "detail."  # stream fields carrying a service's extra notes


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
        event: dict[str, Any] = {
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
            event[DETAIL_PREFIX + key] = value
        log.info("audit.event", **event)
        try:
            await self._redis.xadd(STREAM, event, maxlen=self._retention, approximate=True)
        except Exception as exc:
            AUDIT_WRITE_FAILURES.inc()
            log.warning("audit.write_failed", error=type(exc).__name__, request_id=request_id)

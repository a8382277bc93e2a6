"""One audit event per mutation (whatever its outcome) and per refused credential or
permission (reads included). Runs outside the access check so that it sees refusals.

Reads that succeed are not audited: ResolveConfig at thousands of calls a second would drown
the trail. Public methods are never audited.
"""

from __future__ import annotations

from typing import Any

from services.runtime import request_context
from services.runtime.audit import AuditLog
from services.runtime.interceptors.base import Metadata, metadata_value
from services.runtime.logging import get_logger
from services.runtime.methods import MethodInfo, resource_of

log = get_logger(__name__)

_REFUSALS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


class Audit:
    """Records a call's audit event once its outcome is known."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    @staticmethod
    def applies(info: MethodInfo) -> bool:
        return not info.public

    async def record(
        self,
        info: MethodInfo,
        raw: Any,
        metadata: Metadata,
        peer: str,
        notes: dict[str, str],
        code: str,
    ) -> None:
        """Write the event when the call was a mutation or a refusal; never raises."""
        if not info.mutation and code not in _REFUSALS:
            return
        try:
            resource = notes.pop("resource", "") or resource_of(
                info.decode_request(raw) if isinstance(raw, bytes) else raw
            )
            forwarded = metadata_value(metadata, "x-forwarded-for")
            await self._audit.record(
                actor=request_context.principal_name(),
                action=info.action,
                resource=resource,
                result=code,
                reason=request_context.error_reason.get() if code != "OK" else "",
                request_id=request_context.request_id.get(),
                peer=f"{peer} for {forwarded}" if forwarded else peer,
                method=info.full_method,
                service=info.short_service,
                details=notes,
            )
        except Exception:  # the call's outcome stands; the log keeps the failure
            log.exception("audit.record_failed", method=info.full_method)

"""Per-call context that any code on the call's task can read: request id, principal, the
reason of a refusal, and what a service adds to the call's audit event."""

from __future__ import annotations

import contextvars

ANONYMOUS = "anonymous"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_request_id", default="")
# Set by the access step once the caller is authenticated.
principal: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_principal", default=ANONYMOUS)
# The ErrorInfo reason of the error the call ended with (set by `end_call`).
error_reason: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_error_reason", default="")
# Extra fields for the call's audit event; the audit step sets a fresh dict per call.
audit_notes: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "devmesh_audit_notes", default=None
)


def note_audit(**fields: object) -> None:
    """Add fields (the revision written, the resource created...) to this call's audit event."""
    notes = audit_notes.get()
    if notes is not None:
        notes.update({k: str(v) for k, v in fields.items()})

"""Per-call context that any code on the call's task can read: the request id, who calls
(the one place that says so), the reason of a refusal, and what a service adds to the call's
audit event."""

from __future__ import annotations

import contextvars

from services.runtime.identity import roles
from services.runtime.identity.principal import Principal

ANONYMOUS = "anonymous"
# With DEVMESH_AUTH=off (local debugging, loopback only) every caller is this.
LOCAL_ADMIN = Principal(name=ANONYMOUS, role=roles.ADMIN)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_request_id", default="")
# The authenticated caller, set by the access step; None before it (or without one: public
# methods, DEVMESH_AUTH=off).
caller: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("devmesh_caller", default=None)
# The credential the caller presented (`authorization` or `x-api-key`), for a service that
# calls another on the caller's behalf (reading what the caller may read). Never logged.
forwardable: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "devmesh_forwardable_credentials", default=()
)
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


def current_caller() -> Principal:
    """Who is calling, for servicers that act on its behalf: the authenticated principal, or
    LOCAL_ADMIN when auth is off."""
    return caller.get() or LOCAL_ADMIN


def principal_name() -> str:
    """The caller's name for logs and audit events: `anonymous` until one is authenticated."""
    found = caller.get()
    return found.name if found is not None else ANONYMOUS

"""Per-call context (request id, principal) that any code on the call's task can read."""

from __future__ import annotations

import contextvars

ANONYMOUS = "anonymous"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_request_id", default="")
# Set by the authentication interceptor (identity issue); until then every caller is anonymous.
principal: contextvars.ContextVar[str] = contextvars.ContextVar("devmesh_principal", default=ANONYMOUS)

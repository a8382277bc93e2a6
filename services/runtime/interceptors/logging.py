"""One `rpc.completed` JSON line per call: method, code, duration, request id, trace id, principal.

Never logs payloads or metadata values other than the request id: requests may carry
documents, keys and tokens.
"""

from __future__ import annotations

import random
import time

from services.runtime import logging as runtime_logging
from services.runtime import request_context
from services.runtime.interceptors.base import Metadata, metadata_value
from services.runtime.methods import MethodInfo

_MAX_REQUEST_ID = 128


def request_id(metadata: Metadata) -> str:
    """The caller's `x-request-id` (from the call's `metadata`) when it is a sane one, else a
    fresh random id."""
    incoming = metadata_value(metadata, "x-request-id")
    if incoming and len(incoming) <= _MAX_REQUEST_ID and incoming.isprintable():
        return incoming
    # Unique, not secret: a PRNG draw costs far less than uuid4's system call.
    return f"{random.getrandbits(128):032x}"


def completed(info: MethodInfo, peer: str, start: float, code: str, trace_id: str | None) -> None:
    runtime_logging.line(
        "devmesh.rpc",
        "rpc.completed",
        {
            "method": info.full_method,
            "code": code,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "trace_id": trace_id,
            "principal": request_context.principal_name(),
            "reason": request_context.error_reason.get() or None,
            "peer": peer,
        },
    )

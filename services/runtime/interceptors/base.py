"""Helpers every step of the call pipeline shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

Metadata = Sequence[tuple[str, Any]]  # a call's invocation metadata, as the pipeline read it once


def metadata_value(metadata: Metadata, key: str) -> str | None:
    """The first value of an invocation metadata key (keys are lowercase on the wire); None
    when absent or binary."""
    for item in metadata:
        if item[0] == key:
            return item[1] if isinstance(item[1], str) else None
    return None


def status_name(context: aio.ServicerContext) -> str:
    """The call's final status code name; OK when nothing set one."""
    code: grpc.StatusCode | None = context.code()
    return "OK" if code is None else str(code.name)

"""Prometheus latency histogram by method and final code, and an in-flight gauge by kind."""

from __future__ import annotations

from typing import Any

from services.runtime.methods import MethodInfo
from services.runtime.telemetry import RPC_DURATION, RPC_IN_FLIGHT

UNARY_IN_FLIGHT = RPC_IN_FLIGHT.labels("unary")
STREAM_IN_FLIGHT = RPC_IN_FLIGHT.labels("stream")

# Labelled children by (method, code): `labels()` locks and hashes on every call; a dict
# lookup does not. Bounded by the methods served times the codes they end with.
_durations: dict[tuple[str, str], Any] = {}


def observe(info: MethodInfo, code: str, seconds: float) -> None:
    child = _durations.get((info.full_method, code))
    if child is None:
        child = _durations[(info.full_method, code)] = RPC_DURATION.labels(info.service, info.method, code)
    child.observe(seconds)

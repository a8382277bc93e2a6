"""Prometheus latency histogram by method and final code, and an in-flight gauge by kind."""

from __future__ import annotations

from typing import Any
from weakref import WeakSet

from services.runtime.interceptors.concurrency import ConcurrencyLimit
from services.runtime.methods import MethodInfo
from services.runtime.telemetry import RPC_DURATION, RPC_IN_FLIGHT

# The gauge reads the concurrency bounds' own counts when it is scraped, rather than being
# raised and lowered (under a lock) twice per call.
_limits: WeakSet[ConcurrencyLimit] = WeakSet()
RPC_IN_FLIGHT.labels("unary").set_function(lambda: sum(limit.unary_in_flight for limit in list(_limits)))
RPC_IN_FLIGHT.labels("stream").set_function(lambda: sum(limit.streams_open for limit in list(_limits)))


def count_in_flight(limit: ConcurrencyLimit) -> None:
    """Report `limit`'s calls and streams in the in-flight gauge, for as long as it lives."""
    _limits.add(limit)


# Labelled children by (method, code): `labels()` locks and hashes on every call; a dict
# lookup does not. Bounded by the methods served times the codes they end with.
_durations: dict[tuple[str, str], Any] = {}


def observe(info: MethodInfo, code: str, seconds: float) -> None:
    child = _durations.get((info.full_method, code))
    if child is None:
        child = _durations[(info.full_method, code)] = RPC_DURATION.labels(info.service, info.method, code)
    child.observe(seconds)

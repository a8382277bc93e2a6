"""The health Watch stream, driven directly: what a drain does to a stream mid-write."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from services.runtime.errors import Unavailable
from services.runtime.health import NOT_SERVING, SERVING, HealthServicer


async def test_a_drain_that_starts_while_a_status_is_written_still_tells_not_serving() -> None:
    servicer = HealthServicer()
    servicer.set("svc", SERVING)
    watch = servicer.Watch(health_pb2.HealthCheckRequest(service="svc"), None)
    assert (await anext(watch)).status == SERVING  # the stream is now suspended in that write
    servicer.enter_graceful_shutdown()
    assert (await anext(watch)).status == NOT_SERVING
    with pytest.raises(Unavailable):
        await anext(watch)

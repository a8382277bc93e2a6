"""Blocking reads of runs (the event stream, the work and job queues) against the Redis
client's own timeout, on a real Valkey."""

from __future__ import annotations

import uuid

from services.pipeline.runs.store import block_ms
from services.runtime import redis_client
from tools.stack.valkey import Valkey


async def test_a_blocking_read_of_a_quiet_stream_ends_empty_before_the_client_times_out(
    valkey: Valkey,
) -> None:
    client = redis_client.connect(valkey.url, 0.3)  # DEVMESH_REDIS_TIMEOUT=0.3
    try:
        quiet = f"devmesh:test:quiet:{uuid.uuid4().hex}"
        found = await client.xread({quiet: "0-0"}, block=block_ms(client, 2000))
        assert not found
    finally:
        await client.aclose()

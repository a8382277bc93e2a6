"""An event is sent once per key, and its "sent" marker does not stay in Redis for ever."""

from __future__ import annotations

import uuid

from services.runtime import notifications, redis_client
from tools.stack.valkey import Valkey


async def test_an_event_is_sent_once_and_its_marker_expires_after_the_dedup_ttl(valkey: Valkey) -> None:
    client = redis_client.connect(valkey.url, 5.0)
    prefix = f"test:{uuid.uuid4().hex[:8]}:notify:"
    notifier = notifications.Notifier(
        client, redis_client.DurableWriter(client, False, 5.0), prefix, dedup_ttl=3600
    )
    try:
        first = await notifier.emit("budget:b1:2026-12:ACTUAL:80", "budget.threshold_crossed", {"x": 1}, [])
        again = await notifier.emit("budget:b1:2026-12:ACTUAL:80", "budget.threshold_crossed", {"x": 1}, [])
        assert first and again is None
        assert 3500 < await client.ttl(prefix + "sent:budget:b1:2026-12:ACTUAL:80") <= 3600
        assert notifications.Notifier(client, notifier.durable, prefix).dedup_ttl == notifications.DEDUP_TTL_S
    finally:
        await client.aclose()

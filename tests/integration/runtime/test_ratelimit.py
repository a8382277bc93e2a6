"""The rate limiter's script on a real Valkey, over the multiplexed connection."""

from __future__ import annotations

import uuid

from services.runtime import redis_client
from services.runtime.ratelimit import Limit, RateLimiter
from services.runtime.redis_mux import MultiplexedRedis
from tools.stack.valkey import Valkey


async def test_the_script_is_sent_whole_when_redis_has_forgotten_it(valkey: Valkey) -> None:
    pooled = redis_client.connect(valkey.url, timeout=2)
    mux = MultiplexedRedis(pooled)
    limiter = RateLimiter(mux)
    limit = Limit(per_second=1, burst=2)
    try:
        first = await limiter.check(f"p-{uuid.uuid4()}", limit, 1)
        await pooled.script_flush()  # as after a restart without persistence
        principal = f"p-{uuid.uuid4()}"
        second = await limiter.check(principal, limit, 1)
        third = await limiter.check(principal, limit, 1)
        fourth = await limiter.check(principal, limit, 1)
    finally:
        await mux.aclose()
        await pooled.aclose()
    assert (first.admitted, first.backend) == (True, "redis")
    assert (second.admitted, second.backend, second.remaining) == (True, "redis", 1)
    assert (third.admitted, third.remaining) == (True, 0)
    assert (fourth.admitted, fourth.backend) == (False, "redis")  # the shared bucket, not a fallback
    assert not limiter.degraded

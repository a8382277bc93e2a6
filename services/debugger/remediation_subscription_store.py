"""Webhook subscriptions in Redis: one hash, a subscription per field (JSON), each write a
compare-and-set on the subscription's version so two updates at once cannot both win."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from services.debugger.remediation_subscriptions import Subscription
from services.runtime.redis_client import DurableWriter, Redis

KEY = "devmesh:debugger:webhook_subscriptions"

# KEYS: hash; ARGV: id, JSON, the most subscriptions kept. 1 created, 0 exists, -1 full.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# KEYS: hash; ARGV: id, version expected, JSON (empty: delete). 1 written, 0 gone, -1 changed.
_WRITE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if tostring(cjson.decode(raw)['version']) ~= ARGV[2] then return -1 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""


def _encode(subscription: Subscription) -> str:
    return json.dumps(asdict(subscription), separators=(",", ":"), sort_keys=True)


def _decode(raw: bytes | str) -> Subscription:
    fields: dict[str, Any] = json.loads(raw)
    fields["event_types"] = tuple(fields["event_types"])
    return Subscription(**fields)


class SubscriptionStore:
    """Reads and writes subscriptions; every write is confirmed durable."""

    def __init__(self, redis: Redis, durable: DurableWriter) -> None:
        self._redis = redis
        self._durable = durable

    async def create(self, subscription: Subscription, maximum: int) -> int:
        """1 when created, 0 when the id exists, -1 when `maximum` are kept already."""
        done = int(await self._redis.eval(_CREATE, 1, KEY, subscription.id, _encode(subscription), maximum))
        if done == 1:
            await self._durable.confirm()
        return done

    async def replace(self, subscription: Subscription | None, sub_id: str, version: int) -> int:
        """Write (or, with None, delete) `sub_id` if it is still at `version`: 1 done, 0 gone,
        -1 changed meanwhile."""
        body = _encode(subscription) if subscription is not None else ""
        done = int(await self._redis.eval(_WRITE, 1, KEY, sub_id, str(version), body))
        if done == 1:
            await self._durable.confirm()
        return done

    async def get(self, sub_id: str) -> Subscription | None:
        """One subscription, or None."""
        raw = await self._redis.hget(KEY, sub_id)
        return _decode(raw) if raw is not None else None

    async def all(self) -> list[Subscription]:
        """Every subscription, in id order (there are at most a few hundred)."""
        found = await self._redis.hgetall(KEY)
        return sorted((_decode(raw) for raw in found.values()), key=lambda s: s.id)

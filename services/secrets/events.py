"""Secret events (rotations, reminders, version changes): a bounded Redis Stream that anyone
can replay and follow, and a pub/sub channel for those who only want news.

    devmesh:secrets:events            stream: type, secret, version, time_us
    devmesh:secrets:events:live       pub/sub: the same, as JSON
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.runtime import channels
from services.runtime.errors import Unavailable
from services.runtime.redis_client import Redis

STREAM = "devmesh:secrets:events"
CHANNEL = channels.SECRET_EVENTS

ROTATION_STARTED = "ROTATION_STARTED"
ROTATED = "ROTATED"
ROTATION_DUE = "ROTATION_DUE"
VERSION_ADDED = "VERSION_ADDED"
VERSION_CHANGED = "VERSION_CHANGED"
DELETED = "DELETED"


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    secret: str  # the secret id
    version: int
    time_us: int


@dataclass(frozen=True)
class Quiet:
    """Nothing new arrived for a while; every event up to `id` has been read."""

    id: str


class Events:
    def __init__(self, redis: Redis, retention: int) -> None:
        self._redis = redis
        self._retention = retention
        self.closing = False  # set when the server drains: followers end instead of holding it up

    async def publish(self, kind: str, sid: str, version: int = 0) -> str:
        fields = {"type": kind, "secret": sid, "version": version, "time_us": int(time.time() * 1_000_000)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(STREAM, fields, maxlen=self._retention, approximate=True)
            pipe.publish(CHANNEL, json.dumps(fields))
            entry_id, _ = await pipe.execute()
        return str(entry_id.decode())

    async def last_id(self) -> str:
        entries = await self._redis.xrevrange(STREAM, count=1)
        return entries[0][0].decode() if entries else "0-0"

    async def follow(self, after_id: str, block_ms: int = 1000) -> AsyncIterator[Event | Quiet]:
        """Events after `after_id`, forever; `Quiet` after each quiet `block_ms`."""
        cursor = after_id
        while True:
            if self.closing:
                raise Unavailable(
                    f"the server is shutting down; resume with after_id={cursor}",
                    retry_after=0.1,
                    reason="SHUTTING_DOWN",
                    metadata={"after_id": cursor},
                )
            batches = await self._redis.xread({STREAM: cursor}, count=100, block=block_ms)
            if not batches:
                yield Quiet(cursor)
                continue
            for entry_id, raw in batches[0][1]:
                cursor = entry_id.decode()
                text = {k.decode(): v.decode() for k, v in raw.items()}
                yield Event(cursor, text["type"], text["secret"], int(text["version"]), int(text["time_us"]))

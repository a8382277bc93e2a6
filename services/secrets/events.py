"""Secret events (rotations, reminders, version changes): a bounded Redis Stream that anyone
can replay and follow, and a pub/sub channel for the services that only want news.

    devmesh:secrets:events            stream: type, secret, version, time_us
    SecretEvent's channel             pub/sub: each event as a serialized SecretEvent (the
                                      contract names the channel: `protos.channel_of`)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from devmesh.secrets.v1 import secrets_pb2
from services.runtime import protos
from services.runtime.errors import Unavailable
from services.runtime.redis_client import Redis

STREAM = "devmesh:secrets:events"
CHANNEL = protos.channel_of(secrets_pb2.SecretEvent)

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
        """Add the event to the stream, then announce it: the stream is the record, the
        announcement news (followers that miss one read the stream)."""
        time_us = int(time.time() * 1_000_000)
        fields = {"type": kind, "secret": sid, "version": version, "time_us": time_us}
        entry_id = (await self._redis.xadd(STREAM, fields, maxlen=self._retention, approximate=True)).decode()
        notice = secrets_pb2.SecretEvent(
            id=entry_id,
            type=secrets_pb2.SecretEvent.Type.Value(f"TYPE_{kind}"),
            secret=f"secrets/{sid}",
            version=version,
            time=protos.timestamp(time_us),
        )
        await self._redis.publish(CHANNEL, notice.SerializeToString())
        return str(entry_id)

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

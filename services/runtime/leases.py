"""Leases in Redis: one holder at a time for a named thing, across replicas.

A lease is a key holding its holder's random token, with an expiry: a holder that dies frees
it when the time runs out. Only the holder's token renews or releases it. A holder that must
be sure it still holds the lease when it acts (a commit after a long job) checks the token in
the same Lua script that acts: `HELD_CHECK` is the fragment such scripts begin with.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence

from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Lua for a script whose first len(leases) KEYS are lease keys and ARGV[1..] their tokens:
# it returns {'lost', key} unless every one is still held with its token.
HELD_CHECK = """
local leases = tonumber(ARGV[1])
for i = 1, leases do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then
    return {'lost', KEYS[i]}
  end
end
"""


class Lease:
    """One lease, held (or not) by this process."""

    def __init__(self, redis: Redis, key: str, ttl: float) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1, int(ttl * 1000))
        self.token = secrets.token_hex(16)
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this process holds it now."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the lease; False when it was lost (expired and maybe taken by another)."""
        return bool(await self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        """Give the lease up (if it is still ours)."""
        await cancel_and_wait(self._keeper)
        self._keeper = None
        await self.redis.eval(_RELEASE, 1, self.key, self.token)

    def keep(self) -> None:
        """Renew the lease in the background, at a third of its time, until released."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.ttl_ms / 3000)
                try:
                    if not await self.renew():
                        return  # lost: the holder finds out when it checks before acting
                except Exception:
                    continue

        if self._keeper is None:
            self._keeper = asyncio.create_task(renew_forever(), name=f"lease:{self.key}")


def fenced_arguments(leases: Sequence[Lease]) -> tuple[list[str], list[str | int]]:
    """The KEYS and ARGV a script that starts with HELD_CHECK takes first, for `leases`."""
    return [lease.key for lease in leases], [len(leases), *(lease.token for lease in leases)]

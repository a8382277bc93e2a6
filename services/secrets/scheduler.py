"""Rotation on schedule. Every replica runs the scheduler; a Redis lease per (secret, due time)
makes exactly one of them act on each due secret, and the domain re-checks the due time in
Vault before acting, so a replica with an old view does nothing.

    devmesh:secrets:due                   zset: secret id -> when it next has work (µs)
    devmesh:secrets:lease:{id}:{due}      SET NX PX: the replica acting on that due time
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from services.runtime.errors import NotFound
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait
from services.secrets.domain import DUE, SecretsDomain
from services.secrets.vault_store import now_us

log = get_logger(__name__)


class RotationScheduler:
    def __init__(self, domain: SecretsDomain, redis: Redis, *, interval: float, lease: float) -> None:
        self._domain = domain
        self._redis = redis
        self._interval = interval
        self._lease_ms = int(lease * 1000)
        self.replica = uuid.uuid4().hex[:12]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="secrets-rotation")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        await self._rebuild()
        while True:
            try:
                await self.tick()
            except Exception as exc:  # Redis or Vault down: try again next tick
                log.warning("secrets.scheduler_failed", error=type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def _rebuild(self) -> None:
        """Re-derive the due index from Vault (the source of truth), e.g. after a Redis loss."""
        try:
            for sid in await self._domain.store.list_ids():
                with contextlib.suppress(NotFound):  # deleted since the listing, or being deleted
                    await self._domain.schedule(await self._domain.store.read(sid))
        except Exception as exc:
            log.warning("secrets.scheduler_rebuild_failed", error=type(exc).__name__)

    async def tick(self) -> int:
        """Act on every secret that is due now (and whose lease this replica wins)."""
        acted = 0
        due = await self._redis.zrangebyscore(DUE, "-inf", now_us(), start=0, num=50, withscores=True)
        for member, score in due:
            sid, due_us = member.decode(), int(score)
            lease = f"devmesh:secrets:lease:{sid}:{due_us}"
            if not await self._redis.set(lease, self.replica, nx=True, px=self._lease_ms):
                continue
            try:
                outcome = await self._domain.run_due(sid, due_us)
            except Exception as exc:
                log.warning("secrets.rotation_failed", secret=sid, error=type(exc).__name__)
                continue
            acted += 1
            log.info("secrets.scheduled", secret=sid, outcome=outcome, replica=self.replica)
        return acted

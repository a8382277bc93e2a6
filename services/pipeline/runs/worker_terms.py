"""What the coordinators tell the workers, so that each value has one setting: the lease of a
running job (DEVMESH_PIPELINE_LEASE_SECONDS) and the artifact caps.

Every replica publishes its terms in one hash (a field per replica, with when it wrote them)
while it runs, and removes them when it stops. A worker takes the smallest of the fresh ones:
the replica with the shortest lease is the first to reclaim a silent worker's job, so that is
the lease a worker must heartbeat for (a rolling change of the setting is safe both ways).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from services.pipeline.runs import keys
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

PUBLISH_S = 5.0
FRESH_S = 30.0  # terms written longer ago are a replica that died without removing them
FORGET_S = 3600.0


@dataclass(frozen=True)
class WorkerTerms:
    lease_s: float
    artifact_bytes: int
    job_artifacts_bytes: int


# Until a coordinator has published its terms (no job is queued before one runs anyway).
DEFAULT = WorkerTerms(lease_s=10.0, artifact_bytes=100 * 1024 * 1024, job_artifacts_bytes=500 * 1024 * 1024)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TermsPublisher:
    """Keeps one replica's terms published while it runs."""

    def __init__(self, redis: Redis, replica: str, terms: WorkerTerms) -> None:
        self.redis = redis
        self.replica = replica
        self.terms = terms
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> None:
        entry = {
            "lease_ms": int(self.terms.lease_s * 1000),
            "artifact_bytes": self.terms.artifact_bytes,
            "job_artifacts_bytes": self.terms.job_artifacts_bytes,
            "at_ms": _now_ms(),
        }
        await self.redis.hset(keys.WORKER_TERMS, self.replica, json.dumps(entry))
        forgotten = [
            name for name, at in (await _entries(self.redis)).items() if _now_ms() - at[1] > FORGET_S * 1000
        ]
        if forgotten:
            await self.redis.hdel(keys.WORKER_TERMS, *forgotten)

    async def start(self) -> None:
        await self.publish()
        self._task = asyncio.create_task(self._forever(), name="pipeline.runs.worker_terms")

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_S)
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away a moment: the terms stay fresh for FRESH_S
                log.warning("pipeline.runs.terms_failed", error=type(exc).__name__)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self.redis.hdel(keys.WORKER_TERMS, self.replica)
        except Exception as exc:  # stopping anyway: the entry goes stale
            log.warning("pipeline.runs.terms_failed", error=type(exc).__name__)


async def _entries(redis: Redis) -> dict[str, tuple[WorkerTerms, int]]:
    found: dict[str, tuple[WorkerTerms, int]] = {}
    for name, raw in (await redis.hgetall(keys.WORKER_TERMS)).items():
        try:
            entry = json.loads(raw)
            terms = WorkerTerms(
                lease_s=max(int(entry["lease_ms"]), 1) / 1000,
                artifact_bytes=max(int(entry["artifact_bytes"]), 0),
                job_artifacts_bytes=max(int(entry["job_artifacts_bytes"]), 0),
            )
            found[name.decode()] = (terms, int(entry["at_ms"]))
        except (ValueError, KeyError, TypeError):
            continue  # not ours to read: ignored
    return found


async def read(redis: Redis) -> WorkerTerms:
    """The smallest of the fresh terms (of any, when none is fresh); DEFAULT without any."""
    entries = await _entries(redis)
    fresh = [terms for terms, at in entries.values() if _now_ms() - at <= FRESH_S * 1000]
    chosen = fresh or [terms for terms, _ in entries.values()]
    if not chosen:
        return DEFAULT
    return WorkerTerms(
        lease_s=min(t.lease_s for t in chosen),
        artifact_bytes=min(t.artifact_bytes for t in chosen),
        job_artifacts_bytes=min(t.job_artifacts_bytes for t in chosen),
    )

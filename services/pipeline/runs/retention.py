"""Retention of finished runs: a sweeper deletes what is past its time.

Every run is indexed by creation time (`runs:by_creation`); a run can only have ended after it
was created, so the sweeper reads the index oldest first up to the shortest retention ago and
looks at those runs alone. A finished run past the log retention loses its log lines (its log
lists and the log entries of its event stream; GetJobLog then answers NOT_FOUND); past the run
retention it goes whole: its artifacts' blobs first, then its Redis keys, so that nothing is
left pointing at a deleted blob for longer than the sweep. Runs that have not finished are
never touched. One replica sweeps at a time (a lease as long as the sweep interval).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from services.pipeline.runs import keys, states
from services.pipeline.runs.artifacts import ArtifactDomain
from services.pipeline.runs.caches import CacheDomain
from services.pipeline.runs.store import now_us
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

BATCH = 200
FAILURE_PAUSE_S = 1.0
EVENTS_BATCH = 1000
LOGS_EXPIRED = "logs_expired"  # a field of the run's hash: "1" once its logs are deleted


@dataclass(frozen=True)
class RetentionSettings:
    run_s: float
    log_s: float
    sweep_s: float


@dataclass
class SweepCounts:
    runs_deleted: int = 0
    logs_deleted: int = 0
    blobs_deleted: int = 0


class RetentionSweeper:
    """Deletes finished runs and their logs past their retention; `start` sweeps periodically."""

    def __init__(
        self,
        redis: Redis,
        artifacts: ArtifactDomain,
        settings: RetentionSettings,
        caches: CacheDomain | None = None,
    ) -> None:
        self.caches = caches  # its entries past their retention or the total cap go in each sweep
        self.redis = redis
        self.artifacts = artifacts
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="pipeline.runs.retention")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _forever(self) -> None:
        token = secrets.token_hex(8)
        while True:
            pause = self.settings.sweep_s
            try:
                lease_ms = max(int(self.settings.sweep_s * 1000), 1)
                if await self.redis.set(keys.RETENTION_LEASE, token, nx=True, px=lease_ms):
                    counts = await self.sweep()
                    if self.caches is not None:
                        await self.caches.sweep()
                    if counts.runs_deleted or counts.logs_deleted:
                        log.info(
                            "pipeline.runs.retention_swept",
                            runs=counts.runs_deleted,
                            logs=counts.logs_deleted,
                            blobs=counts.blobs_deleted,
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away a moment: the next sweep catches up
                log.warning("pipeline.runs.retention_failed", error=type(exc).__name__, detail=str(exc)[:200])
                pause = max(pause, FAILURE_PAUSE_S)
            await asyncio.sleep(pause)

    async def sweep(self) -> SweepCounts:
        """One pass over the runs old enough to have something expired."""
        counts = SweepCounts()
        now = now_us()
        run_us = int(self.settings.run_s * 1_000_000)
        log_us = int(min(self.settings.log_s, self.settings.run_s) * 1_000_000)
        offset = 0
        while True:
            ids = await self.redis.zrangebyscore(
                keys.RUNS_BY_CREATION, "-inf", now - log_us, start=offset, num=BATCH
            )
            if not ids:
                return counts
            for raw_id in ids:
                run_id = raw_id.decode()
                state, ended, logs_gone = await self.redis.hmget(
                    keys.run(run_id), ["state", "et", LOGS_EXPIRED]
                )
                if state is None:  # deleted already (by another sweep that died halfway)
                    counts.blobs_deleted += await self.delete_run(run_id)
                    counts.runs_deleted += 1
                    continue
                age = now - int(ended or 0)
                if state.decode() not in states.RUN_FINAL or not int(ended or 0):
                    offset += 1
                elif age >= run_us:
                    counts.blobs_deleted += await self.delete_run(run_id)
                    counts.runs_deleted += 1
                else:
                    offset += 1
                    if age >= log_us and logs_gone != b"1":
                        await self.delete_logs(run_id)
                        counts.logs_deleted += 1

    async def delete_logs(self, run_id: str) -> None:
        """The run's log lists and the log lines of its event stream; its state changes stay."""
        fields = [k.decode() for k in await self.redis.hkeys(keys.attempts(run_id)) if b"/" not in k]
        if fields:
            await self.redis.delete(*(keys.log(run_id, field) for field in fields))
        stream = keys.events(run_id)
        after = "-"
        while True:
            entries = await self.redis.xrange(stream, after, "+", count=EVENTS_BATCH)
            if not entries:
                break
            logs = [entry_id for entry_id, data in entries if b"l" in data]
            if logs:
                await self.redis.xdel(stream, *logs)
            after = "(" + entries[-1][0].decode()
        await self.redis.hset(keys.run(run_id), LOGS_EXPIRED, "1")

    async def delete_run(self, run_id: str) -> int:
        """Everything of the run: artifacts first, then its keys and its places in the indexes."""
        blobs = await self.artifacts.drop_run(run_id)
        project, pipeline = await self.redis.hmget(keys.run(run_id), ["project", "pipeline"])
        attempt_fields = [k.decode() for k in await self.redis.hkeys(keys.attempts(run_id)) if b"/" not in k]
        job_keys = [k.decode() for k in await self.redis.hkeys(keys.jobs(run_id))]
        doomed = [
            keys.run(run_id),
            keys.jobs(run_id),
            keys.attempts(run_id),
            keys.events(run_id),
            *(keys.log(run_id, field) for field in attempt_fields),
            *(keys.lease(run_id, key) for key in job_keys),
        ]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*doomed)
            if project is not None and pipeline is not None:
                pipe.zrem(keys.pipeline_runs(project.decode(), pipeline.decode()), run_id)
            pipe.zrem(keys.RUNS_BY_CREATION, run_id)
            await pipe.execute()
        return blobs

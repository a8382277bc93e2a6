"""Following the pipeline's failed attempts: each one is diagnosed once, across replicas, and its
diagnosis attached to it (ListDiagnoses by job; the hooks hear of it).

The pipeline appends a `JobFailure` to its failures stream (the contract names it) once per
failed attempt. Every debugger replica reads it in one consumer group, so each entry goes to
one replica; an entry a replica took and did not finish (it died) is taken over by another
after `claim_idle`. The attempt itself is claimed (SET NX, with a lease) before the diagnosis
is made, so an entry delivered twice, or announced twice, is diagnosed once. A failure the
pipeline cannot show now (it is down) is tried again later; one it cannot show at all (the
run is gone) is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import DecodeError

from devmesh.pipeline.v1 import runs_pb2
from services.debugger.diagnosis_store import PENDING
from services.debugger.domain import new_diagnosis_id
from services.debugger.jobs import JobAnalyzer
from services.runtime import protos
from services.runtime.errors import ServiceError, Unavailable
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait, repeat

log = get_logger(__name__)

STREAM = protos.channel_of(runs_pb2.JobFailure)
GROUP = "debuggers"


class FailureFollower:
    """Diagnoses the attempts the pipeline announces as failed; `start` runs it in the background."""

    def __init__(
        self,
        redis: Redis,
        analyzer: JobAnalyzer,
        consumer: str,
        *,
        claim_idle_s: float = 30.0,
        lease_s: int = 300,
        block_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.analyzer = analyzer
        self.consumer = consumer
        self.claim_idle_s = claim_idle_s
        self.lease_s = lease_s
        self.block_ms = block_ms
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.ensure_group()
        self._tasks = [
            asyncio.create_task(self._forever(self.take_new, 0.0), name="debugger.failures.new"),
            asyncio.create_task(
                self._forever(self.take_over, self.claim_idle_s / 2), name="debugger.failures.takeover"
            ),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's end: failures from before the debugger first
        followed them are not diagnosed."""
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _forever(self, step: Callable[[], Awaitable[None]], pause: float) -> None:
        await repeat(step, pause, event="debugger.failures.loop_failed", recover=self._regroup)

    async def _regroup(self, error: Exception) -> None:
        if "NOGROUP" in str(error):
            await self.ensure_group()

    async def take_new(self) -> None:
        found = await self.redis.xreadgroup(
            GROUP, self.consumer, {STREAM: ">"}, count=10, block=self.block_ms
        )
        for _, entries in found or []:
            for entry_id, fields in entries:
                await self.handle(entry_id, fields)

    async def take_over(self) -> None:
        """Entries a replica took and never acknowledged (it died, or the pipeline was down)."""
        result = await self.redis.xautoclaim(
            STREAM, GROUP, self.consumer, int(self.claim_idle_s * 1000), "0-0", count=10
        )
        for entry_id, fields in result[1] if result else []:
            await self.handle(entry_id, fields)

    async def _ack(self, entry_id: Any) -> None:
        await self.redis.xack(STREAM, GROUP, entry_id)

    async def handle(self, entry_id: Any, fields: dict[bytes, bytes] | None) -> None:
        """Diagnose one announced failure, unless it was (or is being) diagnosed."""
        try:
            failure = runs_pb2.JobFailure.FromString((fields or {}).get(b"m", b""))
        except DecodeError:
            failure = runs_pb2.JobFailure()
        if not failure.job or failure.attempt <= 0:
            log.warning("debugger.failures.malformed", entry=str(entry_id))
            await self._ack(entry_id)
            return
        store = self.analyzer.debugger.diagnoses
        diagnosis_id = new_diagnosis_id()
        held = await store.claim_attempt(failure.job, failure.attempt, diagnosis_id, self.lease_s)
        if held is not None:
            if not held.startswith(PENDING):
                await self._ack(entry_id)  # diagnosed already
            # else: another replica is making it; if it dies, this entry comes back later
            return
        try:
            diagnosis = await self.analyzer.diagnose_claimed(failure.job, failure.attempt, diagnosis_id)
        except Unavailable as exc:
            await store.release_attempt(failure.job, failure.attempt, diagnosis_id)
            log.warning("debugger.failures.pipeline_unavailable", job=failure.job, reason=exc.reason)
            return  # not acknowledged: taken over again after claim_idle
        except ServiceError as exc:
            await store.release_attempt(failure.job, failure.attempt, diagnosis_id)
            log.warning(
                "debugger.failures.dropped", job=failure.job, attempt=failure.attempt, reason=exc.reason
            )
            await self._ack(entry_id)
            return
        except Exception:
            await store.release_attempt(failure.job, failure.attempt, diagnosis_id)
            raise
        await self._ack(entry_id)
        log.info(
            "debugger.failures.diagnosed",
            job=failure.job,
            attempt=failure.attempt,
            diagnosis=diagnosis.id,
            category=diagnosis.category.value,
        )

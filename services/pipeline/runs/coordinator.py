"""The coordinator: decides on runs whenever something happened to them, on any replica.

Whatever changes a run (a new run, an attempt that ended, a cancel, an approval, a timer)
adds the run's id to the `work` stream; every replica reads it in one consumer group, so each
entry is decided on by one replica, and the entries of a replica that died are claimed by
another after `claim_idle`. A decision is a pure function of the run's state
(`scheduler.decide`) applied by one script that refuses it if a job it read has changed since
(then it is made again). The coordinator also wakes runs whose timers are due (backoff,
gate expiry, the run's deadline) and reclaims the attempts of workers that stopped
heartbeating (WORKER_LOST).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.pipeline.runs import failures, keys, retries, scheduler, scripts, states
from services.pipeline.runs.records import PENDING, AttemptRecord, JobRecord, attempt_field
from services.pipeline.runs.store import RunRecord, RunStore, block_ms, now_ms, now_us
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait, repeat

log = get_logger(__name__)

MAX_CONFLICTS = 50
# Pops the due timers and asks for a decision on each of their runs.
_TIMERS_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, run in ipairs(due) do
  redis.call('ZREM', KEYS[1], run)
  redis.call('XADD', KEYS[2], '*', 'run', run)
end
return #due
"""


@dataclass(frozen=True)
class CoordinatorSettings:
    lease_s: float = 10.0  # a worker that has not heartbeated for this long is lost
    claim_idle_s: float = 5.0  # a replica's undecided work is taken over after this long
    timer_interval_s: float = 0.1


class Coordinator:
    """Decides on runs; `start` runs its loops in the background."""

    def __init__(
        self,
        redis: Redis,
        settings: CoordinatorSettings,
        classifier: retries.FailureClassifier | None = None,
    ) -> None:
        self.redis = redis
        self.store = RunStore(redis)
        self.settings = settings
        self.classifier = classifier or retries.NoClassifier()
        self.failures = failures.FailureStream(redis)
        self.consumer = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.rng = random.Random()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.ensure_group()
        self._tasks = [
            asyncio.create_task(self._forever(self.take_work, 0.0), name="pipeline.runs.work"),
            asyncio.create_task(
                self._forever(self.fire_timers, self.settings.timer_interval_s), name="pipeline.runs.timers"
            ),
            asyncio.create_task(
                self._forever(self.reclaim, self.settings.lease_s / 2), name="pipeline.runs.reclaim"
            ),
            asyncio.create_task(
                self._forever(self.take_over, self.settings.claim_idle_s / 2), name="pipeline.runs.takeover"
            ),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.WORK, keys.COORDINATORS, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _forever(self, step: Callable[[], Awaitable[None]], pause: float) -> None:
        await repeat(step, pause, event="pipeline.runs.loop_failed", recover=self._regroup)

    async def _regroup(self, error: Exception) -> None:
        if "NOGROUP" in str(error):
            await self.ensure_group()  # Redis lost its data (a restart without AOF)

    async def take_work(self) -> None:
        found = await self.redis.xreadgroup(
            keys.COORDINATORS, self.consumer, {keys.WORK: ">"}, count=500, block=block_ms(self.redis, 1000)
        )
        for _, entries in found or []:
            await self._decide_entries(entries)

    async def take_over(self) -> None:
        """Claim the work of replicas that died before acknowledging it."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        result = await self.redis.xautoclaim(
            keys.WORK, keys.COORDINATORS, self.consumer, idle_ms, "0-0", count=200
        )
        entries = result[1] if result else []
        if entries:
            await self._decide_entries(entries)

    async def _decide_entries(self, entries: list[Any]) -> None:
        ids = [entry_id for entry_id, _ in entries]
        runs = dict.fromkeys(fields[b"run"].decode() for _, fields in entries if fields and b"run" in fields)
        for run_id in runs:
            try:
                await self.decide(run_id)
            except Exception as exc:
                log.warning(
                    "pipeline.runs.decide_failed", run=run_id, error=type(exc).__name__, detail=str(exc)[:200]
                )
                raise
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(keys.WORK, keys.COORDINATORS, *ids)
                pipe.xdel(keys.WORK, *ids)
                await pipe.execute()

    async def fire_timers(self) -> None:
        await self.redis.eval(_TIMERS_DUE, 2, keys.TIMERS, keys.WORK, now_ms())

    async def reclaim(self) -> None:
        """Attempts whose queue entry nobody acknowledged within a lease: lost workers."""
        idle_ms = int(self.settings.lease_s * 1000)
        for raw in await self.redis.smembers(keys.QUEUES):
            queue = keys.queue(raw.decode())
            result = await self.redis.xautoclaim(
                queue, keys.WORKER_GROUP, self.consumer, idle_ms, "0-0", count=100
            )
            for entry_id, fields in result[1] if result else []:
                if not fields:
                    continue
                run_id, key, fence = (fields[f].decode() for f in (b"run", b"job", b"fence"))
                outcome, _ = await self.store.script(
                    scripts.RECLAIM,
                    [
                        keys.jobs(run_id),
                        keys.attempts(run_id),
                        keys.events(run_id),
                        keys.WORK,
                        keys.lease(run_id, key),
                    ],
                    [
                        key,
                        fence,
                        states.FAILED,
                        states.WORKER_LOST,
                        0,
                        "the worker stopped heartbeating",
                        now_us(),
                        run_id,
                    ],
                )
                if outcome == "alive":
                    continue
                async with self.redis.pipeline(transaction=True) as pipe:
                    if outcome == "requeue":
                        pipe.xadd(queue, {"run": run_id, "job": key, "fence": fence})
                    pipe.xack(queue, keys.WORKER_GROUP, entry_id)
                    pipe.xdel(queue, entry_id)
                    await pipe.execute()
                if outcome == "lost":
                    log.info("pipeline.runs.worker_lost", run=run_id, job=key, fence=fence)

    async def decide(self, run_id: str) -> None:
        """Make and apply the decision on one run, again while it conflicts with a change."""
        for _ in range(MAX_CONFLICTS):
            run, raw_jobs = await self.store.run_with_jobs(run_id)
            if run is None or run.state in states.RUN_FINAL:
                return
            if run.state == states.QUEUED:
                if not await self._admit(run, raw_jobs):
                    return
                continue
            jobs = {key: JobRecord.load(raw) for key, raw in raw_jobs.items()}
            await self.failures.announce(run, jobs)
            transient = await self._classify(run, jobs)
            view = scheduler.RunView(
                state=run.state,
                cancel_requested=run.cancel,
                cancel_state=run.cancel_state,
                deadline_ms=run.deadline_ms,
                now_ms=now_ms(),
                scope={"inputs": run.inputs, "event": run.trigger, "branch": run.ref},
            )
            decision = scheduler.decide(run.plan, jobs, view, self.rng, transient)
            if decision.time_out:
                await self.store.redis.hset(
                    keys.run(run_id), mapping={"cancel": "1", "cancel_state": states.TIMED_OUT}
                )
                continue
            if not decision.changes and not decision.run_state and not decision.wake_ms:
                return
            if await self.apply(run, raw_jobs, decision):
                if decision.run_state:
                    log.info("pipeline.runs.ended", run=run_id, state=decision.run_state)
                return
        log.warning("pipeline.runs.decision_conflicts", run=run_id)
        await self.store.nudge(run_id)

    async def _classify(self, run: RunRecord, jobs: dict[str, JobRecord]) -> dict[str, bool]:
        verdicts: dict[str, bool] = {}
        for plan in run.plan.jobs:
            record = jobs.get(plan.key, PENDING)
            if record.d == 0 and retries.wants_classifier(plan.retry, record):
                failure = retries.Failure(
                    run=failures.run_name(run),
                    job=plan.key,
                    attempt=record.n,
                    state=record.s,
                    reason=record.rs,
                    exit_code=record.x,
                    message=record.r,
                )
                try:
                    verdicts[plan.key] = await self.classifier.is_transient(failure)
                except Exception:  # a classifier that fails has no opinion
                    verdicts[plan.key] = False
        return verdicts

    async def _admit(self, run: RunRecord, raw_jobs: dict[str, str]) -> bool:
        """A QUEUED run starts once it heads its concurrency group; a cancelled one ends."""
        if run.cancel:
            decision = scheduler.Decision(run_state=states.CANCELLED)
            for job in run.plan.jobs:
                decision.changes[job.key] = JobRecord(
                    s=states.SKIPPED, r="the run was cancelled before it started"
                )
            return await self.apply(run, raw_jobs, decision, expect=states.QUEUED) and False
        head = await self.redis.lindex(keys.group(run.group), 0) if run.group else run.id.encode()
        if head is None or head.decode() != run.id:
            return False
        return await self._set_run_state(run, states.QUEUED, states.RUNNING)

    async def _set_run_state(self, run: RunRecord, expect: str, state: str) -> bool:
        decision = scheduler.Decision()
        op = self._op(run, {}, decision, expect)
        op["run"] = {"state": state}
        op["events"] = [json.dumps({"k": "", "n": 0, "s": state, "m": ""})]
        return await self._run_apply(run, op, [])

    def _op(
        self, run: RunRecord, raw_jobs: dict[str, str], decision: scheduler.Decision, expect: str
    ) -> dict[str, Any]:
        return {
            "run_state": expect,
            "cas": [[key, raw_jobs.get(key, ""), record.dump()] for key, record in decision.changes.items()],
            "attempts": [],
            "ended": [],
            "run": {},
            "events": [json.dumps(e, separators=(",", ":")) for e in decision.events],
            "timers": [],
            "queues": [],
            "dispatch": [],
            "release": "",
        }

    async def apply(
        self,
        run: RunRecord,
        raw_jobs: dict[str, str],
        decision: scheduler.Decision,
        expect: str = states.RUNNING,
    ) -> bool:
        """Apply `decision` unless a job it read changed meanwhile; False then."""
        op = self._op(run, raw_jobs, decision, expect)
        stamp = now_us()
        by_key = run.plan.by_key()
        queue_names: list[str] = []
        for key in decision.queued:
            record = decision.changes[key]
            labels = keys.labels_of(by_key[key].runs_on)
            if labels not in queue_names:
                queue_names.append(labels)
            index = queue_names.index(labels) + 1
            op["attempts"].append([attempt_field(key, record.n), AttemptRecord(qt=stamp).dump()])
            op["dispatch"].append([index, run.id, key, str(record.f)])
        op["queues"] = [[i + 1, labels] for i, labels in enumerate(queue_names)]
        for key, number, state, message in decision.ended_attempts:
            op["ended"].append(
                [attempt_field(key, number), state, states.CANCELLED_REASON, message, str(stamp)]
            )
        op["timers"] = [[ms, run.id] for ms in sorted(set(decision.wake_ms))[:1]]
        if decision.run_state:
            jobs = {k: JobRecord.load(v) for k, v in raw_jobs.items()} | decision.changes
            op["run"] = {"state": decision.run_state, "et": str(stamp)}
            op["events"].append(
                json.dumps({"k": "", "n": 0, "s": decision.run_state, "m": scheduler.summary(run.plan, jobs)})
            )
            op["release"] = run.id if run.group else ""
        return await self._run_apply(run, op, [keys.queue(labels) for labels in queue_names])

    async def _run_apply(self, run: RunRecord, op: dict[str, Any], queues: list[str]) -> bool:
        result, _ = await self.store.script(
            scripts.APPLY,
            [
                keys.jobs(run.id),
                keys.events(run.id),
                keys.run(run.id),
                keys.TIMERS,
                keys.attempts(run.id),
                keys.WORK,
                keys.QUEUES,
                keys.group(run.group),
                *queues,
            ],
            [json.dumps(op, separators=(",", ":"))],
        )
        return result == "ok"

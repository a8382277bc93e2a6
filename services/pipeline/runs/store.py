"""Redis access for runs: reading a run whole, creating one, the scripts of its transitions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as redis_errors

from services.pipeline.runs import keys, states
from services.pipeline.runs.plan import Plan
from services.pipeline.runs.records import AttemptRecord, JobRecord, attempt_field
from services.runtime.redis_client import Redis

# The first script call loads it; later calls send its SHA (EVALSHA) only.
_SCRIPTS: dict[str, str] = {}


def block_ms(redis: Redis, longest_ms: int) -> int:
    """How long a blocking read (XREAD/XREADGROUP BLOCK) may wait on this client: at most
    half its socket timeout. A block as long as the timeout fails as a read timeout
    (UNAVAILABLE) whenever nothing arrives for that long, a quiet run or an idle worker."""
    timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    return max(1, min(longest_ms, int(float(timeout) * 500))) if timeout else longest_ms


def now_us() -> int:
    return time.time_ns() // 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RunRecord:
    """A run's own fields (its jobs are beside it)."""

    id: str
    project: str
    pipeline: str
    revision: int
    state: str
    plan: Plan
    definition: bytes
    trigger: str = "manual"
    inputs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ref: str = ""
    started_by: str = ""
    group: str = ""
    cancel: bool = False
    cancel_state: str = states.CANCELLED
    reruns: int = 0
    create_time_us: int = 0
    end_time_us: int = 0
    deadline_ms: int = 0

    def fields(self) -> dict[str, str | bytes]:
        return {
            "project": self.project,
            "pipeline": self.pipeline,
            "revision": str(self.revision),
            "state": self.state,
            "plan": json.dumps(self.plan.to_json(), separators=(",", ":")),
            "definition": self.definition,
            "trigger": self.trigger,
            "inputs": json.dumps(self.inputs),
            "source": self.source,
            "ref": self.ref,
            "started_by": self.started_by,
            "group": self.group,
            "cancel": "1" if self.cancel else "0",
            "cancel_state": self.cancel_state,
            "reruns": str(self.reruns),
            "ct": str(self.create_time_us),
            "et": str(self.end_time_us),
            "deadline": str(self.deadline_ms),
        }


# Fields of the run hash other than its plan and definition (large, and never changed).
SMALL_FIELDS = ("project", "pipeline", "revision", "state", "trigger", "inputs", "source", "ref", "started_by",
                "group", "cancel", "cancel_state", "reruns", "ct", "et", "deadline")  # fmt: skip
_PLANS: dict[str, Plan] = {}  # run id -> its plan, which never changes
_MAX_PLANS = 1024


def decode_run(run_id: str, values: list[bytes | None], plan: Plan) -> RunRecord | None:
    """A run from its SMALL_FIELDS values (in order) and its plan; None when it does not exist."""
    if values[0] is None:
        return None
    text = {name: (v.decode() if v is not None else "") for name, v in zip(SMALL_FIELDS, values, strict=True)}
    return RunRecord(
        id=run_id,
        project=text["project"],
        pipeline=text["pipeline"],
        revision=int(text["revision"] or 0),
        state=text["state"],
        plan=plan,
        definition=b"",
        trigger=text["trigger"],
        inputs=json.loads(text["inputs"] or "{}"),
        source=text["source"],
        ref=text["ref"],
        started_by=text["started_by"],
        group=text["group"],
        cancel=text["cancel"] == "1",
        cancel_state=text["cancel_state"] or states.CANCELLED,
        reruns=int(text["reruns"] or 0),
        create_time_us=int(text["ct"] or 0),
        end_time_us=int(text["et"] or 0),
        deadline_ms=int(text["deadline"] or 0),
    )


class RunStore:
    """Runs in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def script(self, source: str, keys_: list[str], args: list[Any]) -> list[str]:
        sha = _SCRIPTS.get(source)
        if sha is None:
            sha = _SCRIPTS[source] = str(await self.redis.script_load(source))
        try:
            result = await self.redis.evalsha(sha, len(keys_), *keys_, *args)
        except redis_errors.NoScriptError:  # Redis restarted (its script cache is not kept): again
            _SCRIPTS[source] = str(await self.redis.script_load(source))
            result = await self.redis.evalsha(_SCRIPTS[source], len(keys_), *keys_, *args)
        return [part.decode() if isinstance(part, bytes) else str(part) for part in result]

    async def plan(self, run_id: str) -> Plan | None:
        """The run's plan (read once per process: it never changes)."""
        found = _PLANS.get(run_id)
        if found is None:
            raw = await self.redis.hget(keys.run(run_id), "plan")
            if raw is None:
                return None
            found = _PLANS[run_id] = Plan.from_json(json.loads(raw))
            if len(_PLANS) > _MAX_PLANS:
                _PLANS.pop(next(iter(_PLANS)))
        return found

    async def run(self, run_id: str) -> RunRecord | None:
        values = await self.redis.hmget(keys.run(run_id), SMALL_FIELDS)
        if values[0] is None:
            return None
        plan = await self.plan(run_id)
        return decode_run(run_id, values, plan) if plan is not None else None

    async def jobs_raw(self, run_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.jobs(run_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def run_with_jobs(self, run_id: str) -> tuple[RunRecord | None, dict[str, str]]:
        """The run and its jobs' raw records, read together (one transaction)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.run(run_id), SMALL_FIELDS)
            pipe.hgetall(keys.jobs(run_id))
            values, jobs_raw = await pipe.execute()
        plan = await self.plan(run_id) if values[0] is not None else None
        record = decode_run(run_id, values, plan) if plan is not None else None
        return record, {k.decode(): v.decode() for k, v in jobs_raw.items()}

    async def attempts(self, run_id: str) -> dict[str, AttemptRecord]:
        raw = await self.redis.hgetall(keys.attempts(run_id))
        return {k.decode(): AttemptRecord.load(v) for k, v in raw.items() if b"/" not in k}

    async def create(self, record: RunRecord, request_key: str | None) -> None:
        """Write a new run: its fields, every job PENDING, its place in the pipeline's list and
        in its concurrency group, and a first decision to make."""
        pending = JobRecord().dump()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.run(record.id), mapping=record.fields())
            pipe.hset(keys.jobs(record.id), mapping={job.key: pending for job in record.plan.jobs})
            pipe.zadd(keys.pipeline_runs(record.project, record.pipeline), {record.id: record.create_time_us})
            pipe.zadd(keys.RUNS_BY_CREATION, {record.id: record.create_time_us})  # for retention
            if record.group:
                pipe.rpush(keys.group(record.group), record.id)
            pipe.xadd(
                keys.events(record.id), {"e": json.dumps({"k": "", "n": 0, "s": record.state, "m": ""})}
            )
            pipe.xadd(keys.WORK, {"run": record.id})
            await pipe.execute()

    async def nudge(self, run_id: str) -> None:
        """Ask a coordinator to decide on the run now."""
        await self.redis.xadd(keys.WORK, {"run": run_id})


def attempt_key(key: str, number: int) -> str:
    return attempt_field(key, number)

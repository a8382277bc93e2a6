"""What the RunService's calls do, in domain terms (the servicer converts protos)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2
from services.pipeline import expressions
from services.pipeline.runs import keys, plan, retention, scheduler, states
from services.pipeline.runs.coordinator import Coordinator
from services.pipeline.runs.records import AttemptRecord, JobRecord, attempt_field
from services.pipeline.runs.store import RunRecord, RunStore, block_ms, now_us
from services.pipeline.store import PipelineStore, revisions_key
from services.runtime import pagination
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.redis_client import DurableWriter

TRIGGERS = ("manual", "push", "pull_request", "schedule")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SOURCE_SCHEMES = ("file://", "https://", "http://", "ssh://", "git://")
REQUEST_TTL_S = 86400
MAX_SOURCE = 4096
MAX_INPUTS_JSON = 64 * 1024
LOG_PAGE_DEFAULT = 1000
LOG_PAGE_MAX = 10000
EVENTS_BLOCK_MS = 500


@dataclass(frozen=True)
class RunView:
    """A run as GetRun shows it."""

    record: RunRecord
    jobs: dict[str, JobRecord]
    attempts: dict[str, AttemptRecord]

    @property
    def summary(self) -> str:
        return scheduler.summary(self.record.plan, self.jobs)


@dataclass(frozen=True)
class LogPage:
    lines: list[str]
    next_token: str
    truncated: bool


def _input_value(spec: model_pb2.Input, value: Any, path: str) -> Any:
    kind = spec.type or model_pb2.INPUT_TYPE_STRING
    if kind == model_pb2.INPUT_TYPE_BOOLEAN and not isinstance(value, bool):
        raise InvalidArgument.for_field(path, "must be true or false")
    if kind == model_pb2.INPUT_TYPE_NUMBER and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise InvalidArgument.for_field(path, "must be a number")
    if kind in (model_pb2.INPUT_TYPE_STRING, model_pb2.INPUT_TYPE_CHOICE) and not isinstance(value, str):
        raise InvalidArgument.for_field(path, "must be a string")
    if kind == model_pb2.INPUT_TYPE_CHOICE and value not in spec.options:
        raise InvalidArgument.for_field(path, f"must be one of {', '.join(spec.options)}")
    return value


def checked_inputs(definition: model_pb2.PipelineDefinition, given: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of the run: `given` checked against the manual triggers' inputs, with defaults."""
    specs: dict[str, model_pb2.Input] = {}
    for trigger in definition.triggers:
        if trigger.HasField("manual"):
            specs.update({i.name: i for i in trigger.manual.inputs})
    unknown = [name for name in given if name not in specs]
    if unknown:
        raise InvalidArgument.for_field(f"inputs.{unknown[0][:64]}", "the pipeline declares no such input")
    found: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given:
            found[name] = _input_value(spec, given[name], f"inputs.{name}")
        elif spec.HasField("default_value"):
            found[name] = json.loads(json.dumps(_value(spec.default_value)))
        elif spec.required:
            raise InvalidArgument.for_field(f"inputs.{name}", "is required")
    return found


def _value(value: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(value)


def _source(source: str) -> str:
    if len(source) > MAX_SOURCE or "\x00" in source:
        raise InvalidArgument.for_field("source", f"at most {MAX_SOURCE} characters, no NUL")
    if source and not (source.startswith("/") or source.startswith(_SOURCE_SCHEMES)):
        raise InvalidArgument.for_field("source", "an absolute path or a git URL (file, https, ssh, git)")
    return source


class RunDomain:
    """Runs: start, read, follow, cancel, re-run, approve."""

    def __init__(self, coordinator: Coordinator, pipelines: PipelineStore, durable: DurableWriter) -> None:
        self.coordinator = coordinator
        self.store: RunStore = coordinator.store
        self.redis = coordinator.redis
        self.pipelines = pipelines
        self.durable = durable

    async def _definition(
        self, project: str, pipeline: str, revision: int
    ) -> tuple[int, model_pb2.PipelineDefinition]:
        record = await self.pipelines.get_pipeline(project, pipeline)
        if record is None:
            raise NotFound(
                f"pipeline {pipeline!r} not found",
                resource_type="pipeline",
                resource_name=f"projects/{project}/pipelines/{pipeline}",
            )
        if revision <= 0 or revision == record.revision:
            return record.revision, model_pb2.PipelineDefinition.FromString(record.definition)
        raw = await self.redis.hget(revisions_key(project, pipeline), str(revision))
        if raw is None:
            raise NotFound(
                f"revision {revision} not found", resource_type="revision", resource_name=str(revision)
            )
        return revision, pipeline_pb2.PipelineRevision.FromString(raw).definition

    async def run_pipeline(
        self,
        project: str,
        pipeline: str,
        *,
        revision: int,
        source: str,
        ref: str,
        inputs: Mapping[str, Any],
        trigger: str,
        request_id: str,
        started_by: str,
    ) -> str:
        """Start a run; the run's id (the first run's, for a request id seen before)."""
        trigger = trigger or "manual"
        if trigger not in TRIGGERS:
            raise InvalidArgument.for_field("trigger", f"one of {', '.join(TRIGGERS)}")
        if request_id and not _REQUEST_ID.fullmatch(request_id):
            raise InvalidArgument.for_field("request_id", "1-64 characters [A-Za-z0-9_-]")
        if len(ref) > 256 or ref.startswith("-") or "\x00" in ref:
            raise InvalidArgument.for_field("ref", "at most 256 characters, not starting with '-'")
        source = _source(source)
        if len(json.dumps(dict(inputs))) > MAX_INPUTS_JSON:
            raise InvalidArgument.for_field("inputs", f"at most {MAX_INPUTS_JSON} bytes as JSON")
        number, definition = await self._definition(project, pipeline, revision)
        values = checked_inputs(definition, inputs)
        run_id = f"r{uuid.uuid4().hex[:16]}"
        request_key = keys.request(f"{project}/{pipeline}/{request_id}") if request_id else None
        if request_key is not None and not await self.redis.set(
            request_key, run_id, nx=True, ex=REQUEST_TTL_S
        ):
            earlier = await self.redis.get(request_key)
            if earlier is not None:
                run_id = str(earlier.decode())  # the same request again: the run it started
                if await self.redis.exists(keys.run(run_id)):
                    return run_id
                # its first call died before creating the run: create it now, with that id
        the_plan = plan.build(definition)
        group = the_plan.concurrency_group
        for placeholder in expressions.placeholders(group):
            group = group.replace(placeholder.text, str(values.get(placeholder.name, "")))
        created = now_us()
        record = RunRecord(
            id=run_id,
            project=project,
            pipeline=pipeline,
            revision=number,
            state=states.QUEUED if group else states.RUNNING,
            plan=the_plan,
            definition=definition.SerializeToString(),
            trigger=trigger,
            inputs=values,
            source=source,
            ref=ref,
            started_by=started_by,
            group=f"{project}/{group}" if group else "",
            create_time_us=created,
            deadline_ms=created // 1000 + int(the_plan.timeout_s * 1000) if the_plan.timeout_s else 0,
        )
        await self.store.create(record, request_key)
        if group and the_plan.cancel_in_progress:
            for older in await self.redis.lrange(keys.group(record.group), 0, -1):
                if older.decode() != run_id:
                    await self._request_cancel(older.decode())
        await self.durable.confirm()
        return run_id

    async def view(self, run_id: str, name: str) -> RunView:
        record, raw_jobs = await self.store.run_with_jobs(run_id)
        if record is None:
            raise NotFound(f"run {run_id!r} not found", resource_type="run", resource_name=name)
        jobs = {key: JobRecord.load(raw) for key, raw in raw_jobs.items()}
        return RunView(record, jobs, await self.store.attempts(run_id))

    async def run_of(self, project: str, pipeline: str, run_id: str, name: str) -> RunRecord:
        record = await self.store.run(run_id)
        if record is None or record.project != project or record.pipeline != pipeline:
            raise NotFound(f"run {run_id!r} not found", resource_type="run", resource_name=name)
        return record

    async def list_runs(
        self, project: str, pipeline: str, page_size: int, token: str, state: str, trigger: str
    ) -> tuple[list[RunRecord], str]:
        size = pagination.page_size(page_size, default=50, maximum=500)
        query = ("runs", project, pipeline, state, trigger)
        cursor = pagination.decode_token(token, query) if token else None
        offset = int(cursor) if cursor else 0
        index = keys.pipeline_runs(project, pipeline)
        found: list[RunRecord] = []
        scanned = 0
        while len(found) < size and scanned < 10 * size + 100:
            ids = await self.redis.zrevrange(index, offset, offset + size - 1)
            if not ids:
                return found, ""
            for raw_id in ids:
                offset += 1
                scanned += 1
                record = await self.store.run(raw_id.decode())
                if (
                    record is None
                    or (state and record.state != state)
                    or (trigger and record.trigger != trigger)
                ):
                    continue
                found.append(record)
                if len(found) == size:
                    break
        more = await self.redis.zcard(index) > offset
        return found, pagination.encode_token(str(offset), query) if more else ""

    async def _request_cancel(self, run_id: str) -> None:
        await self.redis.hset(keys.run(run_id), "cancel", "1")
        await self.store.nudge(run_id)

    async def cancel(self, run: RunRecord) -> None:
        if run.state in states.RUN_FINAL:
            return
        await self._request_cancel(run.id)
        await self.durable.confirm()

    async def rerun(self, run: RunRecord, failed_only: bool) -> None:
        if run.state not in states.RUN_FINAL:
            raise FailedPrecondition("the run has not finished", reason="RUN_NOT_FINISHED")
        raw_jobs = await self.store.jobs_raw(run.id)
        jobs = {key: JobRecord.load(raw) for key, raw in raw_jobs.items()}
        if failed_only:
            again = {k for k, r in jobs.items() if r.s in states.FAILURES or r.s == states.CANCELLED}
            again -= {p.key for p in run.plan.jobs if p.finally_job}
            if not again:
                raise FailedPrecondition("no job of the run failed", reason="NOTHING_FAILED")
            grew = True
            while grew:  # and everything that depends on them
                grew = False
                for job in run.plan.jobs:
                    if job.key not in again and any(n in again for n in job.needs):
                        again.add(job.key)
                        grew = True
            again |= {p.key for p in run.plan.jobs if p.finally_job}
        else:
            again = {p.key for p in run.plan.jobs}
        decision = scheduler.Decision()
        for key in again:
            decision.changes[key] = jobs.get(key, JobRecord()).but(
                s=states.PENDING, r="", d=1, c=0, ap=0, due=0
            )
        op = self.coordinator._op(run, raw_jobs, decision, run.state)
        state = states.QUEUED if run.group else states.RUNNING
        op["run"] = {
            "state": state,
            "cancel": "0",
            "cancel_state": states.CANCELLED,
            "et": "0",
            "reruns": str(run.reruns + 1),
        }
        op["events"].append(json.dumps({"k": "", "n": 0, "s": state, "m": "re-run"}))
        if not await self.coordinator._run_apply(run, op, []):
            raise FailedPrecondition("the run changed meanwhile; try again", reason="RUN_CHANGED")
        if run.group:
            await self.redis.rpush(keys.group(run.group), run.id)
        await self.store.nudge(run.id)
        await self.durable.confirm()

    async def _gate(self, run: RunRecord, key: str) -> tuple[plan.JobPlan, JobRecord, str]:
        job = run.plan.by_key().get(key)
        if job is None:
            raise NotFound(f"job {key[:64]!r} not found", resource_type="job", resource_name=key[:64])
        raw = (await self.store.jobs_raw(run.id)).get(key, "")
        record = JobRecord.load(raw)
        if record.s != states.WAITING_FOR_APPROVAL or record.ap:
            raise FailedPrecondition(
                f"job {key} does not wait for approval (it is {record.s})", reason="NOT_WAITING_FOR_APPROVAL"
            )
        return job, record, raw

    async def _decide_gate(self, run: RunRecord, key: str, raw: str, record: JobRecord) -> None:
        decision = scheduler.Decision(changes={key: record})
        if record.s == states.REJECTED:
            decision.events.append({"k": key, "n": record.n, "s": record.s, "m": record.r})
        if not await self.coordinator._run_apply(
            run, self.coordinator._op(run, {key: raw}, decision, states.RUNNING), []
        ):
            raise FailedPrecondition("the job changed meanwhile; try again", reason="JOB_CHANGED")
        await self.store.nudge(run.id)
        await self.durable.confirm()

    def _reviewer(self, job: plan.JobPlan, caller: str) -> None:
        assert job.gate is not None
        if job.gate.reviewers and caller not in job.gate.reviewers:
            raise PermissionDenied(
                f"{caller} is not a reviewer of the {job.gate.environment} gate", reason="NOT_A_REVIEWER"
            )

    async def approve(self, run: RunRecord, key: str, caller: str, comment: str) -> None:
        job, record, raw = await self._gate(run, key)
        assert job.gate is not None
        self._reviewer(job, caller)
        if job.gate.prevent_self_approval and caller == run.started_by:
            raise PermissionDenied("the run's starter may not approve its own gate", reason="SELF_APPROVAL")
        await self._decide_gate(run, key, raw, record.but(ap=1, r=f"approved by {caller}"))

    async def reject(self, run: RunRecord, key: str, caller: str, comment: str) -> None:
        job, record, raw = await self._gate(run, key)
        self._reviewer(job, caller)
        why = f"rejected by {caller}" + (f": {comment[:200]}" if comment else "")
        await self._decide_gate(run, key, raw, record.but(s=states.REJECTED, r=why, d=1))

    async def events(
        self, run_id: str, after: str, skip_logs: bool
    ) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
        """The run's events after `after`, then live ones, until the run has ended and all are out."""
        stream = keys.events(run_id)
        last = after or "0-0"
        while True:
            state = await self.redis.hget(keys.run(run_id), "state")
            ended = state is not None and state.decode() in states.RUN_FINAL
            # Well under the client's timeout (DEVMESH_REDIS_TIMEOUT, 2 s): a block as long as it
            # failed a quiet stream with UNAVAILABLE after 2 s without an event.
            found = await self.redis.xread(
                {stream: last}, count=500, block=None if ended else block_ms(self.redis, EVENTS_BLOCK_MS)
            )
            entries = found[0][1] if found else []
            for entry_id, fields in entries:
                last = entry_id.decode()
                if skip_logs and b"l" in fields:
                    continue
                yield last, fields
            if ended and not entries:
                return

    async def log_page(
        self, run: RunRecord, key: str, number: int, page_size: int, token: str, name: str
    ) -> LogPage:
        field = attempt_field(key, number)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.attempts(run.id), field)
            pipe.hget(keys.attempts(run.id), f"{field}/trunc")
            pipe.hget(keys.run(run.id), retention.LOGS_EXPIRED)
            raw, trunc, expired = await pipe.execute()
        if expired == b"1":
            raise NotFound(
                f"the log of attempt {number} of job {key[:64]!r} has expired (log retention)",
                resource_type="log",
                resource_name=name,
                reason="LOG_EXPIRED",
            )
        if raw is None:
            raise NotFound(
                f"attempt {number} of job {key[:64]!r} not found", resource_type="attempt", resource_name=name
            )
        attempt = AttemptRecord.load(raw)
        size = pagination.page_size(page_size, default=LOG_PAGE_DEFAULT, maximum=LOG_PAGE_MAX)
        query = ("log", run.id, field)
        offset = int(pagination.decode_token(token, query) or 0) if token else 0
        lines = await self.redis.lrange(keys.log(run.id, field), offset, offset + size - 1)
        offset += len(lines)
        finished = attempt.state in states.ATTEMPT_ENDS
        total = await self.redis.llen(keys.log(run.id, field))
        more = offset < total or not finished
        return LogPage(
            lines=[line.decode(errors="replace") for line in lines],
            next_token=pagination.encode_token(str(offset), query) if more else "",
            truncated=trunc == b"1",
        )

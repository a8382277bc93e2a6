"""The secrets a job's environment refers to, read for the worker that runs its current attempt,
as the run's pipeline: principal `pipelines/<project>/<pipeline>`, which the secrets service's
access policies bind like any other (a binding naming it, or `*`; no role reaches it).

Only the running attempt's worker gets values: the attempt must be the job's current one,
RUNNING, under the fencing token the worker was given. A stale worker gets nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf import struct_pb2

from devmesh.pipeline.v1 import model_pb2
from services.pipeline import names
from services.pipeline.runs import keys, states
from services.pipeline.runs.records import JobRecord
from services.pipeline.runs.service import RunDomain
from services.pipeline.validation import SECRET_KEY
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_FENCE_DIGITS = 20
UNREADABLE = "SECRETS_UNAVAILABLE"  # no secrets service to ask


def principal(project: str, pipeline: str) -> str:
    """The principal a pipeline's jobs read secrets as."""
    return f"pipelines/{project}/{pipeline}"


def reference_of(value: struct_pb2.Value) -> str:
    """The reference of a `{"$secret": "..."}` value; "" for any other value."""
    if value.WhichOneof("kind") != "struct_value":
        return ""
    found = value.struct_value.fields.get(SECRET_KEY)
    return found.string_value if found is not None else ""


def references(envs: Iterable[Mapping[str, struct_pb2.Value]]) -> list[str]:
    """Every secret reference in `envs`, once each, sorted."""
    return sorted({ref for env in envs for value in env.values() if (ref := reference_of(value))})


def job_envs(
    definition: model_pb2.PipelineDefinition, job: model_pb2.Job
) -> list[Mapping[str, struct_pb2.Value]]:
    """The environments a job's steps see: the pipeline's, the job's and each step's."""
    return [definition.env, job.env, *(step.env for step in job.steps)]


class SecretReader(Protocol):
    async def read(self, principal: str, reference: str) -> tuple[str | None, str]:
        """(value, "") or (None, reason)."""
        ...


@dataclass(frozen=True)
class Resolved:
    values: dict[str, str] = field(default_factory=dict)
    unresolved: list[tuple[str, str]] = field(default_factory=list)  # (reference, reason)


class JobSecrets:
    def __init__(self, runs: RunDomain, reader: SecretReader | None) -> None:
        self.runs = runs
        self.reader = reader

    async def resolve(self, name: str, fence: str) -> Resolved:
        project, pipeline, run_id, key, number = names.ATTEMPT.parse(name)
        if not fence.isdigit() or len(fence) > MAX_FENCE_DIGITS:
            raise InvalidArgument.for_field("fence", "the attempt's fencing token (digits)")
        run = await self.runs.run_of(project, pipeline, run_id, name)
        job_plan = run.plan.by_key().get(key)
        raw = await self.runs.redis.hget(keys.jobs(run_id), key)
        if job_plan is None or raw is None:
            raise NotFound(f"job {key!r} not found", resource_type="job", resource_name=name)
        record = JobRecord.load(raw)
        if str(record.f) != fence or record.s != states.RUNNING or str(record.n) != number:
            raise FailedPrecondition(
                f"attempt {number} of job {key!r} is not the running attempt of this fencing token",
                reason="STALE_ATTEMPT",
            )
        raw_definition = await self.runs.redis.hget(keys.run(run_id), "definition")
        definition = model_pb2.PipelineDefinition.FromString(raw_definition or b"")
        job = next((j for j in [*definition.jobs, *definition.finally_jobs] if j.id == job_plan.job_id), None)
        if job is None:
            raise NotFound(f"job {key!r} not found", resource_type="job", resource_name=name)
        wanted = references(job_envs(definition, job))
        if not wanted:
            return Resolved()
        if self.reader is None:
            return Resolved(unresolved=[(ref, UNREADABLE) for ref in wanted])
        reader = self.reader
        who = principal(project, pipeline)
        results = await asyncio.gather(*(reader.read(who, ref) for ref in wanted))
        resolved = Resolved()
        for ref, (value, reason) in zip(wanted, results, strict=True):
            if value is None:
                resolved.unresolved.append((ref, reason))
            else:
                resolved.values[ref] = value
        return resolved

"""A run's plan: the pipeline definition expanded into the jobs a run schedules (one per matrix
combination), each with what the scheduler needs to know about it, as plain data that is
stored with the run (JSON) so that every replica and worker reads the same plan."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from devmesh.pipeline.v1 import model_pb2
from services.pipeline.validation import duration_seconds

DEFAULT_JOB_TIMEOUT_S = 3600.0
WHEN_NAMES = {
    model_pb2.WHEN_UNSPECIFIED: "on_success",
    model_pb2.WHEN_ON_SUCCESS: "on_success",
    model_pb2.WHEN_ON_FAILURE: "on_failure",
    model_pb2.WHEN_ALWAYS: "always",
}


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again, and after how long."""

    limit: int = 0  # attempts after the first
    initial_s: float = 0.0
    factor: float = 2.0
    max_s: float = 3600.0
    any_failure: bool = False  # `on` unset: every failure is worth a retry
    exit_codes: tuple[int, ...] = ()
    timeout: bool = False
    infrastructure: bool = False
    transient: bool = False  # ask the failure classifier


@dataclass(frozen=True)
class Gate:
    """A manual approval before the job starts."""

    environment: str
    reviewers: tuple[str, ...] = ()
    prevent_self_approval: bool = False
    timeout_s: float = 0.0  # 0: no expiry of its own


@dataclass(frozen=True)
class JobPlan:
    """One job of a run, as scheduled."""

    key: str  # `id`, or `id.<index>` for a matrix combination
    job_id: str
    index: int  # the job's position in the definition (jobs, then finally_jobs)
    finally_job: bool = False
    matrix: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # keys
    when: str = "on_success"
    expression: str = ""
    runs_on: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    retry: RetryPolicy = RetryPolicy()
    gate: Gate | None = None
    allow_failure: bool = False
    max_parallel: int = 0  # among the combinations of its matrix
    fail_fast: bool = True


@dataclass(frozen=True)
class Plan:
    jobs: tuple[JobPlan, ...]
    timeout_s: float = 0.0  # the run's; 0: none
    concurrency_group: str = ""  # before placeholders
    cancel_in_progress: bool = False

    def by_key(self) -> dict[str, JobPlan]:
        """Its jobs by key (built once: the coordinator asks on every decision)."""
        found: dict[str, JobPlan] | None = self.__dict__.get("_by_key")
        if found is None:
            found = {job.key: job for job in self.jobs}
            object.__setattr__(self, "_by_key", found)
        return found

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        jobs = []
        for raw in data["jobs"]:
            raw = dict(raw)
            raw["retry"] = RetryPolicy(**{**raw["retry"], "exit_codes": tuple(raw["retry"]["exit_codes"])})
            gate = raw.get("gate")
            raw["gate"] = Gate(**{**gate, "reviewers": tuple(gate["reviewers"])}) if gate else None
            raw["needs"] = tuple(raw["needs"])
            raw["runs_on"] = tuple(raw["runs_on"])
            jobs.append(JobPlan(**raw))
        return cls(
            jobs=tuple(jobs),
            timeout_s=data["timeout_s"],
            concurrency_group=data["concurrency_group"],
            cancel_in_progress=data["cancel_in_progress"],
        )


def combinations(matrix: model_pb2.Matrix) -> list[dict[str, str]]:
    """The matrix's combinations in order: the product of the axes without the excluded ones,
    then the includes that are not already there."""
    names = [axis.name for axis in matrix.axes]
    values = [list(dict.fromkeys(axis.values)) for axis in matrix.axes]
    found = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)] if names else []
    found = [
        combo
        for combo in found
        if not any(
            ex.values and all(combo.get(k) == v for k, v in ex.values.items()) for ex in matrix.exclude
        )
    ]
    for extra in matrix.include:
        if dict(extra.values) not in found:
            found.append(dict(extra.values))
    return found


def _retry(retry: model_pb2.Retry | None) -> RetryPolicy:
    if retry is None or retry.limit <= 0:
        return RetryPolicy()
    backoff = retry.backoff
    on = retry.on
    declared = retry.HasField("on")
    return RetryPolicy(
        limit=retry.limit,
        initial_s=(duration_seconds(backoff.initial) or 0.0) if retry.HasField("backoff") else 0.0,
        factor=backoff.factor or 2.0,
        max_s=(duration_seconds(backoff.max) or 3600.0) if backoff.HasField("max") else 3600.0,
        any_failure=not declared,
        exit_codes=tuple(on.exit_codes),
        timeout=on.timeout,
        infrastructure=on.infrastructure,
        transient=on.transient,
    )


def _gate(job: model_pb2.Job) -> Gate | None:
    if not job.HasField("approval"):
        return None
    approval = job.approval
    return Gate(
        environment=approval.environment,
        reviewers=tuple(approval.reviewers),
        prevent_self_approval=approval.prevent_self_approval,
        timeout_s=duration_seconds(approval.timeout) or 0.0 if approval.HasField("timeout") else 0.0,
    )


def _expand(job: model_pb2.Job, index: int, finally_job: bool) -> list[JobPlan]:
    combos = combinations(job.matrix) if job.HasField("matrix") else [{}]
    fail_fast = job.matrix.fail_fast if job.matrix.HasField("fail_fast") else True
    common: dict[str, Any] = {
        "job_id": job.id,
        "index": index,
        "finally_job": finally_job,
        "when": WHEN_NAMES.get(job.condition.when, "on_success"),
        "expression": job.condition.expression,
        "runs_on": tuple(sorted(set(job.runs_on))),
        "timeout_s": duration_seconds(job.timeout) or DEFAULT_JOB_TIMEOUT_S
        if job.HasField("timeout")
        else DEFAULT_JOB_TIMEOUT_S,
        "retry": _retry(job.retry if job.HasField("retry") else None),
        "gate": _gate(job),
        "allow_failure": job.allow_failure,
        "max_parallel": job.matrix.max_parallel if job.HasField("matrix") else 0,
        "fail_fast": fail_fast,
    }
    if not job.HasField("matrix"):
        return [JobPlan(key=job.id, **common)]
    return [JobPlan(key=f"{job.id}.{i}", matrix=combo, **common) for i, combo in enumerate(combos)]


def build(definition: model_pb2.PipelineDefinition) -> Plan:
    """The plan of a (validated) definition."""
    expanded: dict[str, list[JobPlan]] = {}
    order: list[tuple[model_pb2.Job, int, bool]] = [
        *((job, i, False) for i, job in enumerate(definition.jobs)),
        *((job, len(definition.jobs) + i, True) for i, job in enumerate(definition.finally_jobs)),
    ]
    for job, index, finally_job in order:
        expanded[job.id] = _expand(job, index, finally_job)
    jobs: list[JobPlan] = []
    for job, _, _ in order:
        needs = tuple(plan.key for need in job.needs for plan in expanded.get(need, []))
        jobs.extend(
            JobPlan(**{**asdict(p), "needs": needs, "retry": p.retry, "gate": p.gate})
            for p in expanded[job.id]
        )
    return Plan(
        jobs=tuple(jobs),
        timeout_s=duration_seconds(definition.timeout) or 0.0 if definition.HasField("timeout") else 0.0,
        concurrency_group=definition.concurrency.group if definition.HasField("concurrency") else "",
        cancel_in_progress=definition.HasField("concurrency")
        and definition.concurrency.mode == model_pb2.CONCURRENCY_MODE_CANCEL_IN_PROGRESS,
    )

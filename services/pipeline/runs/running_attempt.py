"""The check a worker-only call makes before it takes anything: the attempt it names is its
job's running attempt under the fencing token the worker was given (a worker that comes back
late, or a stale attempt, changes nothing)."""

from __future__ import annotations

from services.pipeline.runs import states
from services.pipeline.runs.records import JobRecord
from services.pipeline.runs.store import RunRecord, RunStore
from services.runtime.errors import FailedPrecondition, NotFound, PreconditionViolation


async def check_running(
    runs: RunStore, run: RunRecord, job: str, attempt: int, fence: str, *, only: str
) -> None:
    """NOT_FOUND for a job the run has not; FAILED_PRECONDITION `ATTEMPT_NOT_RUNNING` unless
    `attempt` of `job` is running under `fence` (`only`: what only the running attempt does)."""
    if job not in run.plan.by_key():
        raise NotFound(f"job {job!r} not found", resource_type="job", resource_name=job)
    raw = (await runs.jobs_raw(run.id)).get(job)
    record = JobRecord.load(raw)
    if raw is None or record.s != states.RUNNING or str(record.f) != fence or record.n != attempt:
        raise FailedPrecondition(
            f"attempt {attempt} of job {job} is not the job's running attempt",
            [PreconditionViolation("ATTEMPT_NOT_RUNNING", job, f"only the running attempt {only}")],
            reason="ATTEMPT_NOT_RUNNING",
        )

"""Diagnosing a pipeline job's attempt from what the pipeline service knows of it: its log, its
attempts, its run's commit, and earlier runs of the pipeline on that commit.

The pipeline is read through a `JobSource` (`pipeline_client.PipelineJobs` over gRPC), with
credentials the caller chose: the caller's own, forwarded, or none (the debugger itself).
The pipeline's own facts decide the category when it has them (a lost worker, a timeout); the
log decides otherwise. An attempt that printed nothing is diagnosed from its outcome line
alone (line 1 is then that line, not a log line).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from services.debugger.diagnosis import Context, Diagnosis, PreviousAttempt
from services.debugger.diagnosis_hooks import JOB, NewDiagnosis
from services.debugger.diagnosis_store import PENDING
from services.debugger.domain import DEFAULT_TEMPLATE_SET, Debugger, LogOptions, new_diagnosis_id
from services.debugger.taxonomy import TRANSIENT, Category, remediations
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.resource_names import IdRule, ResourceName

JOB_KEY = IdRule(r"[a-z][a-z0-9_-]{0,62}(\.[0-9]{1,3})?", "a job id, and `.<n>` for a matrix combination")
JOB_NAME = ResourceName("projects/{project}/pipelines/{pipeline}/runs/{run}/jobs/{job}", {"job": JOB_KEY})
FAILED_STATES = frozenset({"FAILED", "TIMED_OUT"})
MAX_ATTEMPT = 1_000_000
Credentials = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job, as the pipeline reports it."""

    number: int
    name: str  # its resource name (`.../jobs/{job}/attempts/{n}`)
    state: str  # the JobState name without its prefix: FAILED, TIMED_OUT, SUCCEEDED, RUNNING...
    reason: str  # the AttemptReason name without its prefix: EXIT_CODE, TIMEOUT, WORKER_LOST...
    exit_code: int
    message: str


@dataclass(frozen=True)
class JobView:
    """A job of a run, with its attempts and its run's commit."""

    name: str
    run: str
    pipeline: str
    key: str
    commit: str
    attempts: tuple[Attempt, ...]


class JobSource(Protocol):
    """Reads jobs from the pipeline service."""

    async def job(self, name: str, credentials: Credentials) -> JobView:
        """The job (NOT_FOUND for an unknown run or job)."""
        ...

    def log(self, attempt: Attempt, credentials: Credentials) -> AsyncGenerator[list[str], None]:
        """The attempt's log lines, page after page, to the end."""
        ...

    async def earlier_runs(self, job: JobView, credentials: Credentials) -> tuple[PreviousAttempt, ...]:
        """How the same job ended in earlier runs of the pipeline on the same commit."""
        ...


def parse_job(name: str, field: str = "job") -> str:
    """`name` if it is a job's resource name, else INVALID_ARGUMENT naming `field`."""
    JOB_NAME.parse(name, field)
    return name


def pick_attempt(job: JobView, number: int) -> Attempt:
    """The attempt `number` (0: the latest), which must have failed."""
    if number < 0 or number > MAX_ATTEMPT:
        raise InvalidArgument.for_field("attempt", f"an attempt number from 1 (0: the latest), not {number}")
    if not job.attempts:
        raise FailedPrecondition(
            f"{job.name} has not run yet", reason="JOB_NOT_FAILED", metadata={"job": job.name}
        )
    found = job.attempts[-1] if number == 0 else next((a for a in job.attempts if a.number == number), None)
    if found is None:
        raise NotFound(
            f"{job.name} has no attempt {number}",
            resource_type="pipeline.devmesh.io/Attempt",
            resource_name=f"{job.name}/attempts/{number}",
        )
    if found.state not in FAILED_STATES:
        raise FailedPrecondition(
            f"attempt {found.number} of {job.name} did not fail (it is {found.state})",
            reason="JOB_NOT_FAILED",
            metadata={"job": job.name, "attempt": str(found.number), "state": found.state},
        )
    return found


def outcome_line(attempt: Attempt) -> str:
    """The attempt's outcome as one line (evidence beside the log)."""
    reason = attempt.reason.lower().replace("_", " ") or "no reason"
    return f"attempt {attempt.number} ended {attempt.state.lower()} ({reason}, exit {attempt.exit_code}): {attempt.message}"


def known_category(attempt: Attempt) -> Category | None:
    """The category the pipeline's facts decide, when they do."""
    if attempt.reason == "WORKER_LOST":
        return Category.WORKER_LOST
    if attempt.state == "TIMED_OUT" or attempt.reason == "TIMEOUT":
        return Category.TIMEOUT
    return None


def _refined(attempt: Attempt) -> tuple[list[str] | None, Callable[[Diagnosis], Diagnosis]]:
    category = known_category(attempt)

    def refine(diagnosis: Diagnosis) -> Diagnosis:
        changed = replace(diagnosis, attempt=attempt.number)
        if category is None or diagnosis.category is category:
            return changed
        return replace(
            changed,
            category=category,
            confidence=max(diagnosis.confidence, 0.95),
            transient=category in TRANSIENT,
            remediations=remediations(category),
        )

    return ([outcome_line(attempt)] if category is not None else None), refine


class JobAnalyzer:
    """AnalyzeJob, and the automatic diagnosis of failed attempts.

    An attempt has one diagnosis of its own, made once: by the first AnalyzeJob of it or by a
    replica following the pipeline's failures, whichever claims it first (the other waits
    for it and answers with it). `fresh` asks for a new one anyway (feedback given since
    applies to it); it is stored with the job too, but is not the attempt's own."""

    def __init__(
        self, debugger: Debugger, source: JobSource, *, lease_s: int = 300, wait_s: float = 30.0
    ) -> None:
        self.debugger = debugger
        self.source = source
        self.lease_s = lease_s
        self.wait_s = wait_s

    async def analyze(
        self, name: str, attempt_number: int, credentials: Credentials, *, fresh: bool = False
    ) -> Diagnosis:
        """The diagnosis of the job's attempt (0: its latest), read with `credentials`."""
        job = await self.source.job(parse_job(name), credentials)
        attempt = pick_attempt(job, attempt_number)
        if fresh:
            return await self._make(job, attempt, credentials, new_diagnosis_id(), claimed=False)
        store = self.debugger.diagnoses
        diagnosis_id = new_diagnosis_id()
        held = await store.claim_attempt(job.name, attempt.number, diagnosis_id, self.lease_s)
        if held is None:
            return await self._claimed(job, attempt, credentials, diagnosis_id, automatic=False)
        existing = await self._wait_for(job.name, attempt.number, held)
        if existing is None:  # the replica making it is slow or gone: make one anyway
            return await self._make(job, attempt, credentials, diagnosis_id, claimed=False)
        if credentials:
            # The caller reads the log through the diagnosis: the pipeline must let it read the
            # log itself (a caller without credentials was checked for `pipeline.logs.get`).
            pages = self.source.log(attempt, credentials)
            async for _ in pages:
                break
            await pages.aclose()
        return existing

    async def diagnose_claimed(self, name: str, attempt_number: int, diagnosis_id: str) -> Diagnosis:
        """The attempt's own diagnosis, as `diagnosis_id`, which the caller claimed for it; read
        as the debugger itself (the automatic diagnosis)."""
        job = await self.source.job(parse_job(name), ())
        attempt = pick_attempt(job, attempt_number)
        return await self._make(job, attempt, (), diagnosis_id, claimed=True, automatic=True)

    async def _claimed(
        self, job: JobView, attempt: Attempt, credentials: Credentials, diagnosis_id: str, *, automatic: bool
    ) -> Diagnosis:
        try:
            return await self._make(
                job, attempt, credentials, diagnosis_id, claimed=True, automatic=automatic
            )
        except BaseException:
            await self.debugger.diagnoses.release_attempt(job.name, attempt.number, diagnosis_id)
            raise

    async def _wait_for(self, job: str, attempt: int, held: str) -> Diagnosis | None:
        store = self.debugger.diagnoses
        deadline = asyncio.get_running_loop().time() + self.wait_s
        pause = 0.02
        while held.startswith(PENDING) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(pause)  # another replica is making it: poll until it is attached
            pause = min(pause * 2, 0.25)
            held = await store.of_attempt(job, attempt)
        if not held or held.startswith(PENDING):
            return None
        try:
            return await store.get(held)
        except NotFound:  # expired
            return None

    async def _make(
        self,
        job: JobView,
        attempt: Attempt,
        credentials: Credentials,
        diagnosis_id: str,
        *,
        claimed: bool,
        automatic: bool = False,
    ) -> Diagnosis:
        earlier = await self.source.earlier_runs(job, credentials) if job.commit else ()
        context = Context(
            job=job.name,
            commit=job.commit,
            previous_attempts=(
                *(
                    PreviousAttempt(job.commit, a.state == "SUCCEEDED")
                    for a in reversed(job.attempts)
                    if a.number < attempt.number
                ),
                *earlier,
            ),
        )
        analysis = await self.debugger.start(
            LogOptions(kind="CI_JOB", context=context, template_set=DEFAULT_TEMPLATE_SET, announce=False)
        )
        async for lines in self.source.log(attempt, credentials):
            if lines:
                await analysis.feed(("\n".join(lines) + "\n").encode())
        if analysis.received == 0:
            await analysis.feed((outcome_line(attempt) + "\n").encode())
        extra, refine = _refined(attempt)
        diagnosis = await analysis.finish(diagnosis_id=diagnosis_id, extra_evidence=extra, refine=refine)
        first = await self.debugger.diagnoses.attach(
            job.name, attempt.number, diagnosis.id, only_if_free=not claimed
        )
        await self.debugger.hooks.fire(
            NewDiagnosis(
                diagnosis,
                JOB,
                job=job.name,
                attempt=attempt.number,
                first_of_attempt=first,
                automatic=automatic,
            )
        )
        return diagnosis

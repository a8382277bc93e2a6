"""The scheduling decision for one run, as a pure function of its plan and its jobs' states:
which jobs are queued, skipped (and why), gated, retried, cancelled, and whether the run has
ended. The coordinator applies the decision to Redis in one script; a decision made on
stale states is refused there and made again (so it may run on any replica, any time)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.pipeline.runs import conditions, retries, states
from services.pipeline.runs.plan import JobPlan, Plan
from services.pipeline.runs.records import PENDING, JobRecord


@dataclass(frozen=True)
class RunView:
    """What the scheduler needs of the run itself."""

    state: str
    cancel_requested: bool
    cancel_state: str  # the state a cancelled run ends in: CANCELLED or TIMED_OUT
    deadline_ms: int  # 0: none
    now_ms: int
    scope: Mapping[str, object]  # inputs, event, branch: what expressions read


@dataclass
class Decision:
    changes: dict[str, JobRecord] = field(default_factory=dict)  # key -> its new record
    queued: list[str] = field(default_factory=list)  # keys with a new attempt to queue
    ended_attempts: list[tuple[str, int, str, str]] = field(default_factory=list)  # key, n, state, msg
    events: list[dict[str, Any]] = field(default_factory=list)
    wake_ms: list[int] = field(default_factory=list)  # when to decide again
    run_state: str = ""  # the state the run ends in; empty: it goes on
    time_out: bool = False  # the run's deadline has passed: cancel it as TIMED_OUT


def final(record: JobRecord) -> bool:
    return record.s in states.JOB_ENDS and record.d == 1


def _succeeded(plan: JobPlan, record: JobRecord) -> bool:
    return record.s == states.SUCCEEDED or (plan.allow_failure and record.s in states.FAILURES)


def _failed(plan: JobPlan, record: JobRecord) -> bool:
    return record.s in states.FAILURES and not plan.allow_failure


def summary(plan: Plan, jobs: Mapping[str, JobRecord]) -> str:
    """Tekton's status line: `Tasks Completed: 3 (Failed: 1, Cancelled 0), Skipped: 2`."""
    completed = failed = cancelled = skipped = incomplete = 0
    for job in plan.jobs:
        record = jobs.get(job.key, PENDING)
        if not final(record):
            incomplete += 1
        elif record.s == states.SKIPPED:
            skipped += 1
        else:
            completed += 1
            failed += record.s in states.FAILURES
            cancelled += record.s == states.CANCELLED
    line = f"Tasks Completed: {completed} (Failed: {failed}, Cancelled {cancelled}), Skipped: {skipped}"
    return f"{line}, Incomplete: {incomplete}" if incomplete else line


def _end_reason(record: JobRecord) -> str:
    return f"{record.s.lower()}" + (f" ({record.r})" if record.r else "")


class _Deciding:
    def __init__(
        self,
        plan: Plan,
        jobs: Mapping[str, JobRecord],
        run: RunView,
        rng: random.Random,
        transient: Mapping[str, bool],
    ) -> None:
        self.plan = plan
        self.by_key = plan.by_key()
        self.old = jobs
        # PENDING, not JobRecord(): a default built per job per decision was a quarter of its time
        self.jobs: dict[str, JobRecord] = {job.key: jobs.get(job.key, PENDING) for job in plan.jobs}
        self.run = run
        self.rng = rng
        self.transient = transient
        self.out = Decision()

    def set(self, key: str, record: JobRecord, message: str = "") -> None:
        before = self.jobs[key]
        self.jobs[key] = record
        self.out.changes[key] = record
        if record.s != before.s or (message and record.r != before.r):
            self.out.events.append({"k": key, "n": record.n, "s": record.s, "m": message or record.r})

    def stop(self, key: str, why: str) -> None:
        """Cancel a job that has not ended: at once if no worker runs it, else ask its worker."""
        record = self.jobs[key]
        if record.s == states.RUNNING:
            if not record.c:
                self.set(key, record.but(c=1, r=why))
            return
        if record.s in states.JOB_ENDS:
            return
        if record.s == states.QUEUED:
            self.out.ended_attempts.append((key, record.n, states.CANCELLED, why))
        self.set(key, record.but(s=states.CANCELLED, r=why, d=1, c=0, rs=states.CANCELLED_REASON), why)

    def queue(self, key: str) -> None:
        record = self.jobs[key]
        self.set(key, record.but(s=states.QUEUED, n=record.n + 1, f=record.f + 1, c=0, d=1, due=0, r=""))
        self.out.queued.append(key)

    def decide_ended_attempts(self) -> None:
        for job in self.plan.jobs:
            record = self.jobs[job.key]
            if record.d or record.s not in states.ATTEMPT_ENDS:
                continue
            if (
                record.s != states.SUCCEEDED
                and not self.run.cancel_requested
                and retries.should_retry(job.retry, record, self.transient.get(job.key, False))
            ):
                wait_ms = int(retries.backoff_s(job.retry, record.n, self.rng) * 1000)
                due = self.run.now_ms + wait_ms
                self.set(job.key, record.but(s=states.RETRY_WAIT, d=1, due=due), f"retry after {wait_ms} ms")
                self.out.wake_ms.append(due)
                continue
            self.set(job.key, record.but(d=1))
            if _failed(job, record) and job.matrix and job.fail_fast:
                for sibling in self.plan.jobs:
                    if sibling.job_id == job.job_id and sibling.key != job.key:
                        self.stop(sibling.key, f"fail_fast: {job.key} {record.s.lower()}")

    def start_retries(self) -> None:
        for job in self.plan.jobs:
            record = self.jobs[job.key]
            if record.s == states.RETRY_WAIT and record.due <= self.run.now_ms:
                self.queue(job.key)

    def cancel(self) -> None:
        if not self.run.cancel_requested:
            return
        why = "run timed out" if self.run.cancel_state == states.TIMED_OUT else "run cancelled"
        for job in self.plan.jobs:
            if not job.finally_job:
                self.stop(job.key, why)

    def needs_verdict(self, job: JobPlan) -> tuple[bool, str] | None:
        """(run it?, why not) once every job it needs is final; None while waiting."""
        needed = [(self.by_key[k], self.jobs[k]) for k in job.needs]
        if any(not final(record) for _, record in needed):
            return None
        if job.when == "always":
            pass
        elif job.when == "on_failure":
            if not any(_failed(p, r) for p, r in needed):
                return False, "on_failure: no job it needs failed"
        else:
            for p, r in needed:
                if not _succeeded(p, r):
                    return False, f"on_success: {p.key} {_end_reason(r)}"
        if not conditions.expression_holds(job.expression, self.run.scope):
            return False, f"condition is false: {job.expression}"
        return True, ""

    def active_siblings(self, job: JobPlan) -> int:
        return sum(
            1 for p in self.plan.jobs if p.job_id == job.job_id and self.jobs[p.key].s in states.ACTIVE
        )

    def start_ready(self) -> None:
        mains_final = all(final(self.jobs[p.key]) for p in self.plan.jobs if not p.finally_job)
        for job in self.plan.jobs:
            record = self.jobs[job.key]
            if job.finally_job and not mains_final:
                continue
            if record.s == states.WAITING_FOR_APPROVAL:
                if record.ap:
                    self.queue_if_room(job)
                elif record.due and record.due <= self.run.now_ms:
                    self.set(job.key, record.but(s=states.REJECTED, r="the approval gate expired"))
                continue
            if record.s != states.PENDING:
                continue
            verdict = self.needs_verdict(job)
            if verdict is None:
                continue
            run_it, why = verdict
            if not run_it:
                self.set(job.key, record.but(s=states.SKIPPED, r=why))
            elif job.gate is not None and not record.ap:
                due = self.run.now_ms + int(job.gate.timeout_s * 1000) if job.gate.timeout_s else 0
                self.set(job.key, record.but(s=states.WAITING_FOR_APPROVAL, due=due), "waiting for approval")
                if due:
                    self.out.wake_ms.append(due)
            else:
                self.queue_if_room(job)

    def queue_if_room(self, job: JobPlan) -> None:
        if job.max_parallel and self.active_siblings(job) >= job.max_parallel:
            return
        self.queue(job.key)

    def finish(self) -> None:
        if self.run.state in states.RUN_FINAL or not all(final(r) for r in self.jobs.values()):
            return
        if self.run.cancel_requested:
            self.out.run_state = self.run.cancel_state
        elif any(
            _failed(p, self.jobs[p.key]) or self.jobs[p.key].s == states.CANCELLED for p in self.plan.jobs
        ):
            self.out.run_state = states.FAILED
        else:
            self.out.run_state = states.SUCCEEDED


def decide(
    plan: Plan,
    jobs: Mapping[str, JobRecord],
    run: RunView,
    rng: random.Random | None = None,
    transient: Mapping[str, bool] | None = None,
) -> Decision:
    """What to change in a RUNNING run now. `transient`: the classifier's verdicts for the jobs
    `retries.wants_classifier` named."""
    deciding = _Deciding(plan, jobs, run, rng or random.Random(), transient or {})
    if run.deadline_ms and run.now_ms >= run.deadline_ms and not run.cancel_requested:
        deciding.out.time_out = True
        return deciding.out
    if run.deadline_ms and not run.cancel_requested:
        deciding.out.wake_ms.append(run.deadline_ms)
    deciding.decide_ended_attempts()
    deciding.cancel()
    deciding.start_retries()
    deciding.start_ready()
    deciding.finish()
    return deciding.out

"""Executing a remediation: exactly one replica at a time (a lease per remediation), each action
executed, then each verified; a failure undoes what was applied, in reverse order, and the
remediation ends FAILED with the reason. Actions that only ran as a dry run end the remediation
in DRY_RUN, never SUCCEEDED.

Every phase of every action is written (compare-and-set, durable) before the next call to
another service starts: `executing` before an action's execute (with what the executor observed
beforehand; left out for executors that are idempotent by key), `applied` after it, `undoing`
and `undone` around its undo. Verifications only read, so they are not recorded until the
remediation's final state: a resumed replica verifies again. A replica that dies mid-execution leaves its lease to expire and the
remediation EXECUTING; another replica takes the lease and resumes from those phases
(`Execution.resume`): an applied action is never executed again, only verified; an action
interrupted in its execute is asked whether it took effect (`Recoverable.recover`), executed
again only when its executor is idempotent by key, and otherwise compensated: what was
applied is undone and the remediation FAILS saying the effect is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from services.debugger import remediation_actions, remediation_policy
from services.debugger.remediation import Action, Remediation, State, Step
from services.debugger.remediation_actions import Applied, Executor
from services.debugger.remediation_store import RemediationStore
from services.runtime.errors import Aborted, FailedPrecondition, ServiceError
from services.runtime.logging import get_logger

LEASE_TTL_S = 60.0
EXECUTOR_ACTOR = "executor"
log = get_logger(__name__)

# The phases of an action, as its steps record them.
EXECUTING = "executing"
APPLIED = "applied"
DRY_RUN = "dry_run"
UNDOING = "undoing"
UNDONE = "undone"
FAILED = "failed"
_DONE = frozenset({APPLIED, DRY_RUN})
_COMPENSATING = frozenset({UNDOING, UNDONE})


@runtime_checkable
class Recoverable(Protocol):
    """An executor that can tell, after a replica died inside its execute, whether the call
    took effect: it observes the target before executing (`prepare`, recorded with the
    executing phase) and compares afterwards (`recover`)."""

    async def prepare(self, action: Action) -> dict[str, str]:
        """What `recover` needs, observed before the execute (recorded durably first)."""
        ...

    async def recover(self, action: Action, prepared: dict[str, str], idempotency_key: str) -> Applied | None:
        """What the interrupted execute applied; None when it applied nothing (safe to execute)."""
        ...


def _now_us() -> int:
    return time.time_ns() // 1000


def _applied_of(step: Step) -> Applied:
    return Applied(undo=dict(step.undo), detail=step.detail, dry_run=step.status == DRY_RUN)


def phases(remediation: Remediation) -> tuple[dict[int, Step], dict[int, Applied]]:
    """Each action's latest step, and what each applied action applied (from its steps)."""
    latest: dict[int, Step] = {}
    applied: dict[int, Applied] = {}
    for step in remediation.steps:
        latest[step.action] = step
        if step.status in (APPLIED, DRY_RUN):
            applied[step.action] = _applied_of(step)
    return latest, applied


class Execution:
    """Runs approved remediations with the executors it was given, and resumes the ones a
    replica left behind."""

    def __init__(
        self,
        store: RemediationStore,
        executors: Sequence[Executor],
        *,
        lease_ttl_s: float = LEASE_TTL_S,
        replica: str = "",
        after_execute: Callable[[Remediation, int], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._executors = {kind: e for e in executors for kind in e.kinds}
        self._lease_ttl_s = lease_ttl_s
        self.replica = replica or EXECUTOR_ACTOR
        # A test hook: called once an action's execute is recorded, before anything else.
        self._after_execute = after_execute

    def _executor(self, remediation: Remediation, index: int) -> Executor:
        action = remediation.plan[index]
        found = self._executors.get(action.kind)
        if found is None:
            raise remediation_actions.missing_executor(action)
        return found

    async def execute(self, remediation: Remediation, actor: str) -> Remediation:
        """Execute an APPROVED remediation (its approvals still counting); the result's state
        is SUCCEEDED, DRY_RUN or FAILED. ABORTED when another replica executes it."""
        self._check_executable(remediation)
        for index in range(len(remediation.plan)):
            self._executor(remediation, index)  # every action has an executor, before any runs
        return await self._leased(remediation.id, actor, frozenset({State.APPROVED}))

    async def resume(self, remediation_id: str) -> Remediation:
        """Carry on an EXECUTING remediation whose replica stopped (its lease expired): ABORTED
        while a live replica holds the lease."""
        return await self._leased(remediation_id, self.replica, frozenset({State.EXECUTING}))

    async def give_up(self, remediation: Remediation, why: str) -> Remediation:
        """FAIL an APPROVED remediation this deployment cannot execute (nothing was applied)."""
        after = remediation.moved(State.FAILED, self.replica, _now_us(), f"not executed: {why}"[:2000])
        return await self._advance(remediation, after)

    def _check_executable(self, remediation: Remediation) -> None:
        if remediation.state is not State.APPROVED:
            raise FailedPrecondition(
                f"remediations/{remediation.id} is {remediation.state.value}, not APPROVED",
                reason="NOT_APPROVED",
                metadata={"state": remediation.state.value},
            )
        if not remediation.automatic:
            valid = remediation_policy.counting(remediation.approvals, _now_us())
            if len(valid) < remediation.required_approvals:
                raise FailedPrecondition(
                    f"remediations/{remediation.id} has {len(valid)} unexpired approvals of "
                    f"{remediation.required_approvals}: approve it again",
                    reason="APPROVAL_EXPIRED",
                )

    async def _leased(self, remediation_id: str, actor: str, states: frozenset[State]) -> Remediation:
        lease = self._store.lease(remediation_id, self._lease_ttl_s)
        if not await lease.acquire():
            raise Aborted(
                f"remediations/{remediation_id} is being executed by another replica", reason="LEASED"
            )
        lease.keep()
        try:
            # Read again under the lease: what another replica did before it let go counts.
            current = await self._store.get(remediation_id)
            if current.state not in states:
                if State.APPROVED in states:
                    self._check_executable(current)
                return current  # finished meanwhile: nothing to resume
            if current.state is State.APPROVED:
                self._check_executable(current)
                current = await self._advance(
                    current, current.moved(State.EXECUTING, actor, _now_us(), "executing the plan")
                )
            else:
                why = f"resumed by {self.replica}: the replica executing it stopped and its lease expired"
                log.info("remediation.resumed", remediation=current.id, replica=self.replica)
                current = await self._advance(current, current.moved(State.EXECUTING, actor, _now_us(), why))
            return await self._run(current)
        finally:
            await lease.release()

    async def _advance(self, before: Remediation, after: Remediation) -> Remediation:
        await self._store.write(after, before)
        return after

    async def _record(self, current: Remediation, step: Step) -> Remediation:
        return await self._advance(
            current, replace(current, steps=(*current.steps, step), version=current.version + 1)
        )

    async def _run(self, current: Remediation) -> Remediation:
        latest, applied = phases(current)
        if any(step.status in _COMPENSATING or step.status == FAILED for step in latest.values()):
            return await self._undo_and_fail(current, "resumed the undo the stopped replica had begun")
        for index, action in enumerate(current.plan):
            step = latest.get(index)
            if step is not None and step.status in _DONE:
                continue  # executed before: never again
            key = f"{current.id}-{index}"
            try:
                executor = self._executor(current, index)
                if step is not None and step.status == EXECUTING:
                    recovered, current = await self._recover(current, index, executor, step)
                    if recovered is not None:
                        applied[index] = recovered
                        continue
                if not getattr(executor, "idempotent", False):  # executing again would apply twice
                    prepared = await executor.prepare(action) if isinstance(executor, Recoverable) else {}
                    current = await self._record(current, Step(index, EXECUTING, "executing", key, prepared))
                done = await executor.execute(action, key)
            except _Interrupted as interrupted:
                return await self._undo_and_fail(interrupted.current, interrupted.reason)
            except ServiceError as error:
                current = await self._record(current, Step(index, FAILED, str(error)[:1000], key))
                return await self._undo_and_fail(current, f"action {index} failed: {error}")
            status = DRY_RUN if done.dry_run else APPLIED
            current = await self._record(
                current, Step(index, status, done.detail[:4000], key, dict(done.undo))
            )
            applied[index] = done
            if self._after_execute is not None:
                await self._after_execute(current, index)
        for index in sorted(applied):  # verifying reads only: a resumed replica verifies again
            try:
                problem = await self._executor(current, index).verify(current.plan[index], applied[index])
            except ServiceError as error:
                problem = str(error)
            if problem is not None:
                return await self._undo_and_fail(current, f"verification of action {index} failed: {problem}")
        dry = [index for index in sorted(applied) if applied[index].dry_run]
        if dry:
            why = f"dry run: actions {dry} produced what they would apply; nothing was applied"
            return await self._advance(current, current.moved(State.DRY_RUN, self.replica, _now_us(), why))
        return await self._advance(
            current,
            current.moved(State.SUCCEEDED, self.replica, _now_us(), "every action applied and verified"),
        )

    async def _recover(
        self, current: Remediation, index: int, executor: Executor, step: Step
    ) -> tuple[Applied | None, Remediation]:
        """After a replica died inside action `index`'s execute: what it applied (recorded as
        applied), or None to execute it again; _Interrupted when nobody can tell."""
        action = current.plan[index]
        if isinstance(executor, Recoverable):
            found = await executor.recover(action, dict(step.undo), step.idempotency_key)
            if found is None:
                return None, current
            status = DRY_RUN if found.dry_run else APPLIED
            detail = f"recovered after the replica stopped: {found.detail}"[:4000]
            current = await self._record(
                current, Step(index, status, detail, step.idempotency_key, dict(found.undo))
            )
            return found, current
        if getattr(executor, "idempotent", False):
            return None, current  # the same key again applies nothing new
        why = (
            f"action {index} ({action.kind.value} on {action.target}) was interrupted inside its execute "
            "and its executor cannot tell whether it took effect: check the target"
        )
        current = await self._record(current, Step(index, FAILED, why, step.idempotency_key))
        raise _Interrupted(current, why)

    async def _undo_and_fail(self, current: Remediation, reason: str) -> Remediation:
        latest, applied = phases(current)
        undone = [index for index, step in latest.items() if step.status == UNDONE]
        failed_undo = ""
        for index in sorted(applied, reverse=True):
            if latest[index].status == UNDONE:
                continue
            key = f"{current.id}-{index}-undo"
            done = applied[index]
            try:
                current = await self._record(current, Step(index, UNDOING, "undoing", key, dict(done.undo)))
                await self._executor(current, index).undo(current.plan[index], done, key)
            except ServiceError as error:
                failed_undo = f"; undo of action {index} failed: {error}"
                log.warning("remediation.undo_failed", remediation=current.id, action=index)
                break
            undone.append(index)
            current = await self._record(current, Step(index, UNDONE, f"undid action {index}", key))
        why = f"{reason}; undone in reverse order: {undone}{failed_undo}"
        return await self._advance(current, current.moved(State.FAILED, self.replica, _now_us(), why[:2000]))


class _Interrupted(Exception):
    """An action whose interrupted execute nobody can account for: compensate."""

    def __init__(self, current: Remediation, reason: str) -> None:
        super().__init__(reason)
        self.current = current
        self.reason = reason

"""Executing a remediation: exactly one replica at a time (a lease per remediation), each action
executed, then each verified; a failure undoes what was applied, in reverse order, and the
remediation ends FAILED with the reason. Every step is written (compare-and-set, durable)
before the next one starts, so the state always says what was applied. Actions that only ran
as a dry run end the remediation in DRY_RUN, never SUCCEEDED.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from services.debugger import remediation_actions, remediation_policy
from services.debugger.remediation import Remediation, State, Step
from services.debugger.remediation_actions import Applied, Executor
from services.debugger.remediation_store import RemediationStore
from services.runtime.errors import Aborted, FailedPrecondition, ServiceError
from services.runtime.logging import get_logger

LEASE_TTL_S = 60.0
log = get_logger(__name__)


def _now_us() -> int:
    return time.time_ns() // 1000


class Execution:
    """Runs approved remediations with the executors it was given."""

    def __init__(self, store: RemediationStore, executors: Sequence[Executor]) -> None:
        self._store = store
        self._executors = {kind: e for e in executors for kind in e.kinds}

    def _executor(self, remediation: Remediation, index: int) -> Executor:
        action = remediation.plan[index]
        found = self._executors.get(action.kind)
        if found is None:
            raise remediation_actions.missing_executor(action)
        return found

    async def execute(self, remediation: Remediation, actor: str) -> Remediation:
        """Execute an APPROVED remediation (its approvals still counting); the result's state
        is SUCCEEDED, DRY_RUN or FAILED. ABORTED when another replica executes it."""
        if remediation.state is not State.APPROVED:
            raise FailedPrecondition(
                f"remediations/{remediation.id} is {remediation.state.value}, not APPROVED",
                reason="NOT_APPROVED",
                metadata={"state": remediation.state.value},
            )
        now_us = _now_us()
        if not remediation.automatic:
            valid = remediation_policy.counting(remediation.approvals, now_us)
            if len(valid) < remediation.required_approvals:
                raise FailedPrecondition(
                    f"remediations/{remediation.id} has {len(valid)} unexpired approvals of "
                    f"{remediation.required_approvals}: approve it again",
                    reason="APPROVAL_EXPIRED",
                )
        for index in range(len(remediation.plan)):
            self._executor(remediation, index)  # every action has an executor, before any runs
        lease = self._store.lease(remediation.id, LEASE_TTL_S)
        if not await lease.acquire():
            raise Aborted(
                f"remediations/{remediation.id} is being executed by another replica", reason="LEASED"
            )
        lease.keep()
        try:
            return await self._run(remediation, actor)
        finally:
            await lease.release()

    async def _advance(self, before: Remediation, after: Remediation) -> Remediation:
        await self._store.write(after, before)
        return after

    async def _run(self, remediation: Remediation, actor: str) -> Remediation:
        current = await self._advance(
            remediation, remediation.moved(State.EXECUTING, actor, _now_us(), "executing the plan")
        )
        applied: list[tuple[int, Applied]] = []
        for index, action in enumerate(current.plan):
            key = f"{current.id}-{index}"
            try:
                done = await self._executor(current, index).execute(action, key)
            except ServiceError as error:
                step = Step(index, "failed", str(error)[:1000], key)
                current = await self._advance(current, replace(current, steps=(*current.steps, step),
                                                               version=current.version + 1))  # fmt: skip
                return await self._undo_and_fail(current, applied, f"action {index} failed: {error}")
            status = "dry_run" if done.dry_run else "applied"
            step = Step(index, status, done.detail[:4000], key, dict(done.undo))
            current = await self._advance(
                current, replace(current, steps=(*current.steps, step), version=current.version + 1)
            )
            applied.append((index, done))
        for index, done in applied:
            try:
                problem = await self._executor(current, index).verify(current.plan[index], done)
            except ServiceError as error:
                problem = str(error)
            if problem is not None:
                return await self._undo_and_fail(
                    current, applied, f"verification of action {index} failed: {problem}"
                )
        dry = [index for index, done in applied if done.dry_run]
        if dry:
            why = f"dry run: actions {dry} produced what they would apply; nothing was applied"
            return await self._advance(current, current.moved(State.DRY_RUN, "executor", _now_us(), why))
        return await self._advance(
            current,
            current.moved(State.SUCCEEDED, "executor", _now_us(), "every action applied and verified"),
        )

    async def _undo_and_fail(
        self, current: Remediation, applied: list[tuple[int, Applied]], reason: str
    ) -> Remediation:
        undone: list[int] = []
        failed_undo = ""
        for index, done in reversed(applied):
            key = f"{current.id}-{index}-undo"
            try:
                await self._executor(current, index).undo(current.plan[index], done, key)
            except ServiceError as error:
                failed_undo = f"; undo of action {index} failed: {error}"
                log.warning("remediation.undo_failed", remediation=current.id, action=index)
                break
            undone.append(index)
            step = Step(index, "undone", f"undid action {index}", key)
            current = await self._advance(
                current, replace(current, steps=(*current.steps, step), version=current.version + 1)
            )
        why = f"{reason}; undone in reverse order: {undone}{failed_undo}"
        return await self._advance(current, current.moved(State.FAILED, "executor", _now_us(), why[:2000]))

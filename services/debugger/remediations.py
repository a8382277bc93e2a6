"""Remediations, the domain: propose from a diagnosis or a plan, approve, reject, cancel, read.

Every change is a transition written by compare-and-set (`RemediationStore.write`), so two
replicas approving at once cannot both win, and each transition is an event on the
remediations' stream.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace

from services.debugger import remediation_plan, remediation_policy
from services.debugger.diagnosis_store import DiagnosisStore
from services.debugger.remediation import NOT_STARTED, Action, Remediation, State, Transition
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_policy import POLICY_ACTOR, Policy
from services.debugger.remediation_store import RemediationStore
from services.runtime import etags
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.resource_names import ResourceName

REMEDIATION = ResourceName("remediations/{remediation}")
DIAGNOSIS = ResourceName("diagnoses/{diagnosis}")


def new_id() -> str:
    """A fresh remediation id (AIP-122: a letter, then hex)."""
    return "r" + secrets.token_hex(10)


def _now_us() -> int:
    return time.time_ns() // 1000


def _check_reason(reason: str, field: str = "reason") -> None:
    if len(reason) > remediation_plan.MAX_REASON_CHARS:
        raise InvalidArgument.for_field(field, f"longer than {remediation_plan.MAX_REASON_CHARS} characters")


class Remediations:
    """Proposes remediations and moves them through their states."""

    def __init__(
        self, store: RemediationStore, diagnoses: DiagnosisStore, policy: Policy, execution: Execution
    ) -> None:
        self._store = store
        self._diagnoses = diagnoses
        self.policy = policy
        self._execution = execution
        # Told when a remediation became APPROVED here (the background executor looks now).
        self.approved: Callable[[], None] = lambda: None

    async def propose(
        self,
        proposer: str,
        *,
        diagnosis: str,
        target: str,
        parameters: Mapping[str, str],
        plan: Sequence[Action],
        reason: str,
        risk_policy: Policy | None = None,
        policy: str = "",
        execute_on_approval: bool = False,
    ) -> Remediation:
        """A new remediation: its plan checked, its risk assessed (by `risk_policy`, default the
        service's), approved by the policy when automatic (and its target has not had too many
        automatic fixes lately). `policy` names the remediation policy that proposed it."""
        rules = risk_policy or self.policy
        _check_reason(reason)
        confidence = None
        if diagnosis:
            (diagnosis_id,) = DIAGNOSIS.parse(diagnosis, "diagnosis")
            found = await self._diagnoses.get(diagnosis_id)
            confidence = found.confidence
            if not plan:
                if not target:
                    raise InvalidArgument.for_field(
                        "target", "the resource the diagnosis's suggestions act on"
                    )
                plan = remediation_plan.from_suggestions(diagnosis, found.remediations, target, parameters)
                remediation_plan.check_derived_plan(plan)
        elif not plan:
            raise InvalidArgument.for_field("plan", "needs a diagnosis or a plan of at least one action")
        remediation_plan.check_plan(plan)
        risk = remediation_policy.assess(plan, confidence, rules)
        required = remediation_policy.required_approvals(risk)
        now_us = _now_us()
        remediation_id = new_id()
        why = reason or f"proposed with risk {risk.score:.2f}"
        proposal = Transition(None, State.AWAITING_APPROVAL, proposer, now_us, why)
        automatic = required == 0
        escalated = ""
        if automatic:
            for target_name in dict.fromkeys(a.target for a in plan):
                if not await self._store.count_automatic(
                    target_name,
                    remediation_id,
                    now_us,
                    rules.automatic_window_s,
                    rules.automatic_per_target,
                ):
                    automatic, required = False, 1
                    escalated = (
                        f"{target_name} had {rules.automatic_per_target} automatic remediations in "
                        f"{rules.automatic_window_s} s: this one needs an approval"
                    )
                    break
        remediation = Remediation(
            id=remediation_id,
            diagnosis=diagnosis,
            plan=tuple(plan),
            risk=replace(risk, reasons=(*risk.reasons, escalated)) if escalated else risk,
            automatic=automatic,
            required_approvals=required,
            proposer=proposer,
            create_time_us=now_us,
            update_time_us=now_us,
            state=State.AWAITING_APPROVAL,
            history=(proposal,),
            policy=policy,
            execute_on_approval=execute_on_approval,
        )
        if automatic:
            remediation = remediation.moved(
                State.APPROVED,
                POLICY_ACTOR,
                now_us,
                f"risk {risk.score:.2f} is under the threshold {risk.automatic_threshold:.2f}: automatic",
            )
        await self._store.write(remediation, None)
        if automatic:
            self.approved()
        return remediation

    async def get(self, name: str, field: str = "name") -> Remediation:
        """A remediation by name."""
        (remediation_id,) = REMEDIATION.parse(name, field)
        return await self._store.get(remediation_id)

    async def page(
        self, *, state: State | None, target: str, before_us: int | None, size: int
    ) -> tuple[list[Remediation], int | None]:
        """A page of remediations, newest first."""
        if len(target) > remediation_plan.MAX_PARAMETER_CHARS:
            raise InvalidArgument.for_field(
                "target", f"longer than {remediation_plan.MAX_PARAMETER_CHARS} characters"
            )
        return await self._store.page(state=state, target=target, before_us=before_us, size=size)

    async def approve(self, name: str, approver: str, reason: str, etag: str) -> Remediation:
        """One approval more (see `remediation_policy.approve`)."""
        _check_reason(reason)
        before = await self._read_for_change(name, etag)
        after = remediation_policy.approve(before, approver, reason, _now_us(), self.policy)
        await self._store.write(after, before)
        if after.state is State.APPROVED:
            self.approved()
        return after

    async def execute(self, name: str, actor: str) -> Remediation:
        """Execute an approved remediation (see `Execution.execute`)."""
        return await self._execution.execute(await self.get(name), actor)

    async def watch(
        self, after_event_id: str, block_ms: int
    ) -> AsyncIterator[tuple[str, Remediation | None]]:
        """Every transition after `after_event_id` (empty: from now on), as the remediation it
        left; (cursor, None) when nothing happened for `block_ms`."""
        if after_event_id:
            await self._store.check_resumable(after_event_id, "after_event_id")
        after = after_event_id or await self._store.last_event_id()
        async for item in self._store.follow(after, block_ms):
            yield item

    def close(self) -> None:
        """End the watches (the server drains)."""
        self._store.closing = True

    async def reject(self, name: str, actor: str, reason: str, etag: str) -> Remediation:
        """A final rejection of a remediation that has not started."""
        return await self._stop(name, actor, reason, etag, State.REJECTED)

    async def cancel(self, name: str, actor: str, reason: str, etag: str) -> Remediation:
        """A cancellation of a remediation that has not started."""
        return await self._stop(name, actor, reason, etag, State.CANCELLED)

    async def _stop(self, name: str, actor: str, reason: str, etag: str, to: State) -> Remediation:
        _check_reason(reason)
        before = await self._read_for_change(name, etag)
        if before.state not in NOT_STARTED:
            raise FailedPrecondition(
                f"remediations/{before.id} is {before.state.value}: only one that has not started can be "
                f"{to.value.lower()}",
                reason="ALREADY_STARTED",
                metadata={"state": before.state.value},
            )
        after = before.moved(to, actor, _now_us(), reason or to.value.lower())
        await self._store.write(after, before)
        return after

    async def _read_for_change(self, name: str, etag: str) -> Remediation:
        remediation = await self.get(name)
        etags.check(etag, etags.of(remediation.version), f"remediations/{remediation.id}")
        return remediation

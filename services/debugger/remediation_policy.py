"""The remediation policy: how risky a plan is, how many approvals it needs, who may approve.

Risk is the riskiest action's base (by kind), plus a production environment, the blast radius
(consumers or replicas affected) and the doubt of the diagnosis it answers; every contribution
is a reason in words. Below the environment's threshold the plan is automatic; above it one
approval is needed, two distinct approvers in production. The proposer never approves their
own remediation, an approver counts once, approvals expire and a rejection is final.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.debugger.remediation import Action, ActionKind, Approval, Remediation, Risk, State
from services.debugger.remediation_plan import BLAST_RADIUS, DEPLOYMENT, ENVIRONMENT
from services.runtime.errors import FailedPrecondition

BASE_RISK: dict[ActionKind, float] = {
    ActionKind.PIPELINE_RERUN: 0.05,
    ActionKind.PIPELINE_RERUN_WITH_BACKOFF: 0.05,
    ActionKind.PIPELINE_CANCEL_RUN: 0.15,
    ActionKind.KUBERNETES_RESTART: 0.15,
    ActionKind.KUBERNETES_SCALE: 0.25,
    ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT: 0.25,
    ActionKind.CONFIG_ROLLBACK: 0.35,
    ActionKind.KUBERNETES_ROLLBACK: 0.35,
    ActionKind.SECRET_PROMOTE_VERSION: 0.4,
    ActionKind.SECRET_ROTATE: 0.45,
    ActionKind.SECRET_DISABLE_VERSION: 0.5,
}
PRODUCTION_WEIGHT = 0.3
BLAST_RADIUS_PER_UNIT = 0.02
BLAST_RADIUS_MAX = 0.2
DOUBT_WEIGHT = 0.3
POLICY_ACTOR = "policy"


@dataclass(frozen=True)
class Policy:
    """The policy's settings: thresholds per environment, which environments are production,
    how long approvals count, how many automatic remediations a target gets per window."""

    default_threshold: float
    thresholds: Mapping[str, float]
    production_environments: frozenset[str]
    approval_ttl_s: int
    automatic_per_target: int
    automatic_window_s: int

    def threshold(self, environment: str) -> float:
        """Under this score, remediations of `environment` are automatic."""
        return self.thresholds.get(environment, self.default_threshold)


def environment_of(action: Action) -> str:
    """The environment an action acts in: a config environment's id, a Deployment's namespace;
    empty for targets that have none (secrets, pipeline jobs)."""
    if action.target.startswith("namespaces/") and "/environments/" in action.target:
        return ENVIRONMENT.parse(action.target)[1]
    if action.target.startswith("namespaces/") and "/deployments/" in action.target:
        return DEPLOYMENT.parse(action.target)[0]
    return ""


def assess(plan: Sequence[Action], confidence: float | None, policy: Policy) -> Risk:
    """The plan's risk, with a reason for every contribution."""
    riskiest = max(plan, key=lambda a: BASE_RISK[a.kind])
    score = BASE_RISK[riskiest.kind]
    reasons = [f"{riskiest.kind.value} on {riskiest.target} is {score:.2f} by its kind"]
    environments = sorted({e for e in map(environment_of, plan) if e})
    production = [e for e in environments if e in policy.production_environments]
    if production:
        score += PRODUCTION_WEIGHT
        reasons.append(f"production environment {production[0]} adds {PRODUCTION_WEIGHT:.2f}")
    radius = max((int(a.parameters.get(BLAST_RADIUS, "0")) for a in plan), default=0)
    if radius:
        added = min(BLAST_RADIUS_MAX, radius * BLAST_RADIUS_PER_UNIT)
        score += added
        reasons.append(f"a blast radius of {radius} consumers or replicas adds {added:.2f}")
    if confidence is not None and confidence < 1.0:
        added = (1.0 - confidence) * DOUBT_WEIGHT
        score += added
        reasons.append(f"the diagnosis's confidence of {confidence:.2f} adds {added:.2f}")
    environment = production[0] if production else (environments[0] if environments else "")
    return Risk(
        score=round(min(1.0, score), 4),
        reasons=tuple(reasons),
        environment=environment,
        production=bool(production),
        automatic_threshold=policy.threshold(environment),
    )


def required_approvals(risk: Risk) -> int:
    """0 below the threshold (outside production), 2 in production, else 1."""
    if risk.production:
        return 2
    return 0 if risk.score < risk.automatic_threshold else 1


def counting(approvals: Sequence[Approval], now_us: int) -> list[Approval]:
    """The approvals that have not expired."""
    return [a for a in approvals if a.expire_time_us > now_us]


def approve(remediation: Remediation, approver: str, reason: str, now_us: int, policy: Policy) -> Remediation:
    """The remediation with `approver`'s approval; APPROVED once enough distinct, unexpired
    approvals count. FAILED_PRECONDITION for the proposer, a second approval by the same
    person, or a remediation that does not await approval."""
    if remediation.state is not State.AWAITING_APPROVAL:
        raise FailedPrecondition(
            f"remediations/{remediation.id} is {remediation.state.value}, not awaiting approval",
            reason="NOT_AWAITING_APPROVAL",
            metadata={"state": remediation.state.value},
        )
    if approver == remediation.proposer:
        raise FailedPrecondition(
            f"{approver} proposed remediations/{remediation.id} and may not approve it",
            reason="SELF_APPROVAL",
        )
    valid = counting(remediation.approvals, now_us)
    if any(a.approver == approver for a in valid):
        raise FailedPrecondition(
            f"{approver} already approved remediations/{remediation.id}: another person must",
            reason="ALREADY_APPROVED",
        )
    approval = Approval(approver, now_us, now_us + policy.approval_ttl_s * 1_000_000, reason)
    approvals = (*remediation.approvals, approval)
    have = len(valid) + 1
    if have >= remediation.required_approvals:
        return remediation.moved(
            State.APPROVED,
            approver,
            now_us,
            reason or f"approved ({have} of {remediation.required_approvals})",
            approvals=approvals,
        )
    # A partial approval is a transition too (AWAITING_APPROVAL to itself): the history shows it.
    return remediation.moved(
        State.AWAITING_APPROVAL,
        approver,
        now_us,
        reason or f"approved ({have} of {remediation.required_approvals})",
        approvals=approvals,
    )

"""The remediation policy: risk with its reasons, approvals needed, and approvals that expire."""

from __future__ import annotations

import pytest

from services.debugger import remediation_policy as policy
from services.debugger.remediation import Action, ActionKind, Remediation, State, Transition
from services.runtime.errors import FailedPrecondition

POLICY = policy.Policy(
    default_threshold=0.3,
    thresholds={"sandbox": 0.6},
    production_environments=frozenset({"prod"}),
    approval_ttl_s=60,
    automatic_per_target=3,
    automatic_window_s=3600,
)
SECOND_US = 1_000_000


def _rollback(environment: str, **parameters: str) -> Action:
    return Action(
        ActionKind.CONFIG_ROLLBACK,
        f"namespaces/shop/environments/{environment}",
        {"revision": "3", **parameters},
    )


def _awaiting(plan: tuple[Action, ...], confidence: float | None = None) -> Remediation:
    risk = policy.assess(plan, confidence, POLICY)
    return Remediation(
        id="rtest",
        diagnosis="",
        plan=plan,
        risk=risk,
        automatic=False,
        required_approvals=policy.required_approvals(risk),
        proposer="alice",
        create_time_us=0,
        state=State.AWAITING_APPROVAL,
        history=(Transition(None, State.AWAITING_APPROVAL, "alice", 0, "proposed"),),
    )


def test_production_blast_radius_and_doubt_each_add_risk_with_a_reason() -> None:
    calm = policy.assess((_rollback("staging"),), None, POLICY)
    wide = policy.assess((_rollback("prod", blast_radius="5"),), 0.5, POLICY)
    assert wide.score == pytest.approx(calm.score + policy.PRODUCTION_WEIGHT + 0.1 + 0.15)
    assert len(wide.reasons) == 4 and wide.production and wide.environment == "prod"


def test_an_environment_with_its_own_threshold_makes_the_same_plan_automatic() -> None:
    assert policy.required_approvals(policy.assess((_rollback("staging"),), None, POLICY)) == 1
    assert policy.required_approvals(policy.assess((_rollback("sandbox"),), None, POLICY)) == 0


def test_production_needs_two_approvers_even_under_the_threshold() -> None:
    restart = Action(ActionKind.KUBERNETES_RESTART, "namespaces/prod/deployments/web", {})
    assert policy.required_approvals(policy.assess((restart,), None, POLICY)) == 2


def test_an_expired_approval_stops_counting_and_its_approver_may_approve_again() -> None:
    pending = _awaiting((_rollback("prod"),))
    once = policy.approve(pending, "bob", "", 0, POLICY)
    with pytest.raises(FailedPrecondition):
        policy.approve(once, "bob", "", 30 * SECOND_US, POLICY)
    later = policy.approve(once, "carol", "", 61 * SECOND_US, POLICY)
    assert later.state is State.AWAITING_APPROVAL  # bob's approval expired: one of two counts
    again = policy.approve(later, "bob", "", 62 * SECOND_US, POLICY)
    assert again.state is State.APPROVED and len(again.approvals) == 3


def test_the_proposer_never_approves_their_own() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        policy.approve(_awaiting((_rollback("staging"),)), "alice", "", 0, POLICY)
    assert caught.value.reason == "SELF_APPROVAL"

"""A remediation as the debugger keeps it: a plan of typed actions, its risk, its approvals, its
state and the history of every transition. Plain data; the policy and the store act on it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class State(enum.Enum):
    """Where a remediation is in its life (the proto's RemediationState without the prefix)."""

    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    APPROVED = "APPROVED"
    EXECUTING = "EXECUTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    DRY_RUN = "DRY_RUN"


# States a remediation never leaves.
FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.REJECTED, State.CANCELLED, State.DRY_RUN})
# States in which it has not started: it may still be approved, rejected or cancelled.
NOT_STARTED = frozenset({State.AWAITING_APPROVAL, State.APPROVED})


class ActionKind(enum.Enum):
    """What an action does (the proto's ActionKind without the prefix)."""

    PIPELINE_RERUN = "PIPELINE_RERUN"
    PIPELINE_RERUN_WITH_BACKOFF = "PIPELINE_RERUN_WITH_BACKOFF"
    PIPELINE_CANCEL_RUN = "PIPELINE_CANCEL_RUN"
    CONFIG_ROLLBACK = "CONFIG_ROLLBACK"
    SECRET_ROTATE = "SECRET_ROTATE"
    SECRET_PROMOTE_VERSION = "SECRET_PROMOTE_VERSION"
    SECRET_DISABLE_VERSION = "SECRET_DISABLE_VERSION"
    KUBERNETES_RESTART = "KUBERNETES_RESTART"
    KUBERNETES_RAISE_MEMORY_LIMIT = "KUBERNETES_RAISE_MEMORY_LIMIT"
    KUBERNETES_ROLLBACK = "KUBERNETES_ROLLBACK"
    KUBERNETES_SCALE = "KUBERNETES_SCALE"


@dataclass(frozen=True)
class Action:
    """One step of a plan."""

    kind: ActionKind
    target: str
    parameters: dict[str, str]
    reason: str = ""


@dataclass(frozen=True)
class Risk:
    """How risky a plan is, and each contribution to the score in words."""

    score: float
    reasons: tuple[str, ...]
    environment: str
    production: bool
    automatic_threshold: float


@dataclass(frozen=True)
class Approval:
    """One person's approval; it stops counting at `expire_time_us`."""

    approver: str
    approve_time_us: int
    expire_time_us: int
    reason: str = ""


@dataclass(frozen=True)
class Transition:
    """One change of state: who or what made it, when, why. `from_state` is None for the proposal."""

    from_state: State | None
    to_state: State
    actor: str
    time_us: int
    reason: str


@dataclass(frozen=True)
class Step:
    """What happened to one action, one phase at a time: `status` is executing (written before
    the call: its outcome is not known yet), applied, dry_run, undoing, undone or failed;
    `undo` holds what undoing it needs (the revision it replaced...), or for an executing step
    what a resuming replica needs to find out whether it took effect."""

    action: int
    status: str
    detail: str
    idempotency_key: str
    undo: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Remediation:
    """A remediation; `version` grows by one with every transition (the store's compare-and-set)."""

    id: str
    diagnosis: str
    plan: tuple[Action, ...]
    risk: Risk
    automatic: bool
    required_approvals: int
    proposer: str
    create_time_us: int
    state: State
    history: tuple[Transition, ...]
    approvals: tuple[Approval, ...] = ()
    version: int = 1
    update_time_us: int = field(default=0)
    steps: tuple[Step, ...] = ()
    # The remediationPolicies/{policy} that proposed it (empty: a person or a service did).
    policy: str = ""
    # Executed by the background executor once approved (a policy's choice), not by a call.
    execute_on_approval: bool = False

    def moved(self, to: State, actor: str, now_us: int, reason: str, **changes: object) -> Remediation:
        """This remediation after a transition to `to` (one more history entry and version)."""
        transition = Transition(self.state, to, actor, now_us, reason)
        return replace(
            self,
            state=to,
            history=(*self.history, transition),
            version=self.version + 1,
            update_time_us=now_us,
            **changes,  # type: ignore[arg-type]
        )

    def targets(self) -> list[str]:
        """The distinct targets of the plan, in order."""
        return list(dict.fromkeys(a.target for a in self.plan))

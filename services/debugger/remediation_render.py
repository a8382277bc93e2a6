"""Remediations for a terminal: the state each went through, its plan, risk, approvals, history
and steps, as `devmesh debug remediation ...` prints them."""

from __future__ import annotations

from devmesh.debugger.v1 import remediation_pb2 as pb

_STATE_PREFIX = "REMEDIATION_STATE_"


def state_name(value: int) -> str:
    """`AWAITING_APPROVAL`, `APPROVED`... for a RemediationState value."""
    return pb.RemediationState.Name(value).removeprefix(_STATE_PREFIX)  # type: ignore[arg-type]


def _time(stamp: object) -> str:
    return stamp.ToJsonString() if stamp.ByteSize() else "-"  # type: ignore[attr-defined]


def path(record: pb.RemediationRecord) -> str:
    """The states it went through, the current one in brackets, then what may come next."""
    states = [state_name(t.to_state) for t in record.history] or [state_name(record.state)]
    walked = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    walked[-1] = f"[{walked[-1]}]"
    current = state_name(record.state)
    nexts = {
        "AWAITING_APPROVAL": "APPROVED | REJECTED | CANCELLED",
        "APPROVED": "EXECUTING | REJECTED | CANCELLED",
        "EXECUTING": "SUCCEEDED | FAILED | DRY_RUN",
    }.get(current)
    return " -> ".join(walked) + (f" -> ({nexts})" if nexts else "  (final)")


def one_line(record: pb.RemediationRecord) -> str:
    """A list row: name, state, risk, target of the first action."""
    first = record.plan[0] if record.plan else None
    what = f"{pb.ActionKind.Name(first.kind).removeprefix('ACTION_KIND_')} {first.target}" if first else ""
    more = f" (+{len(record.plan) - 1})" if len(record.plan) > 1 else ""
    return f"{record.name}  {state_name(record.state):<17}  risk {record.risk.score:.2f}  {what}{more}"


def render(record: pb.RemediationRecord) -> str:
    """One remediation in full."""
    counted = len(record.approvals)
    out = [
        f"{record.name}  {state_name(record.state)}",
        f"  {path(record)}",
        f"  proposed by {record.proposer} at {_time(record.create_time)}"
        + (f" for {record.diagnosis}" if record.diagnosis else ""),
        f"  risk {record.risk.score:.2f} in {record.risk.environment or '-'}"
        + (" (production)" if record.risk.production else "")
        + f", automatic under {record.risk.automatic_threshold:.2f}: "
        + (
            "approved by the policy"
            if record.automatic
            else f"needs {record.required_approvals} approval(s), has {counted}"
        ),
    ]
    out += [f"    - {reason}" for reason in record.risk.reasons if reason]
    out.append("  plan:")
    for index, action in enumerate(record.plan):
        kind = pb.ActionKind.Name(action.kind).removeprefix("ACTION_KIND_")
        parameters = " ".join(f"{k}={v}" for k, v in sorted(action.parameters.items()))
        out.append(f"    {index}. {kind} {action.target}" + (f"  {parameters}" if parameters else ""))
    if record.approvals:
        out.append("  approvals:")
        out += [
            f"    {a.approver} at {_time(a.approve_time)} (until {_time(a.expire_time)})"
            + (f": {a.reason}" if a.reason else "")
            for a in record.approvals
        ]
    out.append("  history:")
    for t in record.history:
        before = state_name(t.from_state) if t.from_state else "(new)"
        out.append(
            f"    {_time(t.time)}  {before} -> {state_name(t.to_state)}  by {t.actor}"
            + (f": {t.reason}" if t.reason else "")
        )
    if record.steps:
        out.append("  steps:")
        out += [f"    action {s.action} {s.status}: {s.detail[:300]}" for s in record.steps]
    return "\n".join(out)


def event_line(event: pb.RemediationEvent) -> str:
    """One watched event: its id, the remediation, the transition (or the step) it made."""
    record, t = event.remediation, event.transition
    before = state_name(t.from_state) if t.from_state else "(new)"
    line = f"{event.event_id}  {record.name}  {before} -> {state_name(t.to_state)}  by {t.actor}"
    if record.steps and state_name(record.state) == "EXECUTING" and t.to_state == record.state:
        step = record.steps[-1]
        line += f"  step {step.action} {step.status}"
    return line + (f": {t.reason}" if t.reason else "")

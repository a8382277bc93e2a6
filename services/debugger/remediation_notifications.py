"""Remediation audit events and webhooks.

Audit: every change of a remediation (proposal, approval, execution, each step executed or
undone, the verification's outcome) is an event in the runtime's audit log, beside the one the
call itself makes, naming the remediation, the change and the transition's actor and reason.

Webhooks: every proposal, approval, execution step, verification outcome and undo
becomes a signed, retried POST through the runtime's notifications (HMAC-SHA256 over the
timestamp and the body, exponential backoff, a dead-letter list), once per transition, to each
webhook subscription that wants its event type, as JSON or as a Slack message.

The POST follows the transition it reports (written and durable first): a replica that dies in
between loses that one POST, never a transition; the stream (WatchRemediations) has them all.
"""

from __future__ import annotations

import json
from typing import Any

from services.debugger.remediation import Remediation
from services.debugger.remediation_subscriptions import PayloadFormat, Subscriptions
from services.runtime import request_context
from services.runtime.audit import AuditLog
from services.runtime.logging import get_logger
from services.runtime.notifications import Notifier, Webhook

log = get_logger(__name__)


def event_type(after: Remediation, before: Remediation | None) -> str:
    """`remediation.proposed`, `remediation.step` (an action executed or undone, no new state),
    or `remediation.<state>` (approved, executing, succeeded, failed, dry_run...)."""
    if before is None:
        return "remediation.proposed"
    if len(after.history) == len(before.history):
        return "remediation.step"
    if after.state is before.state:
        return "remediation.approval"  # one approval of several
    return f"remediation.{after.state.value.lower()}"


def webhook_event_type(after: Remediation, before: Remediation | None) -> str:
    """The event type a webhook sees: `event_type`, except that an action undone is
    `remediation.undone` (a receiver wants to tell it from an action applied)."""
    found = event_type(after, before)
    if found == "remediation.step" and after.steps and after.steps[-1].status == "undone":
        return "remediation.undone"
    return found


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn gives &, < and > meaning (links, mentions): a reason must not.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(kind: str, body: dict[str, Any]) -> str:
    """A Slack incoming-webhook body (`text` for notifications, `blocks` for the message)."""
    name, state = body["remediation"], body["state"]
    headline = f"{name} is {state} ({kind})"
    why = f"{body['actor']}: {body['reason']}" if body["reason"] else body["actor"]
    plan = "; ".join(f"{a['kind']} on {a['target']}" for a in body["plan"])
    steps = ", ".join(f"#{s['action']} {s['status']}" for s in body["steps"]) or "none yet"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_slack_escape(headline)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(why)[:2900]}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _slack_escape(f"risk {body['risk']:.2f} | plan: {plan}")[:2900]},
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(f"steps: {steps} | event {body['event_id']}")[:2900],
                },
            ],
        },
    ]
    return json.dumps({"text": _slack_escape(headline), "blocks": blocks}, separators=(",", ":"))


def payload(after: Remediation, event_id: str) -> dict[str, Any]:
    """What a receiver learns: which remediation, its state, the last transition and steps."""
    last = after.history[-1]
    return {
        "remediation": f"remediations/{after.id}",
        "event_id": event_id,
        "state": after.state.value,
        "actor": last.actor,
        "reason": last.reason,
        "risk": after.risk.score,
        "plan": [{"kind": a.kind.value, "target": a.target} for a in after.plan],
        "steps": [{"action": s.action, "status": s.status} for s in after.steps],
    }


class RemediationWebhooks:
    """Announces remediation changes to the webhook subscriptions that want them."""

    def __init__(self, notifier: Notifier, subscriptions: Subscriptions) -> None:
        self.notifier = notifier
        self.subscriptions = subscriptions

    async def _webhooks(self, kind: str, body: dict[str, Any]) -> list[Webhook]:
        found = []
        keys = self.subscriptions.keys
        for subscription in await self.subscriptions.matching(kind):
            if keys is None:
                break
            try:
                key = await keys.key(subscription.signing_secret)
            except Exception as error:  # that subscription misses this event; the others get it
                log.warning(
                    "remediation.webhook_key_unreadable",
                    subscription=subscription.name,
                    error=type(error).__name__,
                )
                continue
            slack = subscription.payload_format == PayloadFormat.SLACK.value
            found.append(Webhook(subscription.uri, key, slack_body(kind, body) if slack else ""))
        return found

    async def announce(self, after: Remediation, before: Remediation | None, event_id: str) -> None:
        """Queue the POSTs for one change (once per remediation version)."""
        kind = webhook_event_type(after, before)
        body = payload(after, event_id)
        try:
            webhooks = await self._webhooks(kind, body)
            if webhooks:
                await self.notifier.emit(f"{after.id}:{after.version}", kind, body, webhooks)
        except Exception as error:  # the transition stands; only its POST is lost
            log.warning("remediation.webhook_not_queued", remediation=after.id, error=type(error).__name__)


class RemediationAudit:
    """Writes one audit event per remediation change."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def announce(self, after: Remediation, before: Remediation | None, event_id: str) -> None:
        """The audit event of one change (never fails the change: the audit log logs its own failures)."""
        last = after.history[-1]
        step = after.steps[-1] if after.steps and event_type(after, before) == "remediation.step" else None
        details = {"event_id": event_id, "transition_reason": last.reason, "transition_actor": last.actor}
        if step is not None:
            details.update(step=str(step.action), step_status=step.status)
        await self._audit.record(
            actor=request_context.principal_name(),
            action=event_type(after, before).replace("remediation.", "debugger.remediations.", 1),
            resource=f"remediations/{after.id}",
            result=after.state.value,
            reason=last.reason,
            request_id=request_context.request_id.get(),
            peer="",
            method="",
            service="debugger",
            details=details,
        )

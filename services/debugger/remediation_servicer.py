"""RemediationService over gRPC: converts protos to domain calls and remediations to protos."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from services.debugger import remediation as model
from services.debugger.remediation_plan import MAX_ACTIONS, MAX_PARAMETERS
from services.debugger.remediation_policies import RemediationPolicies
from services.debugger.remediation_policy_servicer import RemediationPolicyRpcs
from services.debugger.remediation_subscriptions import Subscriptions
from services.debugger.remediations import REMEDIATION, Remediations
from services.debugger.webhook_subscriptions_servicer import WebhookSubscriptionRpcs
from services.runtime import etags, pagination, protos, request_context
from services.runtime.errors import InvalidArgument

# A quiet watch hears a progress event (no remediation, the cursor to resume after) this often.
PROGRESS_INTERVAL_S = 5.0
_STATE_PREFIX = "REMEDIATION_STATE_"
_KIND_PREFIX = "ACTION_KIND_"


def _state_proto(state: model.State | None) -> pb.RemediationState.ValueType:
    if state is None:
        return pb.REMEDIATION_STATE_UNSPECIFIED
    return pb.RemediationState.Value(_STATE_PREFIX + state.value)


def _state(value: int, field: str) -> model.State | None:
    if value not in pb.RemediationState.values():
        raise InvalidArgument.for_field(field, f"{value} is not a RemediationState value")
    if value == pb.REMEDIATION_STATE_UNSPECIFIED:
        return None
    return model.State(
        pb.RemediationState.Name(pb.RemediationState.ValueType(value)).removeprefix(_STATE_PREFIX)
    )


def _action(message: pb.Action, field: str) -> model.Action:
    if message.kind == pb.ACTION_KIND_UNSPECIFIED or message.kind not in pb.ActionKind.values():
        raise InvalidArgument.for_field(
            f"{field}.kind", "must be an ActionKind value other than ACTION_KIND_UNSPECIFIED"
        )
    if len(message.parameters) > MAX_PARAMETERS:
        raise InvalidArgument.for_field(f"{field}.parameters", f"at most {MAX_PARAMETERS}")
    kind = model.ActionKind(pb.ActionKind.Name(message.kind).removeprefix(_KIND_PREFIX))
    return model.Action(kind, message.target, dict(message.parameters), message.reason)


def _transition_proto(t: model.Transition) -> pb.Transition:
    return pb.Transition(
        from_state=_state_proto(t.from_state),
        to_state=_state_proto(t.to_state),
        actor=t.actor,
        time=protos.timestamp(t.time_us),
        reason=t.reason,
    )


def remediation_proto(r: model.Remediation) -> pb.RemediationRecord:
    """A remediation as the contract shows it."""
    return pb.RemediationRecord(
        name=REMEDIATION.format(r.id),
        diagnosis=r.diagnosis,
        plan=[
            pb.Action(
                kind=pb.ActionKind.Value(_KIND_PREFIX + a.kind.value),
                target=a.target,
                parameters=a.parameters,
                reason=a.reason,
            )
            for a in r.plan
        ],
        risk=pb.RiskAssessment(
            score=r.risk.score,
            reasons=r.risk.reasons,
            environment=r.risk.environment,
            production=r.risk.production,
            automatic_threshold=r.risk.automatic_threshold,
        ),
        automatic=r.automatic,
        required_approvals=r.required_approvals,
        approvals=[
            pb.Approval(
                approver=a.approver,
                approve_time=protos.timestamp(a.approve_time_us),
                expire_time=protos.timestamp(a.expire_time_us),
                reason=a.reason,
            )
            for a in r.approvals
        ],
        state=_state_proto(r.state),
        history=[_transition_proto(t) for t in r.history],
        proposer=r.proposer,
        create_time=protos.timestamp(r.create_time_us),
        update_time=protos.timestamp(r.update_time_us or r.create_time_us),
        etag=etags.of(r.version),
        steps=[
            pb.Step(action=s.action, status=s.status, detail=s.detail, idempotency_key=s.idempotency_key)
            for s in r.steps
        ],
        policy=r.policy,
        execute_on_approval=r.execute_on_approval,
    )


def _caller() -> str:
    return request_context.current_caller().name


class RemediationServicer(
    RemediationPolicyRpcs, WebhookSubscriptionRpcs, remediation_pb2_grpc.RemediationServiceServicer
):
    """The RemediationService RPCs (the remediation policies' in RemediationPolicyRpcs, the
    webhook subscriptions' in WebhookSubscriptionRpcs)."""

    def __init__(
        self, remediations: Remediations, policies: RemediationPolicies, subscriptions: Subscriptions
    ) -> None:
        self._remediations = remediations
        self._policies = policies
        self._subscriptions = subscriptions

    async def ProposeRemediation(
        self, request: pb.ProposeRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        if len(request.plan) > MAX_ACTIONS:
            raise InvalidArgument.for_field("plan", f"at most {MAX_ACTIONS} actions")
        if len(request.parameters) > MAX_PARAMETERS:
            raise InvalidArgument.for_field("parameters", f"at most {MAX_PARAMETERS}")
        plan = [_action(a, f"plan[{i}]") for i, a in enumerate(request.plan)]
        remediation = await self._remediations.propose(
            _caller(),
            diagnosis=request.diagnosis,
            target=request.target,
            parameters=dict(request.parameters),
            plan=plan,
            reason=request.reason,
        )
        request_context.note_audit(resource=REMEDIATION.format(remediation.id), state=remediation.state.value)
        return remediation_proto(remediation)

    async def GetRemediation(
        self, request: pb.GetRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        return remediation_proto(await self._remediations.get(request.name))

    async def ListRemediations(
        self, request: pb.ListRemediationsRequest, context: aio.ServicerContext
    ) -> pb.ListRemediationsResponse:
        size = pagination.page_size(request.page_size)
        state = _state(request.state, "state")
        query = ("remediations", request.state, request.target)
        cursor = pagination.decode_token(request.page_token, query)
        found, next_before = await self._remediations.page(
            state=state, target=request.target, before_us=int(cursor) if cursor else None, size=size
        )
        return pb.ListRemediationsResponse(
            remediations=[remediation_proto(r) for r in found],
            next_page_token=pagination.encode_token(str(next_before), query)
            if next_before is not None
            else "",
        )

    async def ApproveRemediation(
        self, request: pb.ApproveRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        remediation = await self._remediations.approve(request.name, _caller(), request.reason, request.etag)
        request_context.note_audit(resource=request.name, state=remediation.state.value)
        return remediation_proto(remediation)

    async def ExecuteRemediation(
        self, request: pb.ExecuteRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        remediation = await self._remediations.execute(request.name, _caller())
        request_context.note_audit(resource=request.name, state=remediation.state.value)
        return remediation_proto(remediation)

    async def RejectRemediation(
        self, request: pb.RejectRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        remediation = await self._remediations.reject(request.name, _caller(), request.reason, request.etag)
        request_context.note_audit(resource=request.name, state=remediation.state.value)
        return remediation_proto(remediation)

    async def CancelRemediation(
        self, request: pb.CancelRemediationRequest, context: aio.ServicerContext
    ) -> pb.RemediationRecord:
        remediation = await self._remediations.cancel(request.name, _caller(), request.reason, request.etag)
        request_context.note_audit(resource=request.name, state=remediation.state.value)
        return remediation_proto(remediation)

    async def WatchRemediations(
        self, request: pb.WatchRemediationsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.RemediationEvent]:
        loop = asyncio.get_running_loop()
        told = loop.time()
        async for event_id, remediation in self._remediations.watch(request.after_event_id, block_ms=1000):
            if remediation is not None:
                told = loop.time()
                yield pb.RemediationEvent(
                    event_id=event_id,
                    remediation=remediation_proto(remediation),
                    transition=_transition_proto(remediation.history[-1]),
                )
            elif loop.time() - told >= PROGRESS_INTERVAL_S:
                told = loop.time()
                yield pb.RemediationEvent(event_id=event_id)

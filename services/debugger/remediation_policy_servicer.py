"""The remediation-policy RPCs of RemediationService (a mixin of RemediationServicer): protos to
domain calls and policies to protos."""

from __future__ import annotations

from google.protobuf import empty_pb2
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as dpb
from devmesh.debugger.v1 import remediation_pb2 as pb
from services.debugger.remediation import ActionKind
from services.debugger.remediation_policies import MAX_TARGETS, RemediationPolicies, RemediationPolicy
from services.debugger.taxonomy import Category
from services.runtime import etags, pagination, protos, request_context
from services.runtime.errors import InvalidArgument

_KIND_PREFIX = "ACTION_KIND_"
_CATEGORY_PREFIX = "CATEGORY_"
# Fields a mask-less update takes when they are set (AIP-134).
_SCALARS = ("description", "threshold", "execute_on_approval", "disabled")
_LISTS = ("categories", "targets", "actions", "thresholds", "parameters")


def _policy(message: pb.RemediationPolicy) -> RemediationPolicy:
    if len(message.targets) > MAX_TARGETS:
        raise InvalidArgument.for_field("remediation_policy.targets", f"at most {MAX_TARGETS}")
    actions = set()
    for index, kind in enumerate(message.actions):
        if kind == pb.ACTION_KIND_UNSPECIFIED or kind not in pb.ActionKind.values():
            raise InvalidArgument.for_field(
                f"remediation_policy.actions[{index}]",
                "must be an ActionKind other than ACTION_KIND_UNSPECIFIED",
            )
        actions.add(ActionKind(pb.ActionKind.Name(kind).removeprefix(_KIND_PREFIX)))
    categories = set()
    for index, category in enumerate(message.categories):
        if category == dpb.CATEGORY_UNSPECIFIED or category not in dpb.Category.values():
            raise InvalidArgument.for_field(
                f"remediation_policy.categories[{index}]",
                "must be a Category other than CATEGORY_UNSPECIFIED",
            )
        categories.add(Category(dpb.Category.Name(category).removeprefix(_CATEGORY_PREFIX)))
    return RemediationPolicy(
        id="",
        targets=tuple(message.targets),
        actions=frozenset(actions),
        categories=frozenset(categories),
        description=message.description,
        threshold=message.threshold,
        thresholds=dict(message.thresholds),
        parameters=dict(message.parameters),
        execute_on_approval=message.execute_on_approval,
        disabled=message.disabled,
    )


def policy_proto(policy: RemediationPolicy) -> pb.RemediationPolicy:
    """A remediation policy as the contract shows it."""
    return pb.RemediationPolicy(
        name=policy.name,
        description=policy.description,
        categories=sorted(dpb.Category.Value(_CATEGORY_PREFIX + c.value) for c in policy.categories),
        targets=policy.targets,
        actions=sorted(pb.ActionKind.Value(_KIND_PREFIX + a.value) for a in policy.actions),
        threshold=policy.threshold,
        thresholds=policy.thresholds,
        parameters=policy.parameters,
        execute_on_approval=policy.execute_on_approval,
        disabled=policy.disabled,
        create_time=protos.timestamp(policy.create_time_us),
        update_time=protos.timestamp(policy.update_time_us),
        etag=etags.of(policy.version),
    )


class RemediationPolicyRpcs:
    """CreateRemediationPolicy, GetRemediationPolicy, ListRemediationPolicies,
    UpdateRemediationPolicy, DeleteRemediationPolicy."""

    _policies: RemediationPolicies

    async def CreateRemediationPolicy(
        self, request: pb.CreateRemediationPolicyRequest, context: aio.ServicerContext
    ) -> pb.RemediationPolicy:
        created = await self._policies.create(
            request.remediation_policy_id, _policy(request.remediation_policy)
        )
        request_context.note_audit(resource=created.name)
        return policy_proto(created)

    async def GetRemediationPolicy(
        self, request: pb.GetRemediationPolicyRequest, context: aio.ServicerContext
    ) -> pb.RemediationPolicy:
        return policy_proto(await self._policies.get(request.name))

    async def ListRemediationPolicies(
        self, request: pb.ListRemediationPoliciesRequest, context: aio.ServicerContext
    ) -> pb.ListRemediationPoliciesResponse:
        size = pagination.page_size(request.page_size)
        query = ("remediationPolicies",)
        after = pagination.decode_token(request.page_token, query) or ""
        found, next_after = await self._policies.page(after, size)
        return pb.ListRemediationPoliciesResponse(
            remediation_policies=[policy_proto(p) for p in found],
            next_page_token=pagination.encode_token(next_after, query) if next_after else "",
        )

    async def UpdateRemediationPolicy(
        self, request: pb.UpdateRemediationPolicyRequest, context: aio.ServicerContext
    ) -> pb.RemediationPolicy:
        message = request.remediation_policy
        paths = list(request.update_mask.paths) or [
            *(f for f in _SCALARS if getattr(message, f)),
            *(f for f in _LISTS if len(getattr(message, f))),
        ]
        updated = await self._policies.update(message.name, _policy(message), paths, message.etag)
        request_context.note_audit(resource=updated.name)
        return policy_proto(updated)

    async def DeleteRemediationPolicy(
        self, request: pb.DeleteRemediationPolicyRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._policies.delete(request.name, request.etag)
        request_context.note_audit(resource=request.name)
        return empty_pb2.Empty()

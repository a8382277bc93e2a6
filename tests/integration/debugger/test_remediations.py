"""Remediations: proposed from a diagnosis or a plan, risk-assessed, approved by the policy or by
people (never the proposer, two in production), rejected for good, listed, and refused clearly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as dpb
from devmesh.debugger.v1 import debugger_pb2_grpc, remediation_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as pb
from services.debugger import app as debugger_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, error_info, key_metadata, mint_key, refused, violated_fields
from tests.integration.debugger.test_analyze_pod import _request as pod_request
from tools.stack.valkey import Valkey


@dataclass(frozen=True)
class Mesh:
    """A debugger with auth on, and three operators who may propose and approve."""

    remediations: remediation_pb2_grpc.RemediationServiceStub
    debugger: debugger_pb2_grpc.DebuggerServiceStub
    alice: Metadata
    bob: Metadata
    carol: Metadata


@pytest.fixture(scope="module")
async def mesh(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Mesh]:
    server, addr = await start_config_server(
        valkey.url, specs=[debugger_app.SPEC], **openbao.settings("debugger")
    )
    alice, bob, carol = [key_metadata(await mint_key(server, "operator", display_name=n)) for n in "abc"]
    async with aio.insecure_channel(addr) as channel:
        yield Mesh(
            remediation_pb2_grpc.RemediationServiceStub(channel),
            debugger_pb2_grpc.DebuggerServiceStub(channel),
            alice,
            bob,
            carol,
        )


def _deployment(namespace: str = "staging") -> str:
    return f"namespaces/{namespace}/deployments/d{uuid.uuid4().hex[:10]}"


def _environment(environment: str = "staging") -> str:
    return f"namespaces/n{uuid.uuid4().hex[:10]}/environments/{environment}"


def _rollback(target: str) -> pb.ProposeRemediationRequest:
    return pb.ProposeRemediationRequest(
        plan=[pb.Action(kind=pb.ACTION_KIND_CONFIG_ROLLBACK, target=target, parameters={"revision": "3"})],
        reason="the last change broke its consumer",
    )


async def test_a_low_risk_plan_is_approved_by_the_policy_and_its_history_says_so(mesh: Mesh) -> None:
    request = pb.ProposeRemediationRequest(
        plan=[pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=_deployment())]
    )
    made = await mesh.remediations.ProposeRemediation(request, metadata=mesh.alice)
    assert made.automatic and made.required_approvals == 0
    assert made.state == pb.REMEDIATION_STATE_APPROVED
    assert made.risk.score < made.risk.automatic_threshold
    assert made.risk.reasons and "KUBERNETES_RESTART" in made.risk.reasons[0]
    assert [(t.from_state, t.to_state, t.actor) for t in made.history] == [
        (pb.REMEDIATION_STATE_UNSPECIFIED, pb.REMEDIATION_STATE_AWAITING_APPROVAL, made.proposer),
        (pb.REMEDIATION_STATE_AWAITING_APPROVAL, pb.REMEDIATION_STATE_APPROVED, "policy"),
    ]
    assert (
        await mesh.remediations.GetRemediation(pb.GetRemediationRequest(name=made.name), metadata=mesh.bob)
        == made
    )


async def test_a_config_rollback_waits_for_an_approval_by_someone_other_than_the_proposer(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(_rollback(_environment()), metadata=mesh.alice)
    assert made.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL and made.required_approvals == 1
    error = await refused(
        mesh.remediations.ApproveRemediation,
        pb.ApproveRemediationRequest(name=made.name),
        metadata=mesh.alice,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "SELF_APPROVAL"
    approved = await mesh.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name, reason="looks right", etag=made.etag), metadata=mesh.bob
    )
    assert approved.state == pb.REMEDIATION_STATE_APPROVED
    assert [a.approver for a in approved.approvals] == [approved.history[-1].actor]
    assert approved.history[-1].actor != made.proposer and approved.history[-1].reason == "looks right"
    assert (
        approved.approvals[0].expire_time.ToMicroseconds()
        > approved.approvals[0].approve_time.ToMicroseconds()
    )


async def test_production_needs_two_distinct_approvers(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(_rollback(_environment("prod")), metadata=mesh.alice)
    assert made.risk.production and made.required_approvals == 2
    assert any("production" in reason for reason in made.risk.reasons)
    once = await mesh.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name), metadata=mesh.bob
    )
    assert once.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL and len(once.approvals) == 1
    error = await refused(
        mesh.remediations.ApproveRemediation, pb.ApproveRemediationRequest(name=made.name), metadata=mesh.bob
    )
    assert error_info(error).reason == "ALREADY_APPROVED"
    twice = await mesh.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name), metadata=mesh.carol
    )
    assert twice.state == pb.REMEDIATION_STATE_APPROVED
    assert len({a.approver for a in twice.approvals}) == 2


async def test_a_rejection_is_final(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(_rollback(_environment()), metadata=mesh.alice)
    rejected = await mesh.remediations.RejectRemediation(
        pb.RejectRemediationRequest(name=made.name, reason="wrong revision"), metadata=mesh.bob
    )
    assert rejected.state == pb.REMEDIATION_STATE_REJECTED and rejected.history[-1].reason == "wrong revision"
    for call, request in (
        (mesh.remediations.ApproveRemediation, pb.ApproveRemediationRequest(name=made.name)),
        (mesh.remediations.CancelRemediation, pb.CancelRemediationRequest(name=made.name)),
        (mesh.remediations.RejectRemediation, pb.RejectRemediationRequest(name=made.name)),
    ):
        error = await refused(call, request, metadata=mesh.carol)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    read = await mesh.remediations.GetRemediation(pb.GetRemediationRequest(name=made.name), metadata=mesh.bob)
    assert read.state == pb.REMEDIATION_STATE_REJECTED


async def test_two_approvers_at_once_make_one_transition(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(_rollback(_environment()), metadata=mesh.alice)
    results = await asyncio.gather(
        *(
            mesh.remediations.ApproveRemediation(pb.ApproveRemediationRequest(name=made.name), metadata=who)
            for who in (mesh.bob, mesh.carol)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, pb.RemediationRecord)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION)
    read = await mesh.remediations.GetRemediation(pb.GetRemediationRequest(name=made.name), metadata=mesh.bob)
    assert len(read.approvals) == 1 and len(read.history) == 2


async def test_a_stale_etag_is_aborted_and_changes_nothing(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(_rollback(_environment()), metadata=mesh.alice)
    await mesh.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name), metadata=mesh.bob
    )
    error = await refused(
        mesh.remediations.CancelRemediation,
        pb.CancelRemediationRequest(name=made.name, etag=made.etag),
        metadata=mesh.alice,
    )
    assert error.code() == grpc.StatusCode.ABORTED
    read = await mesh.remediations.GetRemediation(pb.GetRemediationRequest(name=made.name), metadata=mesh.bob)
    assert read.state == pb.REMEDIATION_STATE_APPROVED


async def test_a_target_with_too_many_automatic_fixes_escalates_to_approval(mesh: Mesh) -> None:
    request = pb.ProposeRemediationRequest(
        plan=[pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=_deployment())]
    )
    made = [await mesh.remediations.ProposeRemediation(request, metadata=mesh.alice) for _ in range(4)]
    assert [m.automatic for m in made] == [True, True, True, False]
    assert made[-1].state == pb.REMEDIATION_STATE_AWAITING_APPROVAL and made[-1].required_approvals == 1
    assert "automatic remediations" in made[-1].risk.reasons[-1]


async def test_an_oom_killed_pod_diagnosis_becomes_a_memory_limit_plan(mesh: Mesh) -> None:
    diagnosis = await mesh.debugger.AnalyzePod(pod_request("oomkilled"), metadata=mesh.alice)
    target = _deployment()
    made = await mesh.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(diagnosis=diagnosis.name, target=target, parameters={"factor": "1.5"}),
        metadata=mesh.alice,
    )
    (action,) = made.plan
    assert action.kind == pb.ACTION_KIND_KUBERNETES_RAISE_MEMORY_LIMIT and action.target == target
    assert action.parameters["container"] and action.parameters["current_limit"]
    assert action.parameters["factor"] == "1.5"
    assert made.diagnosis == diagnosis.name
    assert any("confidence" in reason for reason in made.risk.reasons) or diagnosis.confidence == 1.0


@pytest.mark.parametrize(
    ("target", "parameters", "field"),
    [
        ("Bad Target", {}, "target"),
        (None, {"factor": "100"}, "parameters['factor']"),
        (None, {"current_limit": "lots"}, "parameters['current_limit']"),
    ],
)
async def test_a_plan_made_from_a_diagnosis_names_the_request_fields_it_came_from(
    mesh: Mesh, target: str | None, parameters: dict[str, str], field: str
) -> None:
    diagnosis = await mesh.debugger.AnalyzePod(pod_request("oomkilled"), metadata=mesh.alice)
    request = pb.ProposeRemediationRequest(
        diagnosis=diagnosis.name, target=target or _deployment(), parameters=parameters
    )
    error = await refused(mesh.remediations.ProposeRemediation, request, metadata=mesh.alice)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]


async def test_a_secret_promotion_without_the_secrets_service_as_a_peer_is_refused_at_execution(
    mesh: Mesh,
) -> None:
    action = pb.Action(
        kind=pb.ACTION_KIND_SECRET_PROMOTE_VERSION, target="secrets/db-password", parameters={"version": "2"}
    )
    made = await mesh.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(plan=[action]), metadata=mesh.alice
    )
    assert made.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL  # proposing it is no longer refused
    approved = await mesh.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name, etag=made.etag), metadata=mesh.bob
    )
    assert approved.state == pb.REMEDIATION_STATE_APPROVED
    error = await refused(
        mesh.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name), metadata=mesh.bob
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "NO_EXECUTOR"
    assert "DEVMESH_PEERS secrets=" in (error.details() or "")


async def test_a_pipeline_rerun_without_the_pipeline_as_a_peer_is_refused_saying_what_is_missing(
    mesh: Mesh,
) -> None:
    job = f"projects/web/pipelines/ci/runs/r{uuid.uuid4().hex[:8]}/jobs/test"
    made = await mesh.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(plan=[pb.Action(kind=pb.ACTION_KIND_PIPELINE_RERUN, target=job)]),
        metadata=mesh.alice,
    )
    assert made.state == pb.REMEDIATION_STATE_APPROVED and made.automatic
    error = await refused(
        mesh.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name), metadata=mesh.bob
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "NO_EXECUTOR"
    assert "DEVMESH_PEERS pipeline=" in (error.details() or "")


async def test_remediations_list_by_state_and_target_page_by_page(mesh: Mesh) -> None:
    target = _environment()
    made = [
        await mesh.remediations.ProposeRemediation(_rollback(target), metadata=mesh.alice) for _ in range(3)
    ]
    await mesh.remediations.CancelRemediation(
        pb.CancelRemediationRequest(name=made[1].name), metadata=mesh.alice
    )
    first = await mesh.remediations.ListRemediations(
        pb.ListRemediationsRequest(target=target, page_size=2), metadata=mesh.bob
    )
    second = await mesh.remediations.ListRemediations(
        pb.ListRemediationsRequest(target=target, page_size=2, page_token=first.next_page_token),
        metadata=mesh.bob,
    )
    assert [r.name for r in (*first.remediations, *second.remediations)] == [m.name for m in reversed(made)]
    assert second.next_page_token == ""
    cancelled = await mesh.remediations.ListRemediations(
        pb.ListRemediationsRequest(target=target, state=pb.REMEDIATION_STATE_CANCELLED), metadata=mesh.bob
    )
    assert [r.name for r in cancelled.remediations] == [made[1].name]
    error = await refused(
        mesh.remediations.ListRemediations,
        pb.ListRemediationsRequest(target=_environment(), page_token=first.next_page_token),
        metadata=mesh.bob,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (pb.Action(target="namespaces/ns/deployments/web"), "plan[0].kind"),
        (pb.Action(kind=pb.ACTION_KIND_CONFIG_ROLLBACK, target="Bad Target"), "plan[0].target"),
        (
            pb.Action(kind=pb.ACTION_KIND_CONFIG_ROLLBACK, target="namespaces/ns/environments/env"),
            "plan[0].parameters['revision']",
        ),
        (
            pb.Action(
                kind=pb.ACTION_KIND_KUBERNETES_RAISE_MEMORY_LIMIT,
                target="namespaces/ns/deployments/web",
                parameters={"container": "app", "current_limit": "256Mi", "factor": "100"},
            ),
            "plan[0].parameters['factor']",
        ),
        (
            pb.Action(
                kind=pb.ACTION_KIND_KUBERNETES_RESTART,
                target="namespaces/ns/deployments/web",
                parameters={"x": "1"},
            ),
            "plan[0].parameters['x']",
        ),
        (
            pb.Action(
                kind=pb.ACTION_KIND_KUBERNETES_RAISE_MEMORY_LIMIT,
                target="namespaces/ns/deployments/web",
                parameters={"container": "app", "current_limit": "a lot"},
            ),
            "plan[0].parameters['current_limit']",
        ),
        (
            pb.Action(
                kind=pb.ACTION_KIND_KUBERNETES_ROLLBACK,
                target="namespaces/ns/deployments/web",
                parameters={"container": "app", "image": "not an image"},
            ),
            "plan[0].parameters['image']",
        ),
    ],
)
async def test_a_malformed_action_is_refused_naming_its_field(
    mesh: Mesh, action: pb.Action, field: str
) -> None:
    error = await refused(
        mesh.remediations.ProposeRemediation, pb.ProposeRemediationRequest(plan=[action]), metadata=mesh.alice
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(error)


async def test_calls_need_credentials_and_an_awaiting_remediation_does_not_execute(mesh: Mesh) -> None:
    made = await mesh.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(
            plan=[pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=_deployment())]
        ),
        metadata=mesh.alice,
    )
    error = await refused(mesh.remediations.ExecuteRemediation, pb.ExecuteRemediationRequest(name=made.name))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    waiting = await mesh.remediations.ProposeRemediation(_rollback(_environment()), metadata=mesh.alice)
    error = await refused(
        mesh.remediations.ExecuteRemediation,
        pb.ExecuteRemediationRequest(name=waiting.name),
        metadata=mesh.bob,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "NOT_APPROVED"
    error = await refused(mesh.remediations.GetRemediation, pb.GetRemediationRequest(name=made.name))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(
        mesh.remediations.GetRemediation,
        pb.GetRemediationRequest(name="remediations/rnothere"),
        metadata=mesh.bob,
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_diagnosis_that_suggests_nothing_executable_is_a_failed_precondition(mesh: Mesh) -> None:
    diagnosis = await mesh.debugger.AnalyzeLog(
        dpb.AnalyzeLogRequest(text="hello\nbye\n"), metadata=mesh.alice
    )
    error = await refused(
        mesh.remediations.ProposeRemediation,
        pb.ProposeRemediationRequest(diagnosis=diagnosis.name, target=_deployment()),
        metadata=mesh.alice,
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "NOTHING_EXECUTABLE"


async def test_a_watch_needs_credentials(mesh: Mesh) -> None:
    call = mesh.remediations.WatchRemediations(pb.WatchRemediationsRequest())
    error = await refused(call.read)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_kubernetes_rollback_ends_in_dry_run_with_the_validated_patch_it_would_apply(
    mesh: Mesh,
) -> None:
    target = _deployment()
    action = pb.Action(
        kind=pb.ACTION_KIND_KUBERNETES_ROLLBACK,
        target=target,
        parameters={"container": "api", "image": "registry.local/shop/api:1.4.2", "revision": "7"},
    )
    made = await mesh.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(plan=[action]), metadata=mesh.alice
    )
    if made.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL:
        made = await mesh.remediations.ApproveRemediation(
            pb.ApproveRemediationRequest(name=made.name), metadata=mesh.bob
        )
    done = await mesh.remediations.ExecuteRemediation(
        pb.ExecuteRemediationRequest(name=made.name), metadata=mesh.bob
    )
    assert done.state == pb.REMEDIATION_STATE_DRY_RUN
    (step,) = done.steps
    detail = json.loads(step.detail)
    assert step.status == "dry_run" and detail["dryRun"] is True and detail["target"] == target
    assert detail["patch"]["spec"]["template"]["spec"]["containers"] == [
        {"name": "api", "image": "registry.local/shop/api:1.4.2"}
    ]

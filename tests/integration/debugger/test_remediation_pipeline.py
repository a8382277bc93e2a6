"""Pipeline remediations against a real pipeline service and worker: a run whose step fails on a
flaky network call is re-run by the background executor and verified; a re-run that fails again
fails the remediation; a stuck run is cancelled; and the whole chain: a failed job's log gets a
network diagnosis, a remediation policy proposes an automatic re-run with backoff, the
background executor re-runs the job and verifies it succeeded, all on the watch and audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as dpb
from devmesh.debugger.v1 import debugger_pb2_grpc, remediation_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.pipeline.v1 import runs_pb2
from services.runtime import audit
from services.runtime.server import Server
from tests.helpers import eventually
from tests.integration.debugger.conftest import executing_debugger
from tests.integration.debugger.pipeline_stack import (
    EXECUTOR,
    FINAL,
    Pipeline,
    failed_run,
    finished,
    fresh_id,
    pipeline,
    rerun_plan,
)
from tests.integration.pipeline.runs_harness import job
from tools.stack.valkey import start_valkey

__all__ = ["pipeline"]  # the module's fixture


@dataclass(frozen=True)
class Debugger:
    """A debugger whose peer is the pipeline server, its stubs, and the server (for its audit log)."""

    remediations: remediation_pb2_grpc.RemediationServiceStub
    diagnoses: debugger_pb2_grpc.DebuggerServiceStub
    server: Server


@pytest.fixture(scope="module")
async def debugger(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Debugger]:
    # A Valkey of its own: no other test's automatic remediations are due to its executor.
    own = start_valkey(tmp_path_factory.mktemp("debugger-valkey"))
    running = executing_debugger(own.url, EXECUTOR, peers=(("pipeline", pipeline.addr),))
    try:
        async with running as (server, addr), aio.insecure_channel(addr) as channel:
            yield Debugger(
                remediation_pb2_grpc.RemediationServiceStub(channel),
                debugger_pb2_grpc.DebuggerServiceStub(channel),
                server,
            )
    finally:
        own.process.stop()


@pytest.fixture
def remediations(debugger: Debugger) -> remediation_pb2_grpc.RemediationServiceStub:
    return debugger.remediations


async def test_an_automatic_rerun_with_backoff_is_executed_in_the_background_and_verified(
    pipeline: Pipeline, remediations: remediation_pb2_grpc.RemediationServiceStub
) -> None:
    run = await failed_run(pipeline)
    made = await remediations.ProposeRemediation(rerun_plan(run))
    assert made.automatic and made.state == pb.REMEDIATION_STATE_APPROVED
    done = await finished(remediations, made.name)
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    assert [t.to_state for t in done.history][-2:] == [
        pb.REMEDIATION_STATE_EXECUTING,
        pb.REMEDIATION_STATE_SUCCEEDED,
    ]
    assert done.history[2].actor == "executor"  # nobody called ExecuteRemediation
    after = await pipeline.mesh.get(run.name)
    assert after is not None and after.state == runs_pb2.RUN_STATE_SUCCEEDED and after.rerun_count == 1
    (fetch,) = after.jobs
    assert [a.state for a in fetch.attempts] == [runs_pb2.JOB_STATE_FAILED, runs_pb2.JOB_STATE_SUCCEEDED]


async def test_a_rerun_that_fails_again_fails_the_remediation_with_the_reason(
    pipeline: Pipeline, remediations: remediation_pb2_grpc.RemediationServiceStub
) -> None:
    name = await pipeline.mesh.pipeline({"jobs": [job("fetch", "exit 6")]}, pipeline_id=fresh_id())
    run = await pipeline.mesh.until((await pipeline.mesh.run(name)).name)
    made = await remediations.ProposeRemediation(rerun_plan(run))
    done = await finished(remediations, made.name)
    assert done.state == pb.REMEDIATION_STATE_FAILED
    assert (
        "verification of action 0 failed" in done.history[-1].reason
        and "fetch FAILED" in done.history[-1].reason
    )


async def test_a_stuck_run_is_cancelled_and_the_cancellation_verified(
    pipeline: Pipeline, remediations: remediation_pb2_grpc.RemediationServiceStub
) -> None:
    name = await pipeline.mesh.pipeline({"jobs": [job("stuck", "sleep 600")]}, pipeline_id=fresh_id())
    run = await pipeline.mesh.run(name)
    await pipeline.mesh.job_in(run.name, "stuck", runs_pb2.JOB_STATE_RUNNING)
    action = pb.Action(kind=pb.ACTION_KIND_PIPELINE_CANCEL_RUN, target=run.name)
    made = await remediations.ProposeRemediation(pb.ProposeRemediationRequest(plan=[action]))
    done = await finished(remediations, made.name)
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    after = await pipeline.mesh.get(run.name)
    assert after is not None and after.state == runs_pb2.RUN_STATE_CANCELLED


async def test_a_flaky_network_failure_is_diagnosed_re_run_by_a_policy_and_succeeds_all_watched_and_audited(
    pipeline: Pipeline, debugger: Debugger
) -> None:
    policy = await debugger.remediations.CreateRemediationPolicy(
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id=f"flaky-{fresh_id()}",
            remediation_policy=pb.RemediationPolicy(
                categories=[dpb.CATEGORY_NETWORK],
                targets=[f"projects/{pipeline.mesh.project}/"],
                actions=[pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF],
                threshold=0.5,
                parameters={"delay": "100ms"},
            ),
        )
    )
    watch = debugger.remediations.WatchRemediations(pb.WatchRemediationsRequest())
    run = await failed_run(pipeline)
    (fetch,) = run.jobs
    log = await pipeline.mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=fetch.attempts[0].name))
    diagnosis = await debugger.diagnoses.AnalyzeLog(
        dpb.AnalyzeLogRequest(
            text="\n".join(log.lines),
            kind=dpb.LOG_KIND_CI_JOB,
            context=dpb.AnalysisContext(job=f"{run.name}/jobs/fetch"),
        )
    )
    assert diagnosis.category == dpb.CATEGORY_NETWORK
    seen: list[pb.RemediationEvent] = []
    async with asyncio.timeout(60):  # a chain that breaks fails the test instead of hanging it
        async for event in watch:
            if event.remediation.diagnosis == diagnosis.name:
                seen.append(event)
                if event.remediation.state in FINAL:
                    break
    watch.cancel()
    done = seen[-1].remediation
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    assert done.policy == policy.name and done.proposer == policy.name and done.automatic
    assert list(dict.fromkeys(e.remediation.state for e in seen)) == [
        pb.REMEDIATION_STATE_APPROVED,  # the proposal, approved by the risk policy at once
        pb.REMEDIATION_STATE_EXECUTING,  # and its steps, recorded before and after the re-run
        pb.REMEDIATION_STATE_SUCCEEDED,
    ]
    after = await pipeline.mesh.get(run.name)
    assert after is not None and after.state == runs_pb2.RUN_STATE_SUCCEEDED and after.rerun_count == 1

    async def audited() -> list[str]:
        entries = await debugger.server.runtime.redis.xrevrange(audit.STREAM, count=2000)
        actions = [
            f[b"action"].decode() for _, f in reversed(entries) if f[b"resource"].decode() == done.name
        ]
        return actions if "debugger.remediations.succeeded" in actions else []

    actions = await eventually(audited, "the audit log to have the success")
    assert actions[0] == "debugger.remediations.proposed" and "debugger.remediations.executing" in actions


async def test_a_policys_remediation_that_needs_approval_executes_once_approved_without_an_execute_call(
    pipeline: Pipeline, debugger: Debugger
) -> None:
    run = await failed_run(pipeline)
    await debugger.remediations.CreateRemediationPolicy(
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id=f"approve-{fresh_id()}",  # sorts before the chain test's `flaky-`: first match
            remediation_policy=pb.RemediationPolicy(
                targets=[f"{run.name}/"],
                actions=[pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF],
                threshold=0.01,  # everything needs an approval
                execute_on_approval=True,
                parameters={"delay": "100ms"},
            ),
        )
    )
    (fetch,) = run.jobs
    log = await pipeline.mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=fetch.attempts[0].name))
    await debugger.diagnoses.AnalyzeLog(
        dpb.AnalyzeLogRequest(
            text="\n".join(log.lines), context=dpb.AnalysisContext(job=f"{run.name}/jobs/fetch")
        )
    )
    listed = await debugger.remediations.ListRemediations(
        pb.ListRemediationsRequest(target=f"{run.name}/jobs/fetch")
    )
    (made,) = listed.remediations
    assert made.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL and made.execute_on_approval
    # With auth off the caller is `anonymous`, not the policy that proposed it: it may approve.
    await debugger.remediations.ApproveRemediation(
        pb.ApproveRemediationRequest(name=made.name, etag=made.etag)
    )
    done = await finished(debugger.remediations, made.name)
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    after = await pipeline.mesh.get(run.name)
    assert after is not None and after.rerun_count == 1

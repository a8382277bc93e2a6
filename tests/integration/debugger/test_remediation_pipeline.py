"""Pipeline remediations against a real pipeline service and worker: a run whose step fails on a
flaky network call is re-run by the background executor and verified; a re-run that fails again
fails the remediation; a stuck run is cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.pipeline.v1 import runs_pb2
from services.debugger import app as debugger_app
from tests.conftest import ServerFactory
from tests.integration.debugger.pipeline_stack import (
    EXECUTOR,
    Pipeline,
    failed_run,
    finished,
    fresh_id,
    pipeline,
    rerun_plan,
)
from tests.integration.pipeline.runs_harness import job
from tools.stack.valkey import Valkey

__all__ = ["pipeline"]  # the module's fixture


@pytest.fixture(scope="module")
async def remediations(
    valkey: Valkey, start_config_server: ServerFactory, pipeline: Pipeline
) -> AsyncIterator[remediation_pb2_grpc.RemediationServiceStub]:
    _, addr = await start_config_server(
        valkey.url, env=EXECUTOR, specs=[debugger_app.SPEC], peers=(("pipeline", pipeline.addr),)
    )
    async with aio.insecure_channel(addr) as channel:
        yield remediation_pb2_grpc.RemediationServiceStub(channel)


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

"""The issue's first done-criterion with nobody in the loop: a pipeline whose step fails on a
flaky network call (a closed loopback port, once) is diagnosed `network` by the debugger
following the pipeline's failures, a remediation policy proposes an automatic re-run with
backoff, the background executor re-runs the failed job, and the run succeeds; the test makes
no AnalyzeLog or AnalyzeJob call for it. The remediation's states are on the watch and its
proposal and execution in the audit log. A failure announced again, and a fresh re-analysis
of the same attempt, do not propose a second remediation.

Everything runs on a Valkey of its own: the executor and the failure follower would otherwise
act on other tests' runs and remediations."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as dpb
from devmesh.debugger.v1 import debugger_pb2_grpc, remediation_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services import catalog
from services.debugger.failure_follower import STREAM as FAILURES
from services.pipeline import app as pipeline_app
from services.runtime import audit, redis_client
from services.runtime.server import Runtime, Server
from services.runtime.settings import RuntimeSettings
from tests.conftest import TEST_ENV
from tests.helpers import eventually
from tests.integration.debugger.conftest import executing_debugger
from tests.integration.debugger.job_mesh import DEBUGGER_ENV, free_port
from tests.integration.debugger.pipeline_stack import EXECUTOR, FINAL
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh, job
from tools.stack.valkey import start_valkey


@dataclass(frozen=True)
class Chain:
    """A pipeline with a worker, and a debugger following its failures with its executor on."""

    mesh: Mesh
    remediations: remediation_pb2_grpc.RemediationServiceStub
    diagnoses: debugger_pb2_grpc.DebuggerServiceStub
    debugger: Server
    markers: Path


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    valkey = start_valkey(tmp_path / "valkey")
    (tmp_path / "work").mkdir()
    (tmp_path / "markers").mkdir()
    settings = RuntimeSettings(redis_url=valkey.url, grpc_addr="127.0.0.1:0", health_interval=0.2,
                               insecure=True, auth="off")  # type: ignore[call-arg]  # fmt: skip
    runtime = Runtime(settings, redis_client.connect(valkey.url, settings.redis_timeout),
                      {**TEST_ENV, **RUN_ENV}, None)  # fmt: skip
    pipeline = Server(runtime, [pipeline_app.SPEC], mesh=catalog.every())
    mesh: Mesh | None = None
    try:
        pipeline_addr = f"127.0.0.1:{await pipeline.start()}"
        debugging = executing_debugger(valkey.url, {**EXECUTOR, **DEBUGGER_ENV},
                                       peers=(("pipeline", pipeline_addr),))  # fmt: skip
        async with (
            debugging as (debugger, debugger_addr),
            aio.insecure_channel(pipeline_addr) as to_pipeline,
            aio.insecure_channel(debugger_addr) as to_debugger,
        ):
            pipelines = pipeline_pb2_grpc.PipelineServiceStub(to_pipeline)
            project = f"p-{uuid.uuid4().hex[:12]}"
            await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
            mesh = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(to_pipeline), valkey,
                        f"t{uuid.uuid4().hex[:10]}", project, tmp_path / "work")  # fmt: skip
            mesh.start_worker()
            yield Chain(
                mesh,
                remediation_pb2_grpc.RemediationServiceStub(to_debugger),
                debugger_pb2_grpc.DebuggerServiceStub(to_debugger),
                debugger,
                tmp_path / "markers",
            )
    finally:
        if mesh is not None:
            mesh.stop_workers()
        await pipeline.stop(0.5)
        await runtime.aclose()
        valkey.process.stop()


def refused_connect(port: int) -> str:
    """A step connecting to a closed loopback port: refused."""
    return (
        f"{sys.executable} -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/')\""
    )


def flaky_connect(marker: Path, port: int) -> str:
    """A step whose first run is refused a connection and whose later runs succeed: the marker
    lives outside the job's workspace, so the re-run finds it."""
    return f"if [ -e {marker} ]; then echo fetched; else touch {marker}; {refused_connect(port)}; fi"


async def _audited(debugger: Server, resource: str) -> list[str]:
    entries = await debugger.runtime.redis.xrevrange(audit.STREAM, count=2000)
    actions = [f[b"action"].decode() for _, f in reversed(entries) if f[b"resource"].decode() == resource]
    return actions if "debugger.remediations.succeeded" in actions else []


async def test_a_flaky_network_failure_is_diagnosed_remediated_and_succeeds_with_nobody_asking(
    chain: Chain,
) -> None:
    policy = await chain.remediations.CreateRemediationPolicy(
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id="flaky-network",
            remediation_policy=pb.RemediationPolicy(
                categories=[dpb.CATEGORY_NETWORK],
                targets=[f"projects/{chain.mesh.project}/"],
                actions=[pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF],
                threshold=0.5,
                parameters={"delay": "100ms"},
            ),
        )
    )
    watch = chain.remediations.WatchRemediations(pb.WatchRemediationsRequest())
    step = flaky_connect(chain.markers / "connected-once", free_port())
    name = await chain.mesh.pipeline({"jobs": [job("fetch", step)]})
    run = await chain.mesh.run(name)
    target = f"{run.name}/jobs/fetch"
    seen: list[pb.RemediationEvent] = []
    async with asyncio.timeout(90):  # a chain that breaks fails the test instead of hanging it
        async for event in watch:
            if any(a.target == target for a in event.remediation.plan):
                seen.append(event)
                if event.remediation.state in FINAL:
                    break
    watch.cancel()
    done = seen[-1].remediation
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    assert done.policy == policy.name and done.automatic
    diagnosis = await chain.diagnoses.GetDiagnosis(dpb.GetDiagnosisRequest(name=done.diagnosis))
    assert diagnosis.category == dpb.CATEGORY_NETWORK and diagnosis.attempt == 1
    assert list(dict.fromkeys(e.remediation.state for e in seen)) == [
        pb.REMEDIATION_STATE_APPROVED,  # proposed, and approved by the risk policy at once
        pb.REMEDIATION_STATE_EXECUTING,
        pb.REMEDIATION_STATE_SUCCEEDED,
    ]
    proposal, approval, *executed = done.history
    assert (proposal.from_state, proposal.actor) == (pb.REMEDIATION_STATE_UNSPECIFIED, policy.name)
    assert (approval.to_state, approval.actor) == (pb.REMEDIATION_STATE_APPROVED, "policy")  # the risk's
    assert executed and all(t.actor.startswith("executor") for t in executed)  # nobody called Execute
    after = await chain.mesh.until(run.name, runs_pb2.RUN_STATE_SUCCEEDED)
    assert after.rerun_count == 1
    assert [a.state for a in after.jobs[0].attempts] == [
        runs_pb2.JOB_STATE_FAILED,
        runs_pb2.JOB_STATE_SUCCEEDED,
    ]
    actions = await eventually(
        lambda: _audited(chain.debugger, done.name), "the audit log to have the success"
    )
    assert actions[0] == "debugger.remediations.proposed"
    assert {"debugger.remediations.executing", "debugger.remediations.succeeded"} <= set(actions)


async def _failure_entry(chain: Chain, job_name: str) -> dict[bytes, bytes]:
    for _, fields in await chain.debugger.runtime.redis.xrange(FAILURES):
        if runs_pb2.JobFailure.FromString(fields[b"m"]).job == job_name:
            return dict(fields)
    return {}


async def test_an_attempt_failing_again_or_analyzed_afresh_proposes_no_second_remediation(
    chain: Chain,
) -> None:
    await chain.remediations.CreateRemediationPolicy(
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id="flaky-network",
            remediation_policy=pb.RemediationPolicy(
                categories=[dpb.CATEGORY_NETWORK],
                targets=[f"projects/{chain.mesh.project}/"],
                actions=[pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF],
                threshold=0.01,  # waits for an approval: the run stays failed, nothing re-runs
                parameters={"delay": "100ms"},
            ),
        )
    )
    name = await chain.mesh.pipeline({"jobs": [job("fetch", refused_connect(free_port()))]})
    run = await chain.mesh.until((await chain.mesh.run(name)).name, within=60)
    assert run.state == runs_pb2.RUN_STATE_FAILED
    target = f"{run.name}/jobs/fetch"

    async def proposed() -> list[pb.RemediationRecord]:
        listed = await chain.remediations.ListRemediations(pb.ListRemediationsRequest(target=target))
        return list(listed.remediations)

    [first] = await eventually(proposed, "the automatic proposal")
    assert first.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL
    entry = await eventually(lambda: _failure_entry(chain, target), "the failure's announcement")
    await chain.debugger.runtime.redis.xadd(FAILURES, entry)  # the same failure announced again
    fresh = await chain.diagnoses.AnalyzeJob(dpb.AnalyzeJobRequest(job=target, attempt=1, fresh=True))
    assert fresh.category == dpb.CATEGORY_NETWORK and fresh.name != first.diagnosis

    async def announcement_taken() -> bool:
        [group] = await chain.debugger.runtime.redis.xinfo_groups(FAILURES)
        last = await chain.debugger.runtime.redis.xrevrange(FAILURES, count=1)
        return group["pending"] == 0 and group["last-delivered-id"] >= last[0][0]

    await eventually(announcement_taken, "the repeated announcement to be handled")
    assert [r.name for r in await proposed()] == [first.name]

"""What the pipeline remediation tests share: a pipeline server with a worker of its own, runs
whose step fails on a flaky network call, and waiting for a remediation to finish."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from tests.conftest import ServerFactory
from tests.helpers import eventually
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh, job
from tools.stack.valkey import Valkey

# The executor looks often and a stopped replica's lease runs out fast, so the tests are quick.
EXECUTOR = {
    "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR_INTERVAL": "0.2",
    "DEVMESH_DEBUGGER_REMEDIATION_LEASE": "1.5",
    "DEVMESH_DEBUGGER_REMEDIATION_VERIFY_WINDOW": "60",
}
FINAL = {
    pb.REMEDIATION_STATE_SUCCEEDED,
    pb.REMEDIATION_STATE_FAILED,
    pb.REMEDIATION_STATE_DRY_RUN,
    pb.REMEDIATION_STATE_CANCELLED,
    pb.REMEDIATION_STATE_REJECTED,
}


@dataclass
class Pipeline:
    """A pipeline server with a worker of its own, and where flaky steps keep their marker."""

    mesh: Mesh
    addr: str
    markers: Path


@pytest.fixture(scope="module")
async def pipeline(
    valkey: Valkey, start_config_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    _, addr = await start_config_server(valkey.url, env=RUN_ENV, specs=[pipeline_app.SPEC])
    workdir = tmp_path_factory.mktemp("work")
    async with aio.insecure_channel(addr) as channel:
        pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
        project = f"p-{uuid.uuid4().hex[:12]}"
        await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
        mesh = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(channel), valkey, f"t{uuid.uuid4().hex[:10]}",
                    project, workdir)  # fmt: skip
        mesh.start_worker()
        try:
            yield Pipeline(mesh, addr, tmp_path_factory.mktemp("markers"))
        finally:
            mesh.stop_workers()


def fresh_id() -> str:
    """A pipeline id no other test uses."""
    return f"ci{uuid.uuid4().hex[:8]}"


def flaky_fetch(marker: Path) -> str:
    """A step that fails on a network error the first time and succeeds after (the marker
    lives outside the job's workspace, so it survives into the re-run)."""
    return (
        f"if [ -e {marker} ]; then echo fetched; else touch {marker}; "
        "echo 'curl: (6) Could not resolve host: mirror.example.invalid'; exit 6; fi"
    )


async def failed_run(pipeline: Pipeline, *extra: str) -> runs_pb2.Run:
    """A finished run whose `fetch` job failed on a flaky network call."""
    marker = pipeline.markers / uuid.uuid4().hex
    name = await pipeline.mesh.pipeline(
        {"jobs": [job("fetch", flaky_fetch(marker), *extra)]}, pipeline_id=fresh_id()
    )
    run = await pipeline.mesh.until((await pipeline.mesh.run(name)).name)
    assert run.state == runs_pb2.RUN_STATE_FAILED, run
    return run


def rerun_plan(run: runs_pb2.Run) -> pb.ProposeRemediationRequest:
    action = pb.Action(
        kind=pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF,
        target=f"{run.name}/jobs/fetch",
        parameters={"delay": "100ms"},
    )
    return pb.ProposeRemediationRequest(plan=[action], reason="the network failed for a while")


async def finished(stub: remediation_pb2_grpc.RemediationServiceStub, name: str) -> pb.RemediationRecord:
    async def final() -> pb.RemediationRecord | None:
        got = await stub.GetRemediation(pb.GetRemediationRequest(name=name))
        return got if got.state in FINAL else None

    return await eventually(final, f"{name} to finish", within=60)

"""A run across a Valkey restart (AOF, fsync always): nothing acknowledged is lost, and the run
carries on where it was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from tests.conftest import ServerFactory
from tests.helpers import eventually
from tests.integration.pipeline.runs_harness import Mesh, job, states_of
from tools.stack.processes import wait_until
from tools.stack.valkey import Valkey, start_valkey

# Long enough that the restart does not look like a lost worker: this test is about Redis.
LEASE = {"DEVMESH_PIPELINE_LEASE_SECONDS": "10", "DEVMESH_PIPELINE_CLAIM_IDLE_SECONDS": "1"}


@pytest.fixture
async def own_valkey(tmp_path: Path) -> AsyncIterator[Valkey]:
    valkey = start_valkey(tmp_path / "valkey")
    yield valkey
    valkey.process.stop()


@pytest.fixture
async def restartable(
    own_valkey: Valkey, start_config_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Mesh]:
    _, addr = await start_config_server(own_valkey.url, env=LEASE, specs=[pipeline_app.SPEC])
    async with aio.insecure_channel(addr) as channel:
        pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
        project = f"p-{uuid.uuid4().hex[:12]}"
        await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
        mesh = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(channel), own_valkey, f"t{uuid.uuid4().hex[:10]}",
                    project, tmp_path)  # fmt: skip
        yield mesh
        mesh.stop_workers()


async def _answered(call: Awaitable[runs_pb2.Run]) -> runs_pb2.Run | None:
    """The call's answer; None for UNAVAILABLE (a client retries that, as its RetryInfo says)."""
    try:
        return await call
    except aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:  # the pool reconnecting: said, not hidden
            raise
        return None


async def test_a_valkey_restart_mid_run_loses_no_acknowledged_transition(
    restartable: Mesh, tmp_path: Path
) -> None:
    mesh = restartable
    gate = tmp_path / "go"
    name = await mesh.pipeline(
        {"jobs": [job("first", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo first done"),
                  job("second", "echo second", needs=["first"])]}
    )  # fmt: skip
    mesh.start_worker(DEVMESH_WORKER_LEASE_SECONDS="10")
    run = await mesh.run(name, request_id="across-a-restart")
    await mesh.job_in(run.name, "first", runs_pb2.JOB_STATE_RUNNING)
    mesh.valkey.process.kill()  # SIGKILL: whatever was acknowledged must be in the AOF already
    mesh.valkey.process.respawn()
    wait_until(mesh.valkey.ready, 15, "valkey after its restart", mesh.valkey.process)
    again = await eventually(
        lambda: _answered(mesh.runs.GetRun(runs_pb2.GetRunRequest(name=run.name))),
        "the run to be readable again",
    )
    assert states_of(again)["first"] == "RUNNING"
    same = await eventually(
        lambda: _answered(mesh.run(name, request_id="across-a-restart")), "a second RunPipeline"
    )
    assert same.name == run.name  # the request id survived too
    gate.touch()
    done = await mesh.until(run.name)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
    assert [len(j.attempts) for j in done.jobs] == [1, 1]

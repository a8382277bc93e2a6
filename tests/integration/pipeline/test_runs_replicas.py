"""Two replicas of the pipeline service on one Valkey: kill -9 the one that started a run, and
the other carries it on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh, job
from tools.stack.service_process import ServiceProcess, start_service
from tools.stack.valkey import Valkey


@pytest.fixture
def replicas(valkey: Valkey, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    env = {**RUN_ENV, "DEVMESH_LOG_LEVEL": "warning"}
    started = [start_service(["pipeline"], valkey.url, tmp_path, extra_env=env) for _ in range(2)]
    yield started
    for replica in started:
        replica.process.stop(2)


async def test_a_run_whose_replica_is_killed_is_carried_on_by_another(
    replicas: list[ServiceProcess], valkey: Valkey, tmp_path: Path
) -> None:
    doomed, survivor = replicas
    gate = tmp_path / "go"
    async with aio.insecure_channel(doomed.addr) as first, aio.insecure_channel(survivor.addr) as second:
        project = f"p-{uuid.uuid4().hex[:12]}"
        pipelines = pipeline_pb2_grpc.PipelineServiceStub(first)
        await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
        starter = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(first), valkey, f"t{uuid.uuid4().hex[:10]}",
                       project, tmp_path)  # fmt: skip
        name = await starter.pipeline(
            {"jobs": [job("first", f"while [ ! -e {gate} ]; do sleep 0.05; done"), job("second", "true", needs=["first"]),
                      job("third", "true", needs=["second"])]}
        )  # fmt: skip
        starter.start_worker()
        run = await starter.run(name)
        await starter.job_in(run.name, "first", runs_pb2.JOB_STATE_RUNNING)
        doomed.process.kill()
        gate.touch()
        follower = Mesh(
            pipelines, runs_pb2_grpc.RunServiceStub(second), valkey, starter.label, project, tmp_path
        )
        done = await follower.until(run.name)
        starter.stop_workers()
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
    assert [len(j.attempts) for j in done.jobs] == [1, 1, 1]

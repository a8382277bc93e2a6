"""Retention, with a short one: a finished run's logs go after the log retention, the run with
its artifacts after the run retention; runs that have not finished stay. Each test has a Valkey
of its own (a sweeper with a retention of a second would sweep every other test's runs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from services.runtime import redis_client
from tests.conftest import ServerFactory
from tests.helpers import error_info, eventually, refused
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh, job
from tools.stack.valkey import start_valkey

Started = Callable[..., AbstractAsyncContextManager[tuple[Mesh, Path]]]


@pytest.fixture
def short_retention(start_config_server: ServerFactory, tmp_path: Path) -> Started:
    @asynccontextmanager
    async def start(run_s: str, log_s: str) -> AsyncIterator[tuple[Mesh, Path]]:
        valkey = start_valkey(tmp_path / "valkey")
        env = {
            **RUN_ENV,
            "DEVMESH_PIPELINE_RUN_RETENTION_SECONDS": run_s,
            "DEVMESH_PIPELINE_LOG_RETENTION_SECONDS": log_s,
            "DEVMESH_PIPELINE_RETENTION_SWEEP_SECONDS": "0.2",
        }
        data = tmp_path / "data"
        _, addr = await start_config_server(
            valkey.url, env=env, specs=[pipeline_app.SPEC], data_dir=str(data)
        )
        try:
            async with aio.insecure_channel(addr) as channel:
                pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
                project = f"p-{uuid.uuid4().hex[:12]}"
                await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
                mesh = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(channel), valkey, f"t{uuid.uuid4().hex[:10]}",
                            project, tmp_path)  # fmt: skip
                mesh.start_worker(DEVMESH_WORKER_PIPELINE_ADDR=addr)
                try:
                    yield mesh, data / "pipeline" / "artifacts"
                finally:
                    mesh.stop_workers()
        finally:
            valkey.process.stop()

    return start


STEPS = [{"run": {"command": "echo kept for a while > report.txt"}},
         {"artifact": {"name": "report", "paths": ["report.txt"]}}]  # fmt: skip


async def test_a_finished_run_and_its_artifacts_are_deleted_after_the_run_retention(
    short_retention: Started,
) -> None:
    async with short_retention("1", "1") as (mesh, store):
        waiting = await mesh.pipeline(
            {"jobs": [job("deploy", "true", approval={"environment": "prod"})]}, "gated"
        )
        unfinished = await mesh.run(waiting)
        pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": STEPS}]})
        run = await mesh.until((await mesh.run(pipeline)).name)
        assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, run
        run_id = run.name.rsplit("/", 1)[1]
        assert list((store / run_id).iterdir())  # the artifact was stored

        async def expired() -> bool:
            try:
                await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=run.name))
            except aio.AioRpcError as error:
                return error.code() == grpc.StatusCode.NOT_FOUND
            return False

        await eventually(expired, "the run to expire")
        assert not (store / run_id).exists()
        for call, request in (
            (mesh.runs.ListArtifacts, runs_pb2.ListArtifactsRequest(parent=run.name)),
            (mesh.runs.GetJobLog, runs_pb2.GetJobLogRequest(name=run.jobs[0].attempts[0].name)),
        ):
            assert (await refused(call, request)).code() == grpc.StatusCode.NOT_FOUND
        client = redis_client.connect(mesh.valkey.url, 5.0)
        try:
            leftovers = [key async for key in client.scan_iter(match=f"*{run_id}*")]
        finally:
            await client.aclose()
        assert leftovers == []
        listed = await mesh.runs.ListRuns(runs_pb2.ListRunsRequest(parent=pipeline))
        assert [r.name for r in listed.runs] == []
        still = await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=unfinished.name))
        assert still.state == runs_pb2.RUN_STATE_RUNNING  # a run that has not finished stays


async def test_a_finished_runs_logs_go_after_the_log_retention_and_the_run_stays(
    short_retention: Started,
) -> None:
    async with short_retention("3600", "1") as (mesh, _):
        pipeline = await mesh.pipeline({"jobs": [job("build", "echo a line of the log")]})
        run = await mesh.until((await mesh.run(pipeline)).name)
        attempt = run.jobs[0].attempts[0].name
        log = await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt))
        assert "a line of the log" in log.lines

        async def log_expired() -> aio.AioRpcError | None:
            try:
                await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt))
            except aio.AioRpcError as error:
                return error
            return None

        error = await eventually(log_expired, "the log to expire")
        assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "LOG_EXPIRED")
        kept = await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=run.name))
        assert kept.state == runs_pb2.RUN_STATE_SUCCEEDED
        events = [e async for e in mesh.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name))]
        assert events and not [e for e in events if e.HasField("log")]
        assert events[-1].state.run_state == runs_pb2.RUN_STATE_SUCCEEDED

"""What the run tests share: a pipeline server with short leases, real worker processes, and
helpers to create a pipeline, start a run and wait for it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc import aio

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from tools.stack.valkey import Valkey

LEASE_S = "1.5"
RUN_ENV = {"DEVMESH_PIPELINE_LEASE_SECONDS": LEASE_S, "DEVMESH_PIPELINE_CLAIM_IDLE_SECONDS": "1"}
FINAL = {
    runs_pb2.RUN_STATE_SUCCEEDED,
    runs_pb2.RUN_STATE_FAILED,
    runs_pb2.RUN_STATE_CANCELLED,
    runs_pb2.RUN_STATE_TIMED_OUT,
}
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Mesh:
    """A pipeline server's stubs, the Valkey under it, and a label only this test's workers have."""

    pipelines: pipeline_pb2_grpc.PipelineServiceStub
    runs: runs_pb2_grpc.RunServiceStub
    valkey: Valkey
    label: str
    project: str
    workdir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        environ = {
            "PATH": os.environ["PATH"],
            "DEVMESH_REDIS_URL": self.valkey.url,
            "DEVMESH_WORKER_LABELS": self.label,
            "DEVMESH_WORKER_LEASE_SECONDS": LEASE_S,
            "DEVMESH_WORKER_KILL_GRACE_SECONDS": "1",
            "DEVMESH_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
            "DEVMESH_WORKER_DIR": str(self.workdir),
            "DEVMESH_LOG_LEVEL": "warning",
            # These tests' steps share files with the test (pytest's directories are root's
            # alone): they run as the worker's user. Running as `nobody` has its own tests.
            "DEVMESH_WORKER_RUN_AS": "root" if os.geteuid() == 0 else "",
            **env,
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "services.pipeline.worker"],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
        )
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
            worker.wait(10)

    async def pipeline(self, definition: dict[str, Any], pipeline_id: str = "ci") -> str:
        """Create a pipeline whose jobs all run on this test's workers; its name."""
        for job in [*definition.get("jobs", []), *definition.get("finallyJobs", [])]:
            job.setdefault("runsOn", []).append(self.label)
        message = json_format.ParseDict(definition, model_pb2.PipelineDefinition())
        created = await self.pipelines.CreatePipeline(
            pipeline_pb2.CreatePipelineRequest(
                parent=f"projects/{self.project}",
                pipeline_id=pipeline_id,
                pipeline=pipeline_pb2.Pipeline(definition=message),
            )
        )
        return created.name

    async def run(self, pipeline: str, **fields: Any) -> runs_pb2.Run:
        return await self.runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=pipeline, **fields))

    async def get(self, name: str) -> runs_pb2.Run | None:
        """The run; None for UNAVAILABLE, which a client retries (Redis restarting)."""
        try:
            return await self.runs.GetRun(runs_pb2.GetRunRequest(name=name))
        except aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None

    async def until(self, name: str, *states: int, within: float = 30.0) -> runs_pb2.Run:
        """The run once it is in one of `states` (default: any final one)."""
        wanted = set(states) or FINAL
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            run = await self.get(name)
            if run is not None and run.state in wanted:
                return run
            if loop.time() > end:
                raise AssertionError(f"run stayed {runs_pb2.RunState.Name(run.state)}: {run}")
            await asyncio.sleep(0.05)

    async def job_in(self, name: str, key: str, state: int, within: float = 30.0) -> runs_pb2.JobRun:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            run = await self.runs.GetRun(runs_pb2.GetRunRequest(name=name))
            job = next(j for j in run.jobs if j.key == key)
            if job.state == state:
                return job
            if loop.time() > end:
                raise AssertionError(f"job {key} stayed {runs_pb2.JobState.Name(job.state)}: {run}")
            await asyncio.sleep(0.05)


def job(job_id: str, *commands: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "steps": [{"run": {"command": c}} for c in commands], **fields}


def states_of(run: runs_pb2.Run) -> dict[str, str]:
    return {j.key: runs_pb2.JobState.Name(j.state).removeprefix("JOB_STATE_") for j in run.jobs}

"""Crash resume: a debugger replica killed (kill -9) between a pipeline re-run's execute and its
verification leaves the remediation EXECUTING with the re-run recorded; once its lease expires
another replica resumes it, verifies the re-run and never re-runs the run a second time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.pipeline.v1 import runs_pb2
from tests.helpers import eventually
from tests.integration.debugger.pipeline_stack import (
    EXECUTOR,
    Pipeline,
    failed_run,
    finished,
    pipeline,
    rerun_plan,
)
from tools.stack.service_process import ServiceProcess, start_service
from tools.stack.valkey import Valkey, start_valkey

__all__ = ["pipeline"]  # the module's fixture


@dataclass
class Replicas:
    """A debugger replica that pauses after each recorded execute (for the test to kill it), the
    Valkey of the debugger replicas (their own: no other test's remediations are due on it), its
    pause marker, and where the replicas' logs go."""

    doomed: ServiceProcess
    valkey: Valkey
    paused: Path
    logs: Path


@pytest.fixture
def replicas(pipeline: Pipeline, tmp_path: Path) -> Iterator[Replicas]:
    own = start_valkey(tmp_path / "valkey")
    paused = tmp_path / "paused"
    env = {**EXECUTOR, "DEVMESH_PEERS": f"pipeline={pipeline.addr}", "DEVMESH_LOG_LEVEL": "warning"}
    try:
        doomed = start_service(
            ["debugger"],
            own.url,
            tmp_path,
            extra_env={**env, "DEVMESH_DEBUGGER_REMEDIATION_PAUSE_AFTER_EXECUTE": str(paused)},
        )
        yield Replicas(doomed, own, paused, tmp_path)
        doomed.process.stop(2)
    finally:
        own.process.stop()


async def test_a_replica_killed_between_execute_and_verify_is_resumed_by_another_without_a_second_rerun(
    pipeline: Pipeline, replicas: Replicas
) -> None:
    doomed, paused = replicas.doomed, replicas.paused
    run = await failed_run(pipeline)
    async with aio.insecure_channel(doomed.addr) as channel:
        made = await remediation_pb2_grpc.RemediationServiceStub(channel).ProposeRemediation(rerun_plan(run))
        await eventually(
            lambda: _names(paused, made.name), "the replica to record the re-run and pause", within=60
        )
    doomed.process.kill()  # SIGKILL: no drain, no lease release
    env = {**EXECUTOR, "DEVMESH_PEERS": f"pipeline={pipeline.addr}", "DEVMESH_LOG_LEVEL": "warning"}
    survivor = start_service(["debugger"], replicas.valkey.url, replicas.logs, extra_env=env)
    try:
        async with aio.insecure_channel(survivor.addr) as channel:
            done = await finished(remediation_pb2_grpc.RemediationServiceStub(channel), made.name)
    finally:
        survivor.process.stop(2)
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    resumed = [t for t in done.history if t.reason.startswith("resumed by executor/")]
    assert len(resumed) == 1 and resumed[0].to_state == pb.REMEDIATION_STATE_EXECUTING
    assert [s.status for s in done.steps] == ["executing", "applied"]  # executed once, verified after
    after = await pipeline.mesh.get(run.name)
    assert after is not None and after.rerun_count == 1 and after.state == runs_pb2.RUN_STATE_SUCCEEDED


async def _names(marker: Path, remediation: str) -> bool:
    """Whether the paused replica's marker names `remediation` (it pauses in every execution)."""
    return await asyncio.to_thread(lambda: marker.exists() and remediation in marker.read_text())

"""Following the pipeline's failures across debugger replicas, and `on: transient` retries when
no debugger answers; each test has a pipeline and debuggers of its own (no other coordinator
decides its runs)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.pipeline.v1 import runs_pb2
from services.debugger.failure_follower import GROUP, STREAM
from services.runtime import redis_client
from services.runtime.redis_client import Redis
from tests.helpers import eventually
from tests.integration.debugger.job_mesh import JobMesh, free_port, job_mesh
from tests.integration.pipeline.runs_harness import job
from tools.stack.valkey import Valkey, start_valkey


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    """A Valkey of this module's own: on the shared one, a pipeline replica another module left
    running (with no debugger to ask) could take these runs' decisions, and `on: transient`
    would never be asked."""
    server = start_valkey(tmp_path_factory.mktemp("own-valkey"))
    yield server
    server.process.stop()


REFUSED = (
    f"{sys.executable} -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{port}}/')\""
)
ASSERTION = f"{sys.executable} -c \"assert sum([2, 3]) == 6, 'the sum is wrong'\""


async def _diagnoses_of(jobs: JobMesh, job_name: str) -> list[pb.Diagnosis]:
    listed = await jobs.debugger.ListDiagnoses(pb.ListDiagnosesRequest(job=job_name))
    return list(listed.diagnoses)


async def _drained(redis: Redis) -> bool:
    """Whether the debuggers' group has taken and acknowledged every failure announced."""
    last = await redis.xrevrange(STREAM, count=1)
    [group] = [g for g in await redis.xinfo_groups(STREAM) if g["name"] == GROUP.encode()]
    return group["pending"] == 0 and bool(last) and group["last-delivered-id"] >= last[0][0]


async def _failure_entry(redis: Redis, job_name: str) -> dict[bytes, bytes]:
    for _, fields in await redis.xrange(STREAM):
        if runs_pb2.JobFailure.FromString(fields[b"m"]).job == job_name:
            return dict(fields)
    return {}


async def test_two_debugger_replicas_diagnose_a_failure_once_even_when_it_is_announced_twice(
    valkey: Valkey, tmp_path: Path
) -> None:
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        async with job_mesh(valkey, tmp_path, replicas=2) as jobs:
            jobs.mesh.start_worker()
            name = await jobs.mesh.pipeline({"jobs": [job("check", ASSERTION)]})
            run = await jobs.mesh.run(name)
            assert (await jobs.mesh.until(run.name, within=60)).state == runs_pb2.RUN_STATE_FAILED
            job_name = f"{run.name}/jobs/check"
            await eventually(lambda: _diagnoses_of(jobs, job_name), "the automatic diagnosis")
            await eventually(lambda: _drained(redis), "both replicas to be done")
            entry = await eventually(lambda: _failure_entry(redis, job_name), "the failure's announcement")
            await redis.xadd(STREAM, entry)  # announced again (a marker lost with Valkey's data)
            await eventually(lambda: _drained(redis), "both replicas to be done again")
            [diagnosis] = await _diagnoses_of(jobs, job_name)
            assert diagnosis.category == pb.CATEGORY_TEST_FAILURE and diagnosis.attempt == 1
    finally:
        await redis.aclose()


async def test_without_a_debugger_the_rules_alone_decide_and_the_run_ends(
    valkey: Valkey, tmp_path: Path
) -> None:
    async with job_mesh(valkey, tmp_path, replicas=0, debugger_addr=f"127.0.0.1:{free_port()}") as lonely:
        lonely.mesh.start_worker()
        network = REFUSED.format(port=free_port())
        name = await lonely.mesh.pipeline(
            {"jobs": [job("fetch", network, retry={"limit": 2, "on": {"transient": True}})]}
        )
        run = await lonely.mesh.run(name)
        done = await lonely.mesh.until(run.name, within=60)
        assert done.state == runs_pb2.RUN_STATE_FAILED
        assert len(done.jobs[0].attempts) == 1


async def test_an_attempt_whose_worker_was_killed_is_diagnosed_as_worker_lost(
    valkey: Valkey, tmp_path: Path
) -> None:
    async with job_mesh(valkey, tmp_path) as jobs:
        doomed = jobs.mesh.start_worker()
        name = await jobs.mesh.pipeline({"jobs": [job("long", "echo started; exec sleep 60")]})
        run = await jobs.mesh.run(name)
        await jobs.mesh.job_in(run.name, "long", runs_pb2.JOB_STATE_RUNNING)
        attempt = runs_pb2.GetJobLogRequest(name=f"{run.name}/jobs/long/attempts/1")

        async def printed() -> bool:
            return "started" in (await jobs.mesh.runs.GetJobLog(attempt)).lines

        await eventually(printed, "the step to print")  # a log that does not say the worker was lost
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        done = await jobs.mesh.until(run.name, within=60)
        assert done.jobs[0].attempts[0].reason == runs_pb2.ATTEMPT_REASON_WORKER_LOST
        [diagnosis] = await eventually(lambda: _diagnoses_of(jobs, f"{run.name}/jobs/long"), "its diagnosis")
        assert diagnosis.category == pb.CATEGORY_WORKER_LOST and diagnosis.transient

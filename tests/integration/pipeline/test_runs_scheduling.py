"""Runs on real worker processes: the DAG, conditions, matrices, finally jobs, checkout."""

from __future__ import annotations

from pathlib import Path

from devmesh.pipeline.v1 import runs_pb2
from tests.integration.pipeline.runs_harness import Mesh, job


async def test_a_run_checks_out_its_source_and_runs_the_dag_in_order(mesh: Mesh, repository: Path) -> None:
    name = await mesh.pipeline(
        {
            "jobs": [
                {"id": "build", "steps": [{"checkout": {}}, {"run": {"command": "cat hello.txt"}}]},
                job("test", "echo testing", needs=["build"]),
            ]
        }
    )
    mesh.start_worker()
    run = await mesh.run(name, source=str(repository))
    done = await mesh.until(run.name)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
    build = next(j for j in done.jobs if j.key == "build")
    log = await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=build.attempts[0].name))
    assert "hello from the checkout" in log.lines
    test = next(j for j in done.jobs if j.key == "test")
    assert test.attempts[0].start_time.ToMicroseconds() >= build.attempts[0].end_time.ToMicroseconds()

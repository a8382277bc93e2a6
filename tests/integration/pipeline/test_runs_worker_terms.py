"""A worker holds its jobs under the coordinators' lease, whatever its own environment says:
a worker that dies is found lost after the coordinators' lease, not after one of its own. And
what a worker that cannot reach the pipeline service does with an artifact step."""

from __future__ import annotations

import signal

from devmesh.pipeline.v1 import runs_pb2
from tests.integration.pipeline.runs_harness import Mesh, job


async def test_a_dead_workers_job_is_reclaimed_after_the_coordinators_lease_not_the_workers_own(
    mesh: Mesh,
) -> None:
    # The coordinators' lease is 1.5 s. The worker's environment names a 120 s lease (a setting
    # that no longer exists): had the worker taken it, its job would stay held for two minutes.
    command = "if [ $DEVMESH_ATTEMPT = 1 ]; then exec sleep 120; fi"
    name = await mesh.pipeline(
        {"jobs": [job("a", command, retry={"limit": 1, "on": {"infrastructure": True}})]}
    )
    doomed = mesh.start_worker(DEVMESH_WORKER_ID="doomed", DEVMESH_WORKER_LEASE_SECONDS="120")
    run = await mesh.run(name)
    await mesh.job_in(run.name, "a", runs_pb2.JOB_STATE_RUNNING)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    mesh.start_worker(DEVMESH_WORKER_ID="rescuer")
    done = await mesh.until(run.name, within=60)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
    first, second = done.jobs[0].attempts
    assert second.worker == "rescuer"
    assert first.reason == runs_pb2.ATTEMPT_REASON_WORKER_LOST
    lost_after_s = (first.end_time.ToMicroseconds() - first.start_time.ToMicroseconds()) / 1e6
    assert lost_after_s < 60, lost_after_s  # 1.5 s lease plus a reclaim pass; never the 120 s


async def test_an_artifact_step_on_a_worker_without_the_pipeline_service_fails_its_job_saying_so(
    mesh: Mesh,
) -> None:
    mesh.start_worker()  # no DEVMESH_WORKER_PIPELINE_ADDR
    steps = [{"run": {"command": "echo r > r.txt"}}, {"artifact": {"name": "r", "paths": ["r.txt"]}}]
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": steps}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    attempt = run.jobs[0].attempts[-1]
    assert (run.state, attempt.reason) == (runs_pb2.RUN_STATE_FAILED, runs_pb2.ATTEMPT_REASON_ARTIFACT_FAILED)
    assert "DEVMESH_WORKER_PIPELINE_ADDR" in attempt.message

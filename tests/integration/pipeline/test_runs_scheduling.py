"""Runs on real worker processes: the DAG, conditions, matrices, finally jobs, checkout."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from devmesh.pipeline.v1 import runs_pb2
from tests.integration.pipeline.runs_harness import Mesh, job, states_of


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


async def test_a_failing_step_fails_the_run_and_a_failed_only_rerun_runs_just_it_and_its_dependents(
    mesh: Mesh, tmp_path: Path
) -> None:
    flag = tmp_path / "fixed"
    name = await mesh.pipeline(
        {
            "jobs": [
                job("lint", "true"),
                job("test", f"test -e {flag}"),
                job("package", "true", needs=["test"]),
            ]
        }
    )
    mesh.start_worker()
    run = await mesh.run(name)
    failed = await mesh.until(run.name)
    assert failed.state == runs_pb2.RUN_STATE_FAILED
    assert states_of(failed) == {"lint": "SUCCEEDED", "test": "FAILED", "package": "SKIPPED"}
    test = next(j for j in failed.jobs if j.key == "test")
    assert test.attempts[0].reason == runs_pb2.ATTEMPT_REASON_EXIT_CODE and test.attempts[0].exit_code == 1
    assert failed.summary == "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1"
    flag.touch()
    await mesh.runs.RerunRun(runs_pb2.RerunRunRequest(name=run.name, failed_only=True))
    again = await mesh.until(run.name)
    assert again.state == runs_pb2.RUN_STATE_SUCCEEDED, again
    attempts = {j.key: len(j.attempts) for j in again.jobs}
    assert attempts == {"lint": 1, "test": 2, "package": 1}
    assert again.jobs[1].attempts[0].state == runs_pb2.JOB_STATE_FAILED  # history is kept as it was


async def test_a_cancelled_run_stops_its_step_and_still_runs_its_finally_jobs(
    mesh: Mesh, tmp_path: Path
) -> None:
    status = tmp_path / "status"
    name = await mesh.pipeline(
        {
            "jobs": [job("long", "echo started; exec sleep 60")],
            "finallyJobs": [job("cleanup", f'echo "$DEVMESH_RUN_STATUS" > {status}')],
        }
    )
    mesh.start_worker()
    run = await mesh.run(name)
    await mesh.job_in(run.name, "long", runs_pb2.JOB_STATE_RUNNING)
    await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))
    done = await mesh.until(run.name)
    assert done.state == runs_pb2.RUN_STATE_CANCELLED
    assert states_of(done) == {"long": "CANCELLED", "cleanup": "SUCCEEDED"}
    assert status.read_text().strip() == "Cancelled"


async def test_a_gate_holds_its_job_until_approved_and_refuses_the_starters_own_approval(mesh: Mesh) -> None:
    name = await mesh.pipeline(
        {
            "jobs": [
                job("build", "true"),
                job("deploy", "true", needs=["build"], approval={"environment": "prod"}),
                job("review", "true", approval={"environment": "prod", "preventSelfApproval": True}),
            ]
        }
    )
    mesh.start_worker()
    run = await mesh.run(name)
    await mesh.job_in(run.name, "deploy", runs_pb2.JOB_STATE_WAITING_FOR_APPROVAL)
    with pytest.raises(aio.AioRpcError) as refused:
        await mesh.runs.ApproveGate(runs_pb2.ApproveGateRequest(name=run.name, job="review"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await mesh.runs.ApproveGate(runs_pb2.ApproveGateRequest(name=run.name, job="deploy", comment="ship it"))
    await mesh.job_in(run.name, "deploy", runs_pb2.JOB_STATE_SUCCEEDED)
    await mesh.runs.RejectGate(runs_pb2.RejectGateRequest(name=run.name, job="review", comment="no"))
    done = await mesh.until(run.name)
    assert states_of(done)["review"] == "REJECTED" and done.state == runs_pb2.RUN_STATE_FAILED
    with pytest.raises(aio.AioRpcError) as late:
        await mesh.runs.ApproveGate(runs_pb2.ApproveGateRequest(name=run.name, job="deploy"))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_run_cancelled_while_its_job_waits_for_a_gate_ends_cancelled(mesh: Mesh) -> None:
    name = await mesh.pipeline({"jobs": [job("deploy", "true", approval={"environment": "prod"})]})
    run = await mesh.run(name)
    await mesh.job_in(run.name, "deploy", runs_pb2.JOB_STATE_WAITING_FOR_APPROVAL)
    await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))
    done = await mesh.until(run.name)
    assert done.state == runs_pb2.RUN_STATE_CANCELLED and states_of(done) == {"deploy": "CANCELLED"}


async def test_the_same_request_id_starts_one_run(mesh: Mesh) -> None:
    name = await mesh.pipeline({"jobs": [job("a", "true")]})
    first = await mesh.run(name, request_id="deploy-42")
    second = await mesh.run(name, request_id="deploy-42")
    assert first.name == second.name
    listed = await mesh.runs.ListRuns(runs_pb2.ListRunsRequest(parent=name))
    assert [r.name for r in listed.runs] == [first.name]


async def test_a_second_run_in_a_queue_group_waits_for_the_first(mesh: Mesh, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    name = await mesh.pipeline(
        {
            "jobs": [job("a", f"while [ ! -e {gate} ]; do sleep 0.05; done")],
            "concurrency": {"group": "deploy"},
        }
    )
    mesh.start_worker()
    mesh.start_worker()
    first = await mesh.run(name)
    second = await mesh.run(name)
    await mesh.job_in(first.name, "a", runs_pb2.JOB_STATE_RUNNING)
    assert (
        await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=second.name))
    ).state == runs_pb2.RUN_STATE_QUEUED
    gate.touch()
    done = await mesh.until(second.name)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED
    first_done = await mesh.until(first.name)
    assert done.jobs[0].attempts[0].start_time.ToMicroseconds() >= first_done.end_time.ToMicroseconds()


async def test_cancel_in_progress_cancels_the_older_run_of_the_group(mesh: Mesh) -> None:
    name = await mesh.pipeline(
        {"jobs": [job("a", "exec sleep 60")],
         "concurrency": {"group": "deploy", "mode": "CONCURRENCY_MODE_CANCEL_IN_PROGRESS"}}
    )  # fmt: skip
    mesh.start_worker()
    first = await mesh.run(name)
    await mesh.job_in(first.name, "a", runs_pb2.JOB_STATE_RUNNING)
    second = await mesh.run(name)
    assert (await mesh.until(first.name)).state == runs_pb2.RUN_STATE_CANCELLED
    await mesh.job_in(second.name, "a", runs_pb2.JOB_STATE_RUNNING)
    await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=second.name))


async def test_a_declared_transient_exit_code_is_retried_as_a_new_attempt(mesh: Mesh, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    command = f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; exit 75"
    name = await mesh.pipeline(
        {"jobs": [job("flaky", command, retry={"limit": 2, "on": {"exitCodes": [75]}}),
                  job("broken", "exit 3", retry={"limit": 2, "on": {"exitCodes": [75]}})]}
    )  # fmt: skip
    mesh.start_worker()
    run = await mesh.run(name)
    done = await mesh.until(run.name)
    flaky, broken = done.jobs
    assert [a.state for a in flaky.attempts] == [runs_pb2.JOB_STATE_FAILED, runs_pb2.JOB_STATE_SUCCEEDED]
    assert len(broken.attempts) == 1  # exit 3 is not declared transient


async def test_run_events_stream_state_changes_and_log_lines_and_resume_after_an_event_id(mesh: Mesh) -> None:
    name = await mesh.pipeline({"jobs": [job("a", "for i in 1 2 3; do echo line-$i; done")]})
    mesh.start_worker()
    run = await mesh.run(name)
    events = [e async for e in mesh.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name))]
    lines = [line for e in events if e.HasField("log") for line in e.log.lines]
    assert [x for x in lines if x.startswith("line-")] == ["line-1", "line-2", "line-3"]
    assert events[-1].state.run_state == runs_pb2.RUN_STATE_SUCCEEDED
    middle = len(events) // 2
    resumed = [
        e async for e in mesh.runs.StreamRunEvents(
            runs_pb2.StreamRunEventsRequest(name=run.name, after_event_id=events[middle].id)
        )
    ]  # fmt: skip
    assert [e.id for e in resumed] == [e.id for e in events[middle + 1 :]]


async def test_a_job_whose_env_references_a_secret_fails_setup_and_says_why(mesh: Mesh) -> None:
    name = await mesh.pipeline({"jobs": [job("a", "true", env={"TOKEN": {"$secret": "deploy-token"}})]})
    mesh.start_worker()
    run = await mesh.run(name)
    done = await mesh.until(run.name)
    attempt = done.jobs[0].attempts[0]
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_SETUP_FAILED
    assert "secret references" in attempt.message


async def test_an_event_id_redis_could_not_hold_is_invalid_argument(mesh: Mesh) -> None:
    name = await mesh.pipeline({"jobs": [job("a", "true")]})
    run = await mesh.run(name)
    request = runs_pb2.StreamRunEventsRequest(name=run.name, after_event_id="99999999999999999999-0")
    with pytest.raises(aio.AioRpcError) as refused:
        async for _ in mesh.runs.StreamRunEvents(request):
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))

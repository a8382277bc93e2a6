"""Runs when things break, with real processes: a worker killed mid-step, a step that prints
100 MB, one that allocates without end, one that ignores SIGTERM, a worker told to shut down."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from devmesh.pipeline.v1 import runs_pb2
from tests.helpers import eventually
from tests.integration.pipeline.runs_harness import Mesh, job, states_of


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split(") ")[1][0] != "Z"


def _peak_memory_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


async def test_a_worker_killed_mid_step_is_reclaimed_and_the_job_retried_once_never_twice_at_a_time(
    mesh: Mesh, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command = f"echo $$ >> {pids}; if [ $DEVMESH_ATTEMPT = 1 ]; then exec sleep 60; fi"
    name = await mesh.pipeline(
        {"jobs": [job("a", command, retry={"limit": 1, "on": {"infrastructure": True}})]}
    )
    doomed = mesh.start_worker(DEVMESH_WORKER_ID="doomed")
    run = await mesh.run(name)
    await mesh.job_in(run.name, "a", runs_pb2.JOB_STATE_RUNNING)
    await eventually(lambda: _async(pids.exists()), "the first attempt's step to start")
    first_step = int(pids.read_text().split()[0])
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    mesh.start_worker(DEVMESH_WORKER_ID="rescuer")
    done = await mesh.until(run.name)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
    first, second = done.jobs[0].attempts
    assert (first.reason, first.worker, second.worker) == (
        runs_pb2.ATTEMPT_REASON_WORKER_LOST,
        "doomed",
        "rescuer",
    )
    assert not _alive(first_step)  # the step died with its worker: never two at once
    assert second.start_time.ToMicroseconds() >= first.end_time.ToMicroseconds()


async def _async(value: bool) -> bool:
    return value


async def test_a_step_printing_100_mb_is_truncated_at_the_cap_and_the_worker_stays_small(mesh: Mesh) -> None:
    name = await mesh.pipeline(
        {"jobs": [job("loud", "head -c 100000000 /dev/zero | tr '\\0' 'x' | fold -w 100")]}
    )
    worker = mesh.start_worker(DEVMESH_WORKER_LOG_CAP_BYTES=str(1 << 20))
    run = await mesh.run(name)
    done = await mesh.until(run.name, within=60)
    assert done.state == runs_pb2.RUN_STATE_SUCCEEDED
    attempt = done.jobs[0].attempts[0]
    assert attempt.log_truncated
    lines: list[str] = []
    token = ""
    while True:
        page = await mesh.runs.GetJobLog(
            runs_pb2.GetJobLogRequest(name=attempt.name, page_size=10000, page_token=token)
        )
        lines.extend(page.lines)
        token = page.next_page_token
        if not token:
            break
    assert sum(len(line) + 1 for line in lines[:-1]) <= 1 << 20
    assert lines[-1].startswith("[devmesh: log truncated at 1048576 bytes")
    assert _peak_memory_kib(worker.pid) < 200 * 1024


async def test_an_unbounded_allocation_is_stopped_by_its_limit_and_the_worker_lives(mesh: Mesh) -> None:
    # No fork bomb here: these tests run as root on a shared machine, and RLIMIT_NPROC does not
    # bind root (see the README); a bomb would be stopped only by its time limit.
    hog = "python3 -c 'x = []\nwhile True: x.append(bytearray(1 << 24))'"
    name = await mesh.pipeline(
        {
            "jobs": [
                job("hog", hog),
                job("after", "echo still here", needs=["hog"], condition={"when": "WHEN_ALWAYS"}),
            ]
        }
    )
    worker = mesh.start_worker(DEVMESH_WORKER_MEMORY_BYTES=str(512 << 20))
    run = await mesh.run(name)
    done = await mesh.until(run.name, within=60)
    assert states_of(done) == {"hog": "FAILED", "after": "SUCCEEDED"}, done
    hog_attempt = done.jobs[0].attempts[0]
    assert hog_attempt.reason == runs_pb2.ATTEMPT_REASON_RESOURCE_LIMIT, hog_attempt
    assert worker.poll() is None


async def test_a_step_that_ignores_sigterm_is_killed_after_the_grace_period_and_times_out(
    mesh: Mesh, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    stubborn = f"trap '' TERM; echo $$ > {pid_file}; while true; do sleep 0.1; done"
    name = await mesh.pipeline({"jobs": [job("stubborn", stubborn, timeout="2s")]})
    mesh.start_worker()
    run = await mesh.run(name)
    done = await mesh.until(run.name)
    attempt = done.jobs[0].attempts[0]
    assert (done.jobs[0].state, attempt.reason) == (
        runs_pb2.JOB_STATE_TIMED_OUT,
        runs_pb2.ATTEMPT_REASON_TIMEOUT,
    )
    assert not _alive(int(pid_file.read_text()))


async def test_a_worker_told_to_stop_finishes_its_job_and_takes_no_other(mesh: Mesh, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    name = await mesh.pipeline(
        {"jobs": [job("first", f"while [ ! -e {gate} ]; do sleep 0.05; done"), job("second", "true", needs=["first"])]}
    )  # fmt: skip
    worker = mesh.start_worker()
    run = await mesh.run(name)
    await mesh.job_in(run.name, "first", runs_pb2.JOB_STATE_RUNNING)
    worker.send_signal(signal.SIGTERM)
    gate.touch()
    assert await asyncio.to_thread(worker.wait, 20) == 0
    first = await mesh.job_in(run.name, "first", runs_pb2.JOB_STATE_SUCCEEDED)
    assert len(first.attempts) == 1
    run_now = await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=run.name))
    assert states_of(run_now)["second"] == "QUEUED"  # nobody took it: the worker had stopped
    await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))

"""A step that forks without end is contained: a root worker runs its steps as `nobody`, whose
RLIMIT_NPROC binds (root's never does), so the bomb runs out of processes, the job fails with a
resource-limit reason, every process it made is gone, and the worker goes on with the next job.

Safety first: the bomb runs only after a probe job showed that steps really run as a user that
is not root, with a low process limit; otherwise the test is skipped. The job has a timeout."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh.pipeline.v1 import runs_pb2
from tests.integration.pipeline.runs_harness import Mesh, job

ALLOWANCE = 64  # processes a step may add to what its user already runs
SAFE_LIMIT = 512


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="devmesh-test-work-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _log(mesh: Mesh, run: runs_pb2.Run) -> list[str]:
    page = await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=run.jobs[0].attempts[0].name))
    return list(page.lines)


async def test_a_step_that_forks_without_end_is_contained_and_the_worker_lives(
    mesh: Mesh, reachable_dir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("steps drop to another user only under a root worker")
    worker = mesh.start_worker(
        DEVMESH_WORKER_RUN_AS="",
        DEVMESH_WORKER_DIR=str(reachable_dir),
        DEVMESH_WORKER_PROCESSES=str(ALLOWANCE),
    )
    probe = await mesh.run(await mesh.pipeline({"jobs": [job("probe", "id -u", "ulimit -u")]}, "probe"))
    probed = await mesh.until(probe.name)
    uid, limit = [line for line in await _log(mesh, probed) if not line.startswith("== ")][:2]
    if (
        probed.state != runs_pb2.RUN_STATE_SUCCEEDED
        or uid == "0"
        or not limit.isdigit()
        or int(limit) > SAFE_LIMIT
    ):
        pytest.skip(f"steps do not run unprivileged under a low process limit (uid {uid}, limit {limit})")

    marker = f"fork-bomb-{uuid.uuid4().hex}"
    bomb = f"python3 -c 'import os  # {marker}\nwhile True: os.fork()'"
    name = await mesh.pipeline({"jobs": [job("bomb", bomb, timeout="60s")]}, "bomb")
    done = await mesh.until((await mesh.run(name)).name, within=90)
    attempt = done.jobs[0].attempts[0]
    assert done.state == runs_pb2.RUN_STATE_FAILED
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_RESOURCE_LIMIT, attempt
    assert "resource limit" in attempt.message
    for _ in range(200):  # the step's process group went with it
        if not _processes_with(marker):
            break
        await asyncio.sleep(0.05)
    assert _processes_with(marker) == []
    assert worker.poll() is None
    after = await mesh.until(
        (await mesh.run(await mesh.pipeline({"jobs": [job("next", "true")]}, "next"))).name
    )
    assert after.state == runs_pb2.RUN_STATE_SUCCEEDED

"""AnalyzeJob and the automatic diagnosis of failed pipeline jobs, with real processes: a
pipeline server, real workers running real failing steps (pytest, a compiler, a refused
connection), and a debugger that reads their logs back from the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.pipeline.v1 import runs_pb2
from services.debugger.diagnosis_hooks import STREAM as DIAGNOSES_STREAM
from services.runtime import redis_client
from tests.helpers import eventually, refused
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


FAILING_TEST = """\
def add(a, b):
    return a - b


def test_add_sums_two_numbers():
    assert add(2, 3) == 5
"""
BROKEN_SOURCE = "def broken(:\n    return 1\n"
PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider -p no:asyncio test_math.py"


def checked_out(job_id: str, command: str, **fields: Any) -> dict[str, Any]:
    """A job that checks the repository out, then runs `command` in it."""
    return {"id": job_id, "steps": [{"checkout": {}}, {"run": {"command": command}}], **fields}


def _git(repo: Path, *argv: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    return subprocess.run(
        ["git", *argv], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository whose test fails and whose module does not compile."""
    repo = tmp_path_factory.mktemp("repo")
    (repo / "test_math.py").write_text(FAILING_TEST)
    (repo / "broken.py").write_text(BROKEN_SOURCE)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


@pytest.fixture(scope="module")
async def jobs(valkey: Valkey, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JobMesh]:
    async with job_mesh(valkey, tmp_path_factory.mktemp("work")) as found:
        found.mesh.start_worker()
        yield found


@pytest.fixture(scope="module")
async def failed_test_job(jobs: JobMesh, repository: Path) -> str:
    """The name of a job whose pytest failed (its run has ended)."""
    name = await jobs.mesh.pipeline({"jobs": [checked_out("unit", PYTEST)]}, pipeline_id="tests")
    run = await jobs.mesh.run(name, source=str(repository))
    done = await jobs.mesh.until(run.name, within=60)
    assert done.state == runs_pb2.RUN_STATE_FAILED, done
    return f"{run.name}/jobs/unit"


async def _diagnoses_of(jobs: JobMesh, job_name: str) -> list[pb.Diagnosis]:
    listed = await jobs.debugger.ListDiagnoses(pb.ListDiagnosesRequest(job=job_name))
    return list(listed.diagnoses)


async def _log(jobs: JobMesh, attempt: str) -> list[str]:
    page = await jobs.mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt, page_size=10000))
    return list(page.lines)


async def test_a_failed_pytest_job_is_diagnosed_on_its_own_with_root_cause_lines_in_its_log(
    jobs: JobMesh, failed_test_job: str
) -> None:
    [diagnosis] = await eventually(lambda: _diagnoses_of(jobs, failed_test_job), "the automatic diagnosis")
    assert diagnosis.category == pb.CATEGORY_TEST_FAILURE, diagnosis
    assert (diagnosis.job, diagnosis.attempt) == (failed_test_job, 1)
    lines = await _log(jobs, f"{failed_test_job}/attempts/1")
    best = diagnosis.root_causes[0]
    assert diagnosis.line_count == len(lines)
    assert best.excerpt == "\n".join(lines[best.start_line - 1 : best.end_line])
    assert any("assert" in line for line in lines[best.start_line - 1 : best.end_line]), best
    assert "test_add_sums_two_numbers" in {t.name.split("::")[-1] for t in diagnosis.failing_tests}


async def test_analyze_job_answers_with_the_attempts_own_diagnosis_and_a_fresh_one_has_its_signature(
    jobs: JobMesh, failed_test_job: str
) -> None:
    [automatic] = await eventually(lambda: _diagnoses_of(jobs, failed_test_job), "the automatic diagnosis")
    asked = await jobs.debugger.AnalyzeJob(pb.AnalyzeJobRequest(job=failed_test_job))
    assert asked.name == automatic.name
    fresh = await jobs.debugger.AnalyzeJob(pb.AnalyzeJobRequest(job=failed_test_job, fresh=True))
    assert fresh.name != automatic.name
    assert (fresh.signature, fresh.category, fresh.attempt) == (automatic.signature, automatic.category, 1)


async def test_the_automatic_diagnosis_is_announced_once_on_the_diagnoses_stream(
    jobs: JobMesh, failed_test_job: str, valkey: Valkey
) -> None:
    automatic = (await eventually(lambda: _diagnoses_of(jobs, failed_test_job), "the automatic diagnosis"))[
        -1
    ]
    redis = redis_client.connect(valkey.url, 5.0)
    try:
        entries = [fields for _, fields in await redis.xrange(DIAGNOSES_STREAM)]
    finally:
        await redis.aclose()
    mine = [f for f in entries if f[b"job"] == failed_test_job.encode() and f[b"first_of_attempt"] == b"1"]
    assert len(mine) == 1
    assert mine[0][b"diagnosis"].decode() == automatic.name
    assert (mine[0][b"source"], mine[0][b"automatic"], mine[0][b"category"]) == (
        b"job",
        b"1",
        b"TEST_FAILURE",
    )


async def test_a_job_that_succeeded_is_a_failed_precondition(jobs: JobMesh, repository: Path) -> None:
    name = await jobs.mesh.pipeline({"jobs": [job("fine", "echo all good")]}, pipeline_id="fine")
    run = await jobs.mesh.run(name, source=str(repository))
    assert (await jobs.mesh.until(run.name, within=60)).state == runs_pb2.RUN_STATE_SUCCEEDED
    error = await refused(jobs.debugger.AnalyzeJob, pb.AnalyzeJobRequest(job=f"{run.name}/jobs/fine"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did not fail" in (error.details() or "")


@pytest.mark.parametrize("tail", ["runs/r0000000000/jobs/unit", "RUN/jobs/nope"])
async def test_an_unknown_run_or_job_is_not_found(jobs: JobMesh, failed_test_job: str, tail: str) -> None:
    run = failed_test_job.rsplit("/jobs/", 1)[0]
    pipeline = run.rsplit("/runs/", 1)[0]
    name = f"{pipeline}/{tail}" if tail.startswith("runs/") else f"{run}/jobs/nope"
    error = await refused(jobs.debugger.AnalyzeJob, pb.AnalyzeJobRequest(job=name))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


async def test_a_malformed_job_name_is_invalid(jobs: JobMesh) -> None:
    error = await refused(jobs.debugger.AnalyzeJob, pb.AnalyzeJobRequest(job="projects/p/pipelines/q/jobs/j"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_test_that_passed_on_the_same_commit_before_is_a_flaky_test(
    jobs: JobMesh, repository: Path, tmp_path: Path
) -> None:
    passes = tmp_path / "passes"
    passes.touch()
    command = f"if [ -e {passes} ]; then exit 0; fi; {PYTEST}"
    name = await jobs.mesh.pipeline({"jobs": [checked_out("unit", command)]}, pipeline_id="flaky")
    commit = _git(repository, "rev-parse", "HEAD").strip()
    first = await jobs.mesh.run(name, source=str(repository), ref=commit)
    assert (await jobs.mesh.until(first.name, within=60)).state == runs_pb2.RUN_STATE_SUCCEEDED
    passes.unlink()
    second = await jobs.mesh.run(name, source=str(repository), ref=commit)
    assert (await jobs.mesh.until(second.name, within=60)).state == runs_pb2.RUN_STATE_FAILED
    diagnosis = await jobs.debugger.AnalyzeJob(pb.AnalyzeJobRequest(job=f"{second.name}/jobs/unit"))
    assert diagnosis.category == pb.CATEGORY_FLAKY_TEST and diagnosis.transient, diagnosis


REFUSED = f"{sys.executable} -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{port}}/simple/')\""


async def test_on_transient_retries_a_refused_connection_and_not_a_compilation_error(
    jobs: JobMesh, repository: Path
) -> None:
    retry = {"limit": 2, "on": {"transient": True}}
    network = f"if [ $DEVMESH_ATTEMPT = 1 ]; then {REFUSED.format(port=free_port())}; fi"
    compile_ = f"{sys.executable} -m py_compile broken.py"
    name = await jobs.mesh.pipeline(
        {"jobs": [job("fetch", network, retry=retry), checked_out("build", compile_, retry=retry)]},
        pipeline_id="retries",
    )
    run = await jobs.mesh.run(name, source=str(repository))
    done = await jobs.mesh.until(run.name, within=90)
    fetch, build = done.jobs
    assert [a.state for a in fetch.attempts] == [runs_pb2.JOB_STATE_FAILED, runs_pb2.JOB_STATE_SUCCEEDED]
    assert [a.state for a in build.attempts] == [runs_pb2.JOB_STATE_FAILED]
    [network_diagnosis] = await eventually(
        lambda: _diagnoses_of(jobs, f"{run.name}/jobs/fetch"), "the network failure's diagnosis"
    )
    assert network_diagnosis.category == pb.CATEGORY_NETWORK
    [compile_diagnosis] = await eventually(
        lambda: _diagnoses_of(jobs, f"{run.name}/jobs/build"), "the compile failure's diagnosis"
    )
    assert compile_diagnosis.category == pb.CATEGORY_COMPILATION and not compile_diagnosis.transient

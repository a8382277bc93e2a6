"""Cache and setup steps, with real workers and a real Valkey: a project's runs share caches
(restored by key or by a restore-key prefix, saved once per key, never over the cap), an
archive that reaches out of the workspace is refused, and setup steps check the toolchain."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio
from redis import asyncio as redis

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from services.pipeline.runs import caches as cache_records
from services.pipeline.worker import caches
from tests.conftest import ServerFactory
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh
from tests.integration.pipeline.test_runs_artifacts import git_repository
from tools.stack.valkey import Valkey

CACHE_CAP = 1024 * 1024
ENV = {**RUN_ENV, "DEVMESH_PIPELINE_CACHE_MAX_BYTES": str(CACHE_CAP)}
CACHED_STEP = {"cache": {"paths": ["deps"], "keyFiles": ["lock.txt"], "keyPrefix": "deps"}}
USE_OR_MAKE = "if test -f deps/made; then echo FOUND $(cat deps/made); else mkdir -p deps; echo $RANDOM > deps/made; echo MADE; fi"


@pytest.fixture(scope="module")
async def caches_server(
    valkey: Valkey, start_config_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("data")
    _, addr = await start_config_server(valkey.url, env=ENV, specs=[pipeline_app.SPEC], data_dir=str(data))
    yield addr, data / "pipeline" / "caches"


@pytest.fixture
async def mesh(caches_server: tuple[str, Path], valkey: Valkey, tmp_path: Path) -> AsyncIterator[Mesh]:
    addr, _ = caches_server
    async with aio.insecure_channel(addr) as channel:
        pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
        project = f"p-{uuid.uuid4().hex[:12]}"
        await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
        work = tmp_path / "work"
        work.mkdir()
        found = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(channel), valkey, f"t{uuid.uuid4().hex[:10]}",
                     project, work)  # fmt: skip
        found.start_worker(DEVMESH_WORKER_PIPELINE_ADDR=addr)
        yield found
        found.stop_workers()


async def log_of(mesh: Mesh, run: runs_pb2.Run) -> list[str]:
    attempt = run.jobs[0].attempts[-1]
    return list((await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt.name))).lines)


async def run_once(mesh: Mesh, pipeline: str, repo: Path) -> tuple[runs_pb2.Run, list[str]]:
    run = await mesh.until((await mesh.run(pipeline, source=str(repo))).name)
    return run, await log_of(mesh, run)


async def cache_pipeline(mesh: Mesh, *commands: str) -> str:
    steps = [{"checkout": {}}, CACHED_STEP, *({"run": {"command": c}} for c in commands)]
    return await mesh.pipeline({"jobs": [{"id": "build", "steps": steps}]})


async def entries(mesh: Mesh) -> dict[str, cache_records.CacheRecord]:
    client = redis.Redis.from_url(mesh.valkey.url)
    try:
        raw = await client.hgetall(cache_records.project_caches(mesh.project))
    finally:
        await client.aclose()
    return {k.decode(): cache_records.CacheRecord.load(v) for k, v in raw.items()}


async def test_a_second_run_finds_the_files_the_first_run_cached_before_its_steps(
    mesh: Mesh, tmp_path: Path
) -> None:
    repo = git_repository(tmp_path / "repo", {"lock.txt": b"one\n"})
    pipeline = await cache_pipeline(mesh, USE_OR_MAKE)
    first, first_log = await run_once(mesh, pipeline, repo)
    assert first.state == runs_pb2.RUN_STATE_SUCCEEDED, first_log
    assert "MADE" in first_log and any(re.fullmatch(r"cache deps-\S+: saved, .*", line) for line in first_log)
    second, second_log = await run_once(mesh, pipeline, repo)
    assert second.state == runs_pb2.RUN_STATE_SUCCEEDED, second_log
    assert any(line.startswith("FOUND ") for line in second_log), second_log
    assert any("restored (exact match)" in line for line in second_log)


async def test_an_exact_hit_is_not_saved_again(mesh: Mesh, tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo", {"lock.txt": b"same\n"})
    pipeline = await cache_pipeline(mesh, USE_OR_MAKE)
    await run_once(mesh, pipeline, repo)
    (saved,) = (await entries(mesh)).values()
    _, second_log = await run_once(mesh, pipeline, repo)
    assert f"cache {saved.key}: restored by its exact key; not saved again" in second_log
    (after,) = (await entries(mesh)).values()
    assert (after.blob, after.ct, after.sha256) == (saved.blob, saved.ct, saved.sha256)
    assert after.lu > saved.lu  # the restore counts as a use


async def test_a_restore_key_prefix_hit_restores_and_saves_under_the_new_key(
    mesh: Mesh, tmp_path: Path
) -> None:
    pipeline = await cache_pipeline(mesh, USE_OR_MAKE)
    old_repo = git_repository(tmp_path / "old", {"lock.txt": b"v1\n"})
    await run_once(mesh, pipeline, old_repo)
    (old_key,) = await entries(mesh)
    new_repo = git_repository(tmp_path / "new", {"lock.txt": b"v2\n"})
    run, log = await run_once(mesh, pipeline, new_repo)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, log
    assert any(line.startswith(f"cache {old_key}: restored (restore-key prefix deps-") for line in log), log
    assert any(line.startswith("FOUND ") for line in log)
    keys = set(await entries(mesh))
    assert old_key in keys and len(keys) == 2


async def test_a_cache_over_the_cap_is_not_saved_and_the_job_still_succeeds(
    mesh: Mesh, tmp_path: Path
) -> None:
    repo = git_repository(tmp_path / "repo", {"lock.txt": b"big\n"})
    pipeline = await cache_pipeline(
        mesh, f"mkdir -p deps && head -c {2 * CACHE_CAP} /dev/urandom > deps/blob"
    )
    run, log = await run_once(mesh, pipeline, repo)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, log
    assert any(
        line.startswith("cache deps-")
        and f"not saved: the cache is over the cap of {CACHE_CAP} bytes" in line
        for line in log
    ), log
    assert not await entries(mesh)


async def test_an_archive_member_climbing_out_of_the_workspace_is_refused(
    mesh: Mesh, tmp_path: Path, caches_server: tuple[str, Path]
) -> None:
    repo = git_repository(tmp_path / "repo", {"lock.txt": b"evil\n"})
    key, _ = caches.key_of(
        model_pb2.CacheStep(key_prefix="deps", key_files=["lock.txt"]), repo, caches.platform_tag()
    )
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        member = tarfile.TarInfo("../escaped")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"evil"))
    blob = caches_server[1] / mesh.project / "planted.1"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload.getvalue())
    record = cache_records.CacheRecord(key, len(payload.getvalue()), "-", f"{mesh.project}/planted.1", 1, 1)
    client = redis.Redis.from_url(mesh.valkey.url)
    try:
        await client.hset(cache_records.project_caches(mesh.project), key, record.dump())
    finally:
        await client.aclose()
    run, log = await run_once(mesh, await cache_pipeline(mesh, "test ! -e ../escaped"), repo)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, log
    assert f"cache {key}: not restored: member '../escaped' escapes the workspace" in log
    assert not list(mesh.workdir.rglob("escaped"))


def python_on_path() -> str:
    output = subprocess.run(["python3", "--version"], capture_output=True, text=True, check=True).stdout
    return output.split()[1]


async def setup_run(mesh: Mesh, setup: dict[str, str], **job: object) -> tuple[runs_pb2.Run, list[str]]:
    steps = [{"setup": setup}, {"run": {"command": "echo after setup"}}]
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": steps, **job}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    return run, await log_of(mesh, run)


async def test_a_setup_step_for_a_present_tool_passes_and_logs_its_version(mesh: Mesh) -> None:
    found = python_on_path()
    major_minor = ".".join(found.split(".")[:2])
    run, log = await setup_run(mesh, {"tool": "python", "version": major_minor})
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, log
    assert any(re.fullmatch(rf"setup python: /\S+/python3 {re.escape(found)}", line) for line in log), log
    assert "after setup" in log


async def test_a_setup_step_for_another_version_fails_setup_failed_naming_both(mesh: Mesh) -> None:
    found = python_on_path()
    run, log = await setup_run(mesh, {"tool": "python", "version": "2.7"})
    attempt = run.jobs[0].attempts[-1]
    assert run.state == runs_pb2.RUN_STATE_FAILED
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_SETUP_FAILED
    assert re.fullmatch(
        rf"setup python: version 2\.7 wanted, {re.escape(found)} found \(/\S+\)", attempt.message
    )
    assert "after setup" not in log


async def test_a_setup_step_for_a_missing_tool_fails_setup_failed(mesh: Mesh, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    run, _ = await setup_run(mesh, {"tool": "python", "version": "3.12"}, env={"PATH": str(empty)})
    attempt = run.jobs[0].attempts[-1]
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_SETUP_FAILED
    assert attempt.message == (
        "setup python 3.12: python3 or python not found on PATH (this worker installs nothing)"
    )

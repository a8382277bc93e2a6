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

import grpc
import pytest
from grpc import aio
from redis import asyncio as redis

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from services.pipeline.runs import caches as cache_records
from services.pipeline.runs import keys
from services.pipeline.runs.records import JobRecord
from services.pipeline.worker import caches
from tests.conftest import ServerFactory
from tests.helpers import Metadata, error_info, refused
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh
from tests.integration.pipeline.test_runs_artifacts import git_repository, secured  # noqa: F401 (a fixture)
from tools.stack.valkey import Valkey

CACHE_CAP = 1024 * 1024
PROJECT_CAP = 600 * 1024
ENV = {
    **RUN_ENV,
    "DEVMESH_PIPELINE_CACHE_MAX_BYTES": str(CACHE_CAP),
    "DEVMESH_PIPELINE_PROJECT_CACHES_MAX_BYTES": str(PROJECT_CAP),
}
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


def restore_request(parent: str, fence: str = "1") -> runs_pb2.RestoreCacheRequest:
    return runs_pb2.RestoreCacheRequest(parent=parent, job="build", attempt=1, fence=fence, key="deps-x")


async def one_save(parent: str) -> AsyncIterator[runs_pb2.SaveCacheRequest]:
    yield runs_pb2.SaveCacheRequest(parent=parent, job="build", attempt=1, fence="1", key="deps-x", data=b"x")


async def restored(runs: runs_pb2_grpc.RunServiceStub, request: runs_pb2.RestoreCacheRequest,
                   metadata: Metadata = ()) -> list[runs_pb2.CacheChunk]:  # fmt: skip
    return [chunk async for chunk in runs.RestoreCache(request, metadata=metadata)]


async def test_only_the_running_attempt_restores_or_saves_a_cache(mesh: Mesh) -> None:
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": [{"run": {"command": "true"}}]}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    for error in (
        await refused(restored, mesh.runs, restore_request(run.name)),
        await refused(mesh.runs.SaveCache, one_save(run.name)),
    ):
        assert (error.code(), error_info(error).reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ATTEMPT_NOT_RUNNING",
        )
    bad = await refused(restored, mesh.runs, restore_request(run.name, fence="not-a-fence"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_caches_take_a_worker_identity(
    secured: tuple[aio.Channel, dict[str, Metadata]],  # noqa: F811 (the imported fixture)
) -> None:
    channel, keys = secured
    runs = runs_pb2_grpc.RunServiceStub(channel)
    parent = "projects/nope/pipelines/ci/runs/rnothing"
    assert (await refused(restored, runs, restore_request(parent))).code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refused(runs.SaveCache, one_save(parent))).code() == grpc.StatusCode.UNAUTHENTICATED
    for role in ("operator", "viewer"):
        denied = await refused(restored, runs, restore_request(parent), keys[role])
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, role
        denied = await refused(runs.SaveCache, one_save(parent), metadata=keys[role])
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, role
    worker = await refused(restored, runs, restore_request(parent), keys["worker"])
    assert worker.code() == grpc.StatusCode.NOT_FOUND  # past access: the run does not exist
    worker = await refused(runs.SaveCache, one_save(parent), metadata=keys["worker"])
    assert worker.code() == grpc.StatusCode.NOT_FOUND


async def running_attempt(mesh: Mesh) -> tuple[runs_pb2.Run, JobRecord]:
    """A run whose one job sleeps, once it runs, and the job's record (its attempt and fence)."""
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": [{"run": {"command": "sleep 60"}}]}]})
    run = await mesh.run(pipeline)
    await mesh.job_in(run.name, "build", runs_pb2.JOB_STATE_RUNNING)
    client = redis.Redis.from_url(mesh.valkey.url)
    try:
        return run, JobRecord.load(await client.hget(keys.jobs(run.name.rsplit("/", 1)[1]), "build"))
    finally:
        await client.aclose()


async def save_of(
    run: runs_pb2.Run, record: JobRecord, key: str, size: int
) -> AsyncIterator[runs_pb2.SaveCacheRequest]:
    yield runs_pb2.SaveCacheRequest(
        parent=run.name, job="build", attempt=record.n, fence=str(record.f), key=key
    )
    for _ in range(0, size, 256 * 1024):
        yield runs_pb2.SaveCacheRequest(data=b"x" * (256 * 1024))


async def test_the_service_refuses_a_save_over_the_cap_and_a_second_save_of_a_key(mesh: Mesh) -> None:
    run, record = await running_attempt(mesh)

    def save(size: int) -> AsyncIterator[runs_pb2.SaveCacheRequest]:
        return save_of(run, record, "deps-k", size)

    try:
        too_large = await refused(mesh.runs.SaveCache, save(CACHE_CAP + 256 * 1024))
        assert (too_large.code(), error_info(too_large).reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "CACHE_TOO_LARGE",
        )
        assert not await entries(mesh)
        saved = await mesh.runs.SaveCache(save(256 * 1024))
        assert (saved.key, saved.size_bytes) == ("deps-k", 256 * 1024)
        again = await refused(mesh.runs.SaveCache, save(256 * 1024))
        assert (again.code(), error_info(again).reason) == (grpc.StatusCode.ALREADY_EXISTS, "CACHE_EXISTS")
        assert list(await entries(mesh)) == ["deps-k"]
    finally:
        await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))


async def test_past_the_projects_total_cap_the_least_recently_used_entries_go(
    mesh: Mesh, caches_server: tuple[str, Path]
) -> None:
    run, record = await running_attempt(mesh)
    try:
        for key in ("deps-1", "deps-2"):
            await mesh.runs.SaveCache(save_of(run, record, key, 256 * 1024))
        request = runs_pb2.RestoreCacheRequest(
            parent=run.name, job="build", attempt=record.n, fence=str(record.f), key="deps-1"
        )
        restored = [chunk async for chunk in mesh.runs.RestoreCache(request)]
        assert restored[0].exact_match and sum(len(c.data) for c in restored) == 256 * 1024
        await mesh.runs.SaveCache(save_of(run, record, "deps-3", 256 * 1024))  # 768 KiB > 600 KiB
        assert sorted(await entries(mesh)) == ["deps-1", "deps-3"]  # deps-2 was used least recently
        assert len(list((caches_server[1] / mesh.project).iterdir())) == 2  # its blob went with it
    finally:
        await mesh.runs.CancelRun(runs_pb2.CancelRunRequest(name=run.name))

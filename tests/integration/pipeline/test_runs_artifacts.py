"""Artifacts of runs, with real workers: an artifact step's files come back byte for byte,
listed in pages; one over its cap or reaching outside the workspace fails its job with the
reason; only the running attempt may upload."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc import aio

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, error_info, eventually, key_metadata, mint_key, refused
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh, job
from tools.stack import vault_bootstrap
from tools.stack.valkey import Valkey

ARTIFACT_CAP = 4 * 1024 * 1024
ENV = {**RUN_ENV, "DEVMESH_PIPELINE_ARTIFACT_MAX_BYTES": str(ARTIFACT_CAP)}


@pytest.fixture(scope="module")
async def artifacts_server(
    valkey: Valkey, start_config_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[aio.Channel, str, Path]]:
    data = tmp_path_factory.mktemp("data")
    _, addr = await start_config_server(valkey.url, env=ENV, specs=[pipeline_app.SPEC], data_dir=str(data))
    async with aio.insecure_channel(addr) as channel:
        yield channel, addr, data / "pipeline" / "artifacts"


@pytest.fixture
async def mesh(
    artifacts_server: tuple[aio.Channel, str, Path], valkey: Valkey, tmp_path: Path
) -> AsyncIterator[Mesh]:
    channel, addr, _ = artifacts_server
    pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
    project = f"p-{uuid.uuid4().hex[:12]}"
    await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
    found = Mesh(pipelines, runs_pb2_grpc.RunServiceStub(channel), valkey, f"t{uuid.uuid4().hex[:10]}", project,
                 tmp_path)  # fmt: skip
    found.start_worker(DEVMESH_WORKER_PIPELINE_ADDR=addr)
    yield found
    found.stop_workers()


def git_repository(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir()
    for name, content in files.items():
        (path / name).write_bytes(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["git", "init", "-q"], ["git", "add", "."], [*git, "commit", "-q", "-m", "first"]):
        subprocess.run(argv, cwd=path, check=True)
    return path


async def download(
    runs: runs_pb2_grpc.RunServiceStub, name: str
) -> tuple[bytes, list[runs_pb2.ArtifactChunk]]:
    chunks = [chunk async for chunk in runs.GetArtifact(runs_pb2.GetArtifactRequest(name=name))]
    return b"".join(c.data for c in chunks), chunks


async def test_an_artifact_steps_files_come_back_byte_identical_through_get_artifact(
    mesh: Mesh, tmp_path: Path
) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # incompressible: several chunks each way
    repo = git_repository(tmp_path / "repo", {"data.bin": payload, "notes.txt": b"kept\n"})
    steps = [
        {"checkout": {}},
        {"run": {"command": "mkdir -p out/sub && printf 'made by the job\\n' > out/sub/made.txt"}},
        {"artifact": {"name": "Build Output", "paths": ["data.bin", "out", "*.txt"]}},
    ]
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": steps}]})
    run = await mesh.until((await mesh.run(pipeline, source=str(repo))).name)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, run
    listed = await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name))
    (artifact,) = listed.artifacts
    assert artifact.name == f"{run.name}/artifacts/build-output"
    assert (artifact.job, artifact.attempt, artifact.file_count) == ("build", 1, 5)
    content, chunks = await download(mesh.runs, artifact.name)
    assert len(chunks) > 1
    assert (chunks[0].size_bytes, chunks[0].sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert (artifact.size_bytes, artifact.sha256) == (chunks[0].size_bytes, chunks[0].sha256)
    with tarfile.open(fileobj=io.BytesIO(content)) as archive:
        assert archive.extractfile("data.bin").read() == payload  # type: ignore[union-attr]
        assert archive.extractfile("notes.txt").read() == b"kept\n"  # type: ignore[union-attr]
        assert archive.extractfile("out/sub/made.txt").read() == b"made by the job\n"  # type: ignore[union-attr]


async def test_list_artifacts_pages_through_a_runs_artifacts_and_filters_by_job(mesh: Mesh) -> None:
    steps = [{"run": {"command": "echo a > a; echo b > b; echo c > c"}}]
    steps += [{"artifact": {"name": n, "paths": [n]}} for n in ("c", "a", "b")]
    other = [{"run": {"command": "echo d > d"}}, {"artifact": {"name": "d", "paths": ["d"]}}]
    pipeline = await mesh.pipeline({"jobs": [{"id": "one", "steps": steps}, {"id": "two", "steps": other}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, run
    first = await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name, page_size=3))
    assert [a.name.rsplit("/", 1)[1] for a in first.artifacts] == ["a", "b", "c"]
    assert first.next_page_token
    rest = await mesh.runs.ListArtifacts(
        runs_pb2.ListArtifactsRequest(parent=run.name, page_size=3, page_token=first.next_page_token)
    )
    assert [a.name.rsplit("/", 1)[1] for a in rest.artifacts] == ["d"] and not rest.next_page_token
    only_two = await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name, job="two"))
    assert [a.job for a in only_two.artifacts] == ["two"]
    foreign = await refused(
        mesh.runs.ListArtifacts,
        runs_pb2.ListArtifactsRequest(parent=run.name, job="two", page_token=first.next_page_token),
    )
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT  # a token of another query


async def test_an_artifact_over_its_cap_fails_the_job_with_the_reason_and_keeps_nothing(
    mesh: Mesh, artifacts_server: tuple[aio.Channel, str, Path]
) -> None:
    steps = [
        {"run": {"command": f"head -c {ARTIFACT_CAP + 100_000} /dev/urandom > big.bin"}},
        {"artifact": {"name": "big", "paths": ["big.bin"]}},
        {"run": {"command": "echo never"}},
    ]
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": steps}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    attempt = run.jobs[0].attempts[-1]
    assert run.state == runs_pb2.RUN_STATE_FAILED
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_ARTIFACT_FAILED
    assert attempt.message == f"artifact big: the archive is over the cap of {ARTIFACT_CAP} bytes"
    listed = await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name))
    assert not listed.artifacts
    run_dir = artifacts_server[2] / run.name.rsplit("/", 1)[1]
    assert not run_dir.exists() or not list(run_dir.iterdir())
    log = await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt.name))
    assert "never" not in log.lines


async def test_a_path_through_a_symlink_out_of_the_workspace_is_refused(mesh: Mesh) -> None:
    steps = [
        {"run": {"command": "ln -s /etc leak"}},
        {"artifact": {"name": "leak", "paths": ["leak/hostname"]}},
    ]
    pipeline = await mesh.pipeline({"jobs": [{"id": "build", "steps": steps}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    attempt = run.jobs[0].attempts[-1]
    assert run.state == runs_pb2.RUN_STATE_FAILED
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_ARTIFACT_FAILED
    assert "outside the workspace" in attempt.message
    assert not (await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name))).artifacts


async def test_an_artifact_marked_always_is_stored_after_a_failed_step(mesh: Mesh) -> None:
    steps = [
        {"run": {"command": "echo report > report.xml; exit 4"}},
        {"artifact": {"name": "report", "paths": ["report.xml"], "always": True}},
    ]
    pipeline = await mesh.pipeline({"jobs": [{"id": "test", "steps": steps}]})
    run = await mesh.until((await mesh.run(pipeline)).name)
    assert run.jobs[0].attempts[-1].reason == runs_pb2.ATTEMPT_REASON_EXIT_CODE  # the step's failure
    (artifact,) = (await mesh.runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name))).artifacts
    content, _ = await download(mesh.runs, artifact.name)
    with tarfile.open(fileobj=io.BytesIO(content)) as archive:
        assert archive.extractfile("report.xml").read() == b"report\n"  # type: ignore[union-attr]


async def test_only_the_running_attempt_may_upload_and_a_missing_artifact_is_not_found(mesh: Mesh) -> None:
    pipeline = await mesh.pipeline({"jobs": [job("build", "true")]})
    run = await mesh.until((await mesh.run(pipeline)).name)

    async def one(message: runs_pb2.UploadArtifactRequest) -> AsyncIterator[runs_pb2.UploadArtifactRequest]:
        yield message

    late = runs_pb2.UploadArtifactRequest(
        parent=run.name, artifact_id="late", job="build", attempt=1, fence="1", data=b"x"
    )
    error = await refused(mesh.runs.UploadArtifact, one(late))
    assert (error.code(), error_info(error).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ATTEMPT_NOT_RUNNING",
    )
    missing = await refused(download, mesh.runs, f"{run.name}/artifacts/nothing")
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    bad = await refused(download, mesh.runs, f"{run.name}/artifacts/Not_An_Id")
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
async def secured(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[aio.Channel, dict[str, Metadata]]]:  # fmt: skip
    role = vault_bootstrap.bootstrap(openbao.client(), ["pipeline"], tmp_path_factory.mktemp("approle"))[
        "pipeline"
    ]
    server, addr = await start_config_server(
        valkey.url, env=ENV, specs=[pipeline_app.SPEC], auth="required", vault_addr=openbao.server.addr,
        vault_role_id=role.role_id, vault_secret_id_file=str(role.secret_id_file),
        data_dir=str(tmp_path_factory.mktemp("data")),
    )  # fmt: skip
    keys = {r: key_metadata(await mint_key(server, r)) for r in ("worker", "operator", "viewer")}
    keys["addr"] = (("addr", addr),)  # where a worker process reaches this server
    async with aio.insecure_channel(addr) as channel:
        yield channel, keys


async def test_uploading_an_artifact_takes_a_worker_identity(
    secured: tuple[aio.Channel, dict[str, Metadata]],
) -> None:
    channel, keys = secured
    runs = runs_pb2_grpc.RunServiceStub(channel)
    upload = runs_pb2.UploadArtifactRequest(
        parent="projects/nope/pipelines/ci/runs/rnothing", artifact_id="a", job="build", attempt=1, fence="1"
    )

    async def one() -> AsyncIterator[runs_pb2.UploadArtifactRequest]:
        yield upload

    anonymous = await refused(runs.UploadArtifact, one())
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    for role in ("operator", "viewer"):
        denied = await refused(runs.UploadArtifact, one(), metadata=keys[role])
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, role
    worker = await refused(runs.UploadArtifact, one(), metadata=keys["worker"])
    assert worker.code() == grpc.StatusCode.NOT_FOUND  # past access: the run does not exist
    listed = await refused(
        runs.ListArtifacts, runs_pb2.ListArtifactsRequest(parent=upload.parent), metadata=keys["worker"]
    )
    assert listed.code() == grpc.StatusCode.PERMISSION_DENIED  # a worker reads nothing


async def test_a_worker_with_a_worker_key_stores_its_artifact_on_a_server_with_auth_on(
    secured: tuple[aio.Channel, dict[str, Metadata]], valkey: Valkey, tmp_path: Path
) -> None:
    channel, keys = secured
    operator = keys["operator"]
    key_file = tmp_path / "worker-key"
    key_file.write_text(keys["worker"][0][1])
    pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
    project = f"p-{uuid.uuid4().hex[:12]}"
    await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project), metadata=operator)
    label = f"t{uuid.uuid4().hex[:10]}"
    steps = [{"run": {"command": "echo signed > r.txt"}}, {"artifact": {"name": "r", "paths": ["r.txt"]}}]
    definition = json_format.ParseDict(
        {"jobs": [{"id": "build", "runsOn": [label], "steps": steps}]}, model_pb2.PipelineDefinition()
    )
    created = await pipelines.CreatePipeline(
        pipeline_pb2.CreatePipelineRequest(
            parent=f"projects/{project}",
            pipeline_id="ci",
            pipeline=pipeline_pb2.Pipeline(definition=definition),
        ),
        metadata=operator,
    )
    runs = runs_pb2_grpc.RunServiceStub(channel)
    mesh = Mesh(pipelines, runs, valkey, label, project, tmp_path)
    mesh.start_worker(
        DEVMESH_WORKER_PIPELINE_ADDR=keys["addr"][0][1], DEVMESH_WORKER_API_KEY_FILE=str(key_file)
    )
    try:
        run = await runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=created.name), metadata=operator)

        async def finished() -> runs_pb2.Run | None:
            now = await runs.GetRun(runs_pb2.GetRunRequest(name=run.name), metadata=operator)
            return now if now.state not in (runs_pb2.RUN_STATE_QUEUED, runs_pb2.RUN_STATE_RUNNING) else None

        done = await eventually(finished, "the run to finish", within=60)
        assert done.state == runs_pb2.RUN_STATE_SUCCEEDED, done
        listed = await runs.ListArtifacts(runs_pb2.ListArtifactsRequest(parent=run.name), metadata=operator)
        assert [a.name.rsplit("/", 1)[1] for a in listed.artifacts] == ["r"]
    finally:
        mesh.stop_workers()

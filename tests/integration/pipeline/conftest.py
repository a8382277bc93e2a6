"""Fixtures of the pipeline integration tests: a pipeline server with the full call pipeline on
the session's Valkey (auth off), one with auth on, and a project id no other test uses."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import key_metadata, mint_key
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh
from tools.stack import vault_bootstrap
from tools.stack.valkey import Valkey

# A client that may send more than the server accepts (oversized snapshots).
CLIENT_OPTIONS = [("grpc.max_send_message_length", 16 << 20)]


@pytest.fixture(scope="session")
async def pipeline_channel(valkey: Valkey, start_config_server: ServerFactory) -> AsyncIterator[aio.Channel]:
    _, addr = await start_config_server(valkey.url, specs=[pipeline_app.SPEC])
    async with aio.insecure_channel(addr, options=CLIENT_OPTIONS) as channel:
        yield channel


@pytest.fixture
def pipelines(pipeline_channel: aio.Channel) -> pipeline_pb2_grpc.PipelineServiceStub:
    return pipeline_pb2_grpc.PipelineServiceStub(pipeline_channel)


@pytest.fixture
async def project(pipelines: pipeline_pb2_grpc.PipelineServiceStub) -> str:
    """A fresh project's id."""
    project_id = f"p-{uuid.uuid4().hex[:12]}"
    await pipelines.CreateProject(
        pipeline_pb2.CreateProjectRequest(
            project_id=project_id, project=pipeline_pb2.Project(display_name="t")
        )
    )
    return project_id


@dataclass
class Secured:
    """A pipeline server with auth on (its own AppRole), a channel to it and keys of two kinds."""

    channel: aio.Channel
    viewer: tuple[tuple[str, str], ...]
    throttled: tuple[tuple[str, str], ...]  # a key allowed one generation's cost, then nothing


@pytest.fixture(scope="module")
async def secured(
    valkey: Valkey,
    openbao: BootstrappedVault,
    start_config_server: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Secured]:
    role = vault_bootstrap.bootstrap(openbao.client(), ["pipeline"], tmp_path_factory.mktemp("approle"))[
        "pipeline"
    ]
    server, addr = await start_config_server(
        valkey.url,
        specs=[pipeline_app.SPEC],
        auth="required",
        vault_addr=openbao.server.addr,
        vault_role_id=role.role_id,
        vault_secret_id_file=str(role.secret_id_file),
    )
    viewer = key_metadata(await mint_key(server, "viewer"))
    throttled = key_metadata(await mint_key(server, "viewer", rate_per_second=0.001, rate_burst=5))
    async with aio.insecure_channel(addr, options=CLIENT_OPTIONS) as channel:
        yield Secured(channel, viewer, throttled)


# The run tests' fixtures: a server with short leases, a Mesh per test, a git repository.
@pytest.fixture(scope="module")
async def run_channel(valkey: Valkey, start_config_server: ServerFactory) -> AsyncIterator[aio.Channel]:
    _, addr = await start_config_server(valkey.url, env=RUN_ENV, specs=[pipeline_app.SPEC])
    async with aio.insecure_channel(addr) as channel:
        yield channel


@pytest.fixture
async def mesh(run_channel: aio.Channel, valkey: Valkey, tmp_path: Path) -> AsyncIterator[Mesh]:
    pipelines = pipeline_pb2_grpc.PipelineServiceStub(run_channel)
    project = f"p-{uuid.uuid4().hex[:12]}"
    await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
    found = Mesh(
        pipelines,
        runs_pb2_grpc.RunServiceStub(run_channel),
        valkey,
        f"t{uuid.uuid4().hex[:10]}",
        project,
        tmp_path,
    )
    yield found
    found.stop_workers()


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Path]:
    """A local git repository with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hello.txt").write_text("hello from the checkout\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-q", "-m", "first"]):
        subprocess.run(argv, cwd=repo, env=env, check=True)
    yield repo

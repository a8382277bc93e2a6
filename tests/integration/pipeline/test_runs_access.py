"""Who may do what with runs, with auth on: streams need credentials, gates a permission of
their own, and a gate that says so refuses its run's starter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format
from grpc import aio

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline import app as pipeline_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import error_info, eventually, key_metadata, mint_key
from tests.integration.pipeline.runs_harness import RUN_ENV, job
from tools.stack import vault_bootstrap
from tools.stack.valkey import Valkey


@dataclass
class Keys:
    channel: aio.Channel
    starter: tuple[tuple[str, str], ...]
    other_operator: tuple[tuple[str, str], ...]
    viewer: tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
async def keys(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Keys]:  # fmt: skip
    role = vault_bootstrap.bootstrap(openbao.client(), ["pipeline"], tmp_path_factory.mktemp("approle"))[
        "pipeline"
    ]
    server, addr = await start_config_server(
        valkey.url, env=RUN_ENV, specs=[pipeline_app.SPEC], auth="required", vault_addr=openbao.server.addr,
        vault_role_id=role.role_id, vault_secret_id_file=str(role.secret_id_file),
    )  # fmt: skip
    async with aio.insecure_channel(addr) as channel:
        yield Keys(
            channel,
            key_metadata(await mint_key(server, "operator")),
            key_metadata(await mint_key(server, "operator")),
            key_metadata(await mint_key(server, "viewer")),
        )


async def _gated_run(keys: Keys) -> str:
    pipelines = pipeline_pb2_grpc.PipelineServiceStub(keys.channel)
    project = f"p-{uuid.uuid4().hex[:12]}"
    await pipelines.CreateProject(
        pipeline_pb2.CreateProjectRequest(project_id=project), metadata=keys.starter
    )
    definition = json_format.ParseDict(
        {"jobs": [job("deploy", "true", approval={"environment": "prod", "preventSelfApproval": True},
                      runsOn=["nobody-has-this"])]},
        model_pb2.PipelineDefinition(),
    )  # fmt: skip
    created = await pipelines.CreatePipeline(
        pipeline_pb2.CreatePipelineRequest(
            parent=f"projects/{project}",
            pipeline_id="ci",
            pipeline=pipeline_pb2.Pipeline(definition=definition),
        ),
        metadata=keys.starter,
    )
    runs = runs_pb2_grpc.RunServiceStub(keys.channel)
    run = await runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=created.name), metadata=keys.starter)

    async def waiting() -> bool:
        now = await runs.GetRun(runs_pb2.GetRunRequest(name=run.name), metadata=keys.starter)
        return bool(now.jobs[0].state == runs_pb2.JOB_STATE_WAITING_FOR_APPROVAL)

    await eventually(waiting, "the gate to hold its job")
    return str(run.name)


async def test_following_a_run_without_credentials_is_unauthenticated(keys: Keys) -> None:
    runs = runs_pb2_grpc.RunServiceStub(keys.channel)
    stream = runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name="projects/p/pipelines/ci/runs/r1"))
    with pytest.raises(aio.AioRpcError) as refused:
        async for _ in stream:
            pass
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_viewer_may_not_decide_a_gate(keys: Keys) -> None:
    name = await _gated_run(keys)
    runs = runs_pb2_grpc.RunServiceStub(keys.channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await runs.ApproveGate(runs_pb2.ApproveGateRequest(name=name, job="deploy"), metadata=keys.viewer)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_runs_starter_may_not_approve_its_gate_and_another_operator_may(keys: Keys) -> None:
    name = await _gated_run(keys)
    runs = runs_pb2_grpc.RunServiceStub(keys.channel)
    approve = runs_pb2.ApproveGateRequest(name=name, job="deploy", comment="lgtm")
    with pytest.raises(aio.AioRpcError) as refused:
        await runs.ApproveGate(approve, metadata=keys.starter)
    assert (refused.value.code(), error_info(refused.value).reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SELF_APPROVAL",
    )
    approved = await runs.ApproveGate(approve, metadata=keys.other_operator)
    assert approved.jobs[0].skip_reason == "" and approved.jobs[0].state in (
        runs_pb2.JOB_STATE_WAITING_FOR_APPROVAL,  # approved; the coordinator queues it next
        runs_pb2.JOB_STATE_QUEUED,
    )
    await runs.CancelRun(runs_pb2.CancelRunRequest(name=name), metadata=keys.starter)

"""Secret actions against the real secrets service, as the caller who executes them: a rotation
that verifies succeeds; a plan whose second action fails undoes the rotation (the previous
version is the latest again) and FAILS with the reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from google.protobuf import duration_pb2
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.secrets.v1 import secrets_pb2 as spb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.debugger import app as debugger_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, key_metadata, mint_key
from tests.integration.debugger.test_remediation_execution import AUTOMATIC
from tests.integration.secrets.conftest import start_secrets
from tools.stack.valkey import Valkey


@dataclass(frozen=True)
class Stack:
    """A secrets server, a debugger that has it as its peer, and an admin of both."""

    secrets: secrets_pb2_grpc.SecretsServiceStub
    remediations: remediation_pb2_grpc.RemediationServiceStub
    admin: Metadata


@pytest.fixture(scope="module")
async def stack(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Stack]:
    secrets_server, secrets_addr = await start_secrets(start_config_server, valkey, openbao)
    _, debugger_addr = await start_config_server(
        valkey.url,
        env=AUTOMATIC,
        specs=[debugger_app.SPEC],
        peers=(("secrets", secrets_addr),),
        **openbao.settings("debugger"),
    )
    admin = key_metadata(await mint_key(secrets_server, "admin"))
    async with aio.insecure_channel(secrets_addr) as s, aio.insecure_channel(debugger_addr) as d:
        yield Stack(
            secrets_pb2_grpc.SecretsServiceStub(s), remediation_pb2_grpc.RemediationServiceStub(d), admin
        )


async def _rotating_secret(stack: Stack) -> spb.Secret:
    rotation = spb.RotationPolicy(interval=duration_pb2.Duration(seconds=3600), random=spb.RandomGenerator())
    sid = f"s{uuid.uuid4().hex[:10]}"
    await stack.secrets.CreateSecret(
        spb.CreateSecretRequest(secret_id=sid, secret=spb.Secret(rotation=rotation)), metadata=stack.admin
    )
    await stack.secrets.RotateSecret(
        spb.RotateSecretRequest(name=f"secrets/{sid}", promote=True), metadata=stack.admin
    )
    return await stack.secrets.GetSecret(spb.GetSecretRequest(name=f"secrets/{sid}"), metadata=stack.admin)


async def _execute(stack: Stack, plan: list[pb.Action]) -> pb.RemediationRecord:
    made = await stack.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(plan=plan), metadata=stack.admin
    )
    assert made.state == pb.REMEDIATION_STATE_APPROVED
    return await stack.remediations.ExecuteRemediation(
        pb.ExecuteRemediationRequest(name=made.name), metadata=stack.admin
    )


async def test_a_rotation_executes_and_verifies(stack: Stack) -> None:
    secret = await _rotating_secret(stack)
    done = await _execute(stack, [pb.Action(kind=pb.ACTION_KIND_SECRET_ROTATE, target=secret.name)])
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    now = await stack.secrets.GetSecret(spb.GetSecretRequest(name=secret.name), metadata=stack.admin)
    assert now.latest_version == secret.latest_version + 1


async def test_a_failing_second_action_undoes_the_rotation_before_failing(stack: Stack) -> None:
    secret = await _rotating_secret(stack)
    done = await _execute(
        stack,
        [
            pb.Action(kind=pb.ACTION_KIND_SECRET_ROTATE, target=secret.name),
            pb.Action(
                kind=pb.ACTION_KIND_SECRET_DISABLE_VERSION, target=secret.name, parameters={"version": "99"}
            ),
        ],
    )
    assert done.state == pb.REMEDIATION_STATE_FAILED
    assert "action 1 failed" in done.history[-1].reason and "NOT_FOUND" in done.history[-1].reason
    assert [(s.action, s.status) for s in done.steps] == [
        (0, "executing"),
        (0, "applied"),
        (1, "executing"),
        (1, "failed"),
        (0, "undoing"),
        (0, "undone"),
    ]
    now = await stack.secrets.GetSecret(spb.GetSecretRequest(name=secret.name), metadata=stack.admin)
    assert now.latest_version == secret.latest_version  # the previous version is the latest again

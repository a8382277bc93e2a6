"""Promoting a secret version against the real secrets service: the chosen version's value is
added again as the newest version, so it is the latest; a failed verification or a later
action's failure undoes it (the version that was the latest is again); after a replica died
inside the execute, the add is found (recorded as applied) or found missing (executed again).
No value, nor its digest, appears in the remediation, its history, the logs or the errors."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.secrets.v1 import secrets_pb2 as spb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.debugger import app as debugger_app
from services.debugger.remediation import Action, ActionKind, Remediation, Risk, State, Step, Transition
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_secrets_client import SecretPromotion
from services.debugger.remediation_store import RemediationStore
from services.runtime import request_context
from services.runtime.peers import PeerChannel
from services.runtime.server import Server
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, key_metadata, mint_key
from tests.integration.debugger.test_remediation_execution import AUTOMATIC
from tests.integration.secrets.conftest import start_secrets
from tools.stack.valkey import Valkey


@dataclass(frozen=True)
class Stack:
    """A secrets server (and its address), a debugger that has it as its peer, an admin of both."""

    secrets: secrets_pb2_grpc.SecretsServiceStub
    secrets_addr: str
    remediations: remediation_pb2_grpc.RemediationServiceStub
    admin: Metadata
    debugger: Server


@pytest.fixture(scope="module")
async def stack(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Stack]:
    secrets_server, secrets_addr = await start_secrets(start_config_server, valkey, openbao)
    debugger, debugger_addr = await start_config_server(
        valkey.url,
        env=AUTOMATIC,  # the promotion's risk is under the threshold: no approval to give
        specs=[debugger_app.SPEC],
        peers=(("secrets", secrets_addr),),
        **openbao.settings("debugger"),
    )
    admin = key_metadata(await mint_key(secrets_server, "admin"))
    async with aio.insecure_channel(secrets_addr) as s, aio.insecure_channel(debugger_addr) as d:
        yield Stack(
            secrets_pb2_grpc.SecretsServiceStub(s),
            secrets_addr,
            remediation_pb2_grpc.RemediationServiceStub(d),
            admin,
            debugger,
        )


async def _secret_with_two_values(stack: Stack) -> tuple[str, list[bytes]]:
    """A secret whose versions 1 and 2 hold fresh values; its name and the values."""
    name = f"secrets/p{uuid.uuid4().hex[:10]}"
    await stack.secrets.CreateSecret(
        spb.CreateSecretRequest(secret_id=name.split("/")[1], secret=spb.Secret()), metadata=stack.admin
    )
    values = [f"value-{n}-{uuid.uuid4().hex}".encode() for n in (1, 2)]
    for value in values:
        await stack.secrets.AddSecretVersion(
            spb.AddSecretVersionRequest(parent=name, payload=spb.SecretPayload(data=value)),
            metadata=stack.admin,
        )
    return name, values


def _promote(secret: str, version: int) -> pb.Action:
    return pb.Action(
        kind=pb.ACTION_KIND_SECRET_PROMOTE_VERSION, target=secret, parameters={"version": str(version)}
    )


async def _execute(stack: Stack, plan: list[pb.Action]) -> pb.RemediationRecord:
    made = await stack.remediations.ProposeRemediation(
        pb.ProposeRemediationRequest(plan=plan), metadata=stack.admin
    )
    assert made.state == pb.REMEDIATION_STATE_APPROVED
    return await stack.remediations.ExecuteRemediation(
        pb.ExecuteRemediationRequest(name=made.name), metadata=stack.admin
    )


async def _latest(stack: Stack, secret: str) -> tuple[int, bytes]:
    found = await stack.secrets.GetSecret(spb.GetSecretRequest(name=secret), metadata=stack.admin)
    value = await stack.secrets.AccessSecretVersion(
        spb.AccessSecretVersionRequest(name=f"{secret}/versions/latest"), metadata=stack.admin
    )
    return found.latest_version, value.payload.data


def _never_shown(values: list[bytes], *places: bytes | str) -> None:
    for value in values:
        for shown in (value, value.hex().encode(), hashlib.sha256(value).hexdigest().encode()):
            for place in places:
                text = place if isinstance(place, bytes) else place.encode()
                assert shown not in text


async def test_promoting_a_version_makes_its_value_the_latest_and_shows_it_nowhere(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    secret, values = await _secret_with_two_values(stack)
    done = await _execute(stack, [_promote(secret, 1)])
    assert done.state == pb.REMEDIATION_STATE_SUCCEEDED, done.history[-1].reason
    assert await _latest(stack, secret) == (3, values[0])  # version 1's value, added as version 3
    assert [s.status for s in done.steps] == ["executing", "applied"]
    assert "version 3, the latest" in done.steps[1].detail
    got = await stack.remediations.GetRemediation(
        pb.GetRemediationRequest(name=done.name), metadata=stack.admin
    )
    out, err = capfd.readouterr()
    _never_shown(values, done.SerializeToString(), got.SerializeToString(), str(got), out, err)


async def test_a_promotion_whose_verification_fails_is_undone_and_the_latest_restored(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    secret, values = await _secret_with_two_values(stack)
    # Action 1 promotes version 2 after action 0 promoted version 1: action 0's verification
    # finds the latest holding another value.
    done = await _execute(stack, [_promote(secret, 1), _promote(secret, 2)])
    assert done.state == pb.REMEDIATION_STATE_FAILED
    reason = done.history[-1].reason
    assert "verification of action 0 failed" in reason and "undone in reverse order: [1, 0]" in reason
    assert await _latest(stack, secret) == (2, values[1])  # what was the latest before
    versions = await stack.secrets.ListSecretVersions(
        spb.ListSecretVersionsRequest(parent=secret), metadata=stack.admin
    )
    assert [v.state for v in versions.versions[:2]] == [spb.SecretVersion.STATE_DISABLED] * 2
    out, err = capfd.readouterr()
    _never_shown(values, done.SerializeToString(), reason, out, err)


async def test_a_later_action_failing_undoes_the_promotion(stack: Stack) -> None:
    secret, values = await _secret_with_two_values(stack)
    missing = pb.Action(
        kind=pb.ACTION_KIND_SECRET_DISABLE_VERSION, target=secret, parameters={"version": "99"}
    )
    done = await _execute(stack, [_promote(secret, 1), missing])
    assert done.state == pb.REMEDIATION_STATE_FAILED and "action 1 failed" in done.history[-1].reason
    assert await _latest(stack, secret) == (2, values[1])


async def test_a_promotion_of_a_disabled_version_fails_naming_it_and_adds_nothing(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    secret, values = await _secret_with_two_values(stack)
    await stack.secrets.DisableSecretVersion(
        spb.DisableSecretVersionRequest(name=f"{secret}/versions/1"), metadata=stack.admin
    )
    done = await _execute(stack, [_promote(secret, 1)])
    assert (
        done.state == pb.REMEDIATION_STATE_FAILED and "AccessSecretVersion refused" in done.history[-1].reason
    )
    assert await _latest(stack, secret) == (2, values[1])
    out, err = capfd.readouterr()
    _never_shown(values, done.SerializeToString(), out, err)


async def test_after_a_crash_inside_the_execute_a_landed_promotion_is_found_and_a_lost_one_is_not(
    stack: Stack,
) -> None:
    secret, _ = await _secret_with_two_values(stack)
    peer = PeerChannel("secrets", stack.secrets_addr, None)
    promotion = SecretPromotion(peer)
    action = Action(kind=ActionKind.SECRET_PROMOTE_VERSION, target=secret, parameters={"version": "1"})
    token = request_context.forwardable.set(tuple(stack.admin))
    try:
        before = await promotion.prepare(action)
        assert before == {"newest": "2"}
        assert await promotion.recover(action, before, "r-0") is None  # nothing landed: execute again
        applied = await promotion.execute(action, "r-0")
        recovered = await promotion.recover(action, before, "r-0")
        assert recovered is not None and recovered.undo == applied.undo == {"added": "3"}
        assert await promotion.recover(action, await promotion.prepare(action), "r-0") is None
    finally:
        request_context.forwardable.reset(token)
        await peer.close()


async def _left_inside_the_execute(
    store: RemediationStore, action: Action, prepared: dict[str, str]
) -> Remediation:
    """The remediation as a replica that died inside the promotion's execute leaves it."""
    now = time.time_ns() // 1000
    remediation = Remediation(
        id=f"r{uuid.uuid4().hex[:20]}",
        diagnosis="",
        plan=(action,),
        risk=Risk(0.1, ("low",), "", False, 0.3),
        automatic=True,
        required_approvals=0,
        proposer="tests",
        create_time_us=now,
        state=State.EXECUTING,
        history=(Transition(None, State.EXECUTING, "tests", now, "left by a dead replica"),),
        steps=(Step(0, "executing", "executing", "k-0", prepared),),
    )
    await store.write(remediation, None)
    return remediation


@pytest.mark.parametrize("landed", [True, False], ids=["the-add-landed", "the-add-was-lost"])
async def test_a_promotion_resumed_after_its_replica_died_inside_the_execute_adds_its_version_once(
    stack: Stack, landed: bool
) -> None:
    secret, values = await _secret_with_two_values(stack)
    peer = PeerChannel("secrets", stack.secrets_addr, None)
    promotion = SecretPromotion(peer)
    store = RemediationStore(stack.debugger.runtime.redis, stack.debugger.runtime.durable)
    action = Action(kind=ActionKind.SECRET_PROMOTE_VERSION, target=secret, parameters={"version": "1"})
    token = request_context.forwardable.set(tuple(stack.admin))
    try:
        left = await _left_inside_the_execute(store, action, await promotion.prepare(action))
        if landed:
            await promotion.execute(action, "k-0")  # the dead replica's add reached the secrets service
        done = await Execution(store, [promotion], replica="executor/b").resume(left.id)
    finally:
        request_context.forwardable.reset(token)
        await peer.close()
    assert done.state is State.SUCCEEDED, done.history[-1].reason
    assert ("recovered" in done.steps[-1].detail) is landed
    versions = await stack.secrets.ListSecretVersions(
        spb.ListSecretVersionsRequest(parent=secret), metadata=stack.admin
    )
    assert len(versions.versions) == 3  # one add, whether it landed before the crash or after
    assert await _latest(stack, secret) == (3, values[0])

"""The secrets service on real OpenBao and Valkey, auth on, for the secrets tests: a server per
module (`secrets`), a secret id per test (`sid`), and the calls they make again and again."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from grpc import aio

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.runtime.server import Server
from services.secrets import app as secrets_app
from services.secrets.vault_store import INTERRUPTED_AFTER_US, SecretStore, now_us
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, key_metadata, mint_key
from tools.stack.valkey import Valkey

# Short intervals: the scheduler looks for due rotations, a quiet watch hears progress, soon.
FAST = {"DEVMESH_SECRETS_ROTATION_CHECK_INTERVAL": "0.1", "DEVMESH_SECRETS_WATCH_PROGRESS_INTERVAL": "0.2"}
READ, MANAGE, ADMIN = pb.Binding.LEVEL_READ, pb.Binding.LEVEL_MANAGE, pb.Binding.LEVEL_ADMIN


@dataclass
class Secrets:
    """A secrets server and a channel to it."""

    server: Server
    addr: str
    channel: aio.Channel

    @property
    def stub(self) -> secrets_pb2_grpc.SecretsServiceStub:
        return secrets_pb2_grpc.SecretsServiceStub(self.channel)

    async def key(self, role: str) -> Metadata:
        """Call metadata with a new API key of `role` on this server (`mint_key`)."""
        return key_metadata(await mint_key(self.server, role))


async def start_secrets(
    start_config_server: ServerFactory, valkey: Valkey, openbao: BootstrappedVault, **settings: Any
) -> tuple[Server, str]:
    """Another secrets server (a replica) on the session's Valkey and OpenBao."""
    return await start_config_server(
        valkey.url, env=FAST, specs=[secrets_app.SPEC], **{**openbao.settings("secrets"), **settings}
    )


@pytest.fixture(scope="module")
async def secrets(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Secrets]:
    server, addr = await start_secrets(start_config_server, valkey, openbao)
    async with aio.insecure_channel(addr) as channel:
        yield Secrets(server, addr, channel)


@pytest.fixture
def sid() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


def revision_of(etag: str) -> int:
    """The metadata revision an etag (`"r3-v2-..."`) names: how many writes the secret has had."""
    match = re.match(r'^"r(\d+)-', etag)
    assert match, etag
    return int(match[1])


def version(sid: str, n: int | str) -> str:
    return f"secrets/{sid}/versions/{n}"


async def add(s: Secrets, md: Any, sid: str, value: bytes, **kwargs: Any) -> pb.SecretVersion:
    """Add `value` as the next version of secret `sid`."""
    return await s.stub.AddSecretVersion(
        pb.AddSecretVersionRequest(parent=f"secrets/{sid}", payload=pb.SecretPayload(data=value), **kwargs),
        metadata=md,
    )


async def access(s: Secrets, md: Any, name: str) -> pb.AccessSecretVersionResponse:
    return await s.stub.AccessSecretVersion(pb.AccessSecretVersionRequest(name=name), metadata=md)


async def following(stream: Any) -> None:
    """Return once `stream` follows the event log: its first message, a progress event on a
    quiet stream, says where it starts, and every event after that reaches it."""
    assert (await asyncio.wait_for(stream.read(), 10)).type == pb.SecretEvent.TYPE_PROGRESS


async def next_event(stream: Any) -> pb.SecretEvent:
    """The stream's next event that is not a progress event."""
    while (event := await asyncio.wait_for(stream.read(), 10)).type == pb.SecretEvent.TYPE_PROGRESS:
        pass
    return event


async def mark_deleted(secrets: Secrets, sid: str, *, died: bool) -> SecretStore:
    """Write the mark a delete writes before it removes the secret from Vault; `died`: long
    enough ago that its delete is taken as interrupted."""
    assert secrets.server.runtime.vault is not None
    store = SecretStore(secrets.server.runtime.vault)
    marked = await store.read(sid, deleting=True)
    marked.deleting_us = now_us() - (INTERRUPTED_AFTER_US + 1_000_000 if died else 0)
    await store.write_meta(marked)
    return store

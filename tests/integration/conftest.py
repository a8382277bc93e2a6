"""Fixtures of the integration tests: a config server with auth off for the whole session, and
config and secrets servers with auth on for each module that asks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from grpc import aio

from devmesh.config.v1 import config_pb2_grpc
from services.runtime.server import Server
from services.secrets import app as secrets_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import key_metadata, mint_key
from tools.stack.valkey import Valkey


@pytest.fixture(scope="session")
async def config_addr(valkey: Valkey, start_config_server: ServerFactory) -> str:
    """A config server with auth off, shared by the whole session."""
    _, addr = await start_config_server(valkey.url)
    return addr


@pytest.fixture(scope="session")
async def channel(config_addr: str) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(config_addr) as ch:
        yield ch


@pytest.fixture
def config(channel: aio.Channel) -> config_pb2_grpc.ConfigServiceStub:
    return config_pb2_grpc.ConfigServiceStub(channel)


@dataclass
class Servers:
    """A config server and a secrets server, auth on, channels to both and an admin key."""

    config: Server
    config_channel: aio.Channel
    secrets_channel: aio.Channel
    admin: tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
async def servers(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Servers]:
    config, config_addr = await start_config_server(valkey.url, **openbao.settings())
    _, secrets_addr = await start_config_server(
        valkey.url, specs=[secrets_app.SPEC], **openbao.settings("secrets")
    )
    admin = key_metadata(await mint_key(config, "admin"))
    # Ours may send more than the server accepts; what comes back is the client's default limit.
    options = [("grpc.max_send_message_length", 16 << 20)]
    async with (
        aio.insecure_channel(config_addr, options=options) as config_channel,
        aio.insecure_channel(secrets_addr, options=options) as secrets_channel,
    ):
        yield Servers(config, config_channel, secrets_channel, admin)

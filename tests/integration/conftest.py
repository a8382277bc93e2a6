"""Fixtures of the integration tests: a config server with auth off for the whole session;
for each module that asks, config and secrets servers with auth on (`servers`), or one config
server with auth on and ways to call it as different principals (`mesh`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from grpc import aio

from devmesh.config.v1 import (
    api_keys_pb2_grpc,
    audit_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    tokens_pb2_grpc,
)
from services.config.tokens import TokenIssuer
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


@dataclass
class Mesh:
    """One auth-on config server and ways to call it as different principals."""

    server: Server
    addr: str
    channel: aio.Channel

    def config(self) -> config_pb2_grpc.ConfigServiceStub:
        return config_pb2_grpc.ConfigServiceStub(self.channel)

    def keys(self) -> api_keys_pb2_grpc.ApiKeyServiceStub:
        return api_keys_pb2_grpc.ApiKeyServiceStub(self.channel)

    def tokens(self) -> tokens_pb2_grpc.TokenServiceStub:
        return tokens_pb2_grpc.TokenServiceStub(self.channel)

    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    async def mint(self, role: str, **fields: Any) -> str:
        """An API key of `role` on this server (`mint_key`)."""
        return await mint_key(self.server, role, **fields)

    def issuer(self) -> TokenIssuer:
        assert self.server.runtime.vault is not None
        return TokenIssuer(self.server.runtime.vault, "devmesh")


@pytest.fixture(scope="module")
async def mesh(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Mesh]:
    # The JWKS refreshes every second: a retired key version leaves it quickly.
    server, addr = await start_config_server(valkey.url, **openbao.settings(), auth_jwks_refresh=1.0)
    async with aio.insecure_channel(addr) as channel:
        yield Mesh(server, addr, channel)


def resolve_request(ns: str = "nowhere") -> config_pb2.ResolveConfigRequest:
    """A ResolveConfig request: the call the identity tests make to see who gets through."""
    return config_pb2.ResolveConfigRequest(name=f"namespaces/{ns}/environments/default")

"""Fixtures of the debugger's integration tests: debugger servers on the session's Valkey, and
debuggers whose background executor is on, stopped when the test module that started them ends
(a live executor would execute other tests' remediations on the shared Valkey)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2_grpc
from services import catalog
from services.debugger import app as debugger_app
from services.runtime import redis_client
from services.runtime.server import Runtime, Server
from services.runtime.settings import RuntimeSettings
from tests.conftest import TEST_ENV, ServerFactory
from tools.stack.valkey import Valkey

# Logs larger than grpc's default message limits go through the streaming RPC; the unary
# tests stay under them.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]


@pytest.fixture(scope="module")
async def debugger_addr(valkey: Valkey, start_config_server: ServerFactory) -> str:
    _, addr = await start_config_server(valkey.url, specs=[debugger_app.SPEC])
    return addr


@pytest.fixture(scope="module")
async def debugger_channel(debugger_addr: str) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(debugger_addr, options=CHANNEL_OPTIONS) as channel:
        yield channel


@pytest.fixture
def debugger(debugger_channel: aio.Channel) -> debugger_pb2_grpc.DebuggerServiceStub:
    return debugger_pb2_grpc.DebuggerServiceStub(debugger_channel)


@contextlib.asynccontextmanager
async def executing_debugger(
    redis_url: str, env: dict[str, str], peers: tuple[tuple[str, str], ...] = ()
) -> AsyncIterator[tuple[Server, str]]:
    """A debugger (auth off, loopback plaintext) whose background executor is on, stopped on exit."""
    settings = RuntimeSettings(
        redis_url=redis_url,
        grpc_addr="127.0.0.1:0",
        health_interval=0.2,
        insecure=True,
        auth="off",
        peers=peers,
    )
    environ = {**TEST_ENV, **env, "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "on"}
    runtime = Runtime(settings, redis_client.connect(redis_url, settings.redis_timeout), environ, None)
    server = Server(runtime, [debugger_app.SPEC], mesh=catalog.every())
    port = await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)
        await runtime.aclose()

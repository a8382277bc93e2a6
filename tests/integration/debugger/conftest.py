"""Fixtures of the debugger's integration tests: debugger servers on the session's Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2_grpc
from services.debugger import app as debugger_app
from tests.conftest import ServerFactory
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

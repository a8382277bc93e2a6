"""Explanations by a model, through a local chat-completions server: masked before the request,
de-masked after, cached, bounded in time, with the offline explainer as fallback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from services.debugger import app as debugger_app
from services.runtime import redis_client
from tests.conftest import ServerFactory
from tests.integration.debugger.chat_server import ChatServer, chat_server
from tests.integration.debugger.test_secrets_never_leave import SECRETS, planted_log
from tools.stack.valkey import Valkey

HOST = "db-primary.shop.internal"


@pytest.fixture(scope="module")
def model() -> Iterator[ChatServer]:
    with chat_server() as server:
        yield server


async def _stub(
    valkey: Valkey, start: ServerFactory, model: ChatServer, kind: str
) -> AsyncIterator[debugger_pb2_grpc.DebuggerServiceStub]:
    env = {
        "DEVMESH_DEBUGGER_EXPLAINER": kind,
        "DEVMESH_DEBUGGER_MODEL_URL": model.url,
        "DEVMESH_DEBUGGER_MODEL_NAME": "smollm2-135m",
        "DEVMESH_DEBUGGER_MODEL_TIMEOUT": "0.5",
    }
    _, addr = await start(valkey.url, env=env, specs=[debugger_app.SPEC])
    async with aio.insecure_channel(addr) as channel:
        yield debugger_pb2_grpc.DebuggerServiceStub(channel)


@pytest.fixture(scope="module")
async def explained(
    valkey: Valkey, start_config_server: ServerFactory, model: ChatServer
) -> AsyncIterator[debugger_pb2_grpc.DebuggerServiceStub]:
    async for stub in _stub(valkey, start_config_server, model, "openai"):
        yield stub


@pytest.fixture(scope="module")
async def ollama(
    valkey: Valkey, start_config_server: ServerFactory, model: ChatServer
) -> AsyncIterator[debugger_pb2_grpc.DebuggerServiceStub]:
    async for stub in _stub(valkey, start_config_server, model, "ollama"):
        yield stub


def _log() -> str:
    # Unique per test, so that the cache starts empty for it.
    return (
        planted_log()
        + f"Error: could not connect to {HOST} (10.1.2.3) for job-{uuid.uuid4().hex[:12]}: refused\n"
    )


async def test_no_secret_or_identifier_reaches_the_model_and_the_answer_names_them_again(
    explained: debugger_pb2_grpc.DebuggerServiceStub, model: ChatServer, valkey: Valkey
) -> None:
    model.mode, before = "answer", len(model.requests)
    diagnosis = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=_log()))
    sent = b"\n".join(model.raw_requests[before:]).decode()
    assert len(model.requests) == before + 1
    assert diagnosis.explanation.provider == "openai" and diagnosis.explanation.model == "smollm2-135m"
    for secret in SECRETS:
        assert secret not in sent and secret not in str(diagnosis)
    assert HOST not in sent and "10.1.2.3" not in sent and "<HOST_1>" in sent
    assert HOST in diagnosis.explanation.text  # de-masked for the caller
    client = redis_client.connect(valkey.url, 2.0)
    try:
        cached = [
            await client.get(k) async for k in client.scan_iter(match="devmesh:debugger:explanations:*")
        ]
    finally:
        await client.aclose()
    assert cached and not any(HOST.encode() in c or b"10.1.2.3" in c for c in cached)


async def test_the_same_failure_is_explained_once_and_then_from_the_cache(
    explained: debugger_pb2_grpc.DebuggerServiceStub, model: ChatServer
) -> None:
    model.mode, log = "answer", _log()
    first = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    asked = len(model.requests)
    again = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    assert len(model.requests) == asked
    assert again.explanation.cached and not first.explanation.cached
    assert again.explanation.text == first.explanation.text


@pytest.mark.parametrize("mode", ["slow", "error", "garbage"])
async def test_a_slow_failing_or_garbled_model_leaves_the_explanation_to_the_offline_explainer(
    explained: debugger_pb2_grpc.DebuggerServiceStub, model: ChatServer, mode: str
) -> None:
    model.mode = mode
    try:
        diagnosis = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=_log()))
    finally:
        model.mode = "answer"
    assert diagnosis.explanation.provider == "offline" and diagnosis.explanation.fallback
    assert diagnosis.explanation.text


async def test_ollamas_native_api_is_asked_the_same_way(
    ollama: debugger_pb2_grpc.DebuggerServiceStub, model: ChatServer
) -> None:
    model.mode, before = "answer", len(model.requests)
    diagnosis = await ollama.AnalyzeLog(pb.AnalyzeLogRequest(text=_log()))
    assert model.requests[before]["stream"] is False
    assert diagnosis.explanation.provider == "ollama" and HOST in diagnosis.explanation.text

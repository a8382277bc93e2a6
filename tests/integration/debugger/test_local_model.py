"""The real local model (`make llm`: llama.cpp's server with SmolLM2-135M) explains a diagnosis
through the same OpenAI-compatible client. Runs only where `make llm` installed it; the
wording of a 135M model is never asserted, only the plumbing."""

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
from tests.integration.debugger.test_secrets_never_leave import SECRETS, planted_log
from tools.stack.model_server import MODEL_NAME, ModelServer, installed, start_model_server
from tools.stack.valkey import Valkey

FILES = installed()
pytestmark = pytest.mark.skipif(FILES is None, reason="the local model is not installed (make llm)")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    assert FILES is not None
    server = start_model_server(FILES, log_dir=tmp_path_factory.mktemp("llama"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
async def explained(
    valkey: Valkey, start_config_server: ServerFactory, llama: ModelServer
) -> AsyncIterator[debugger_pb2_grpc.DebuggerServiceStub]:
    env = {
        "DEVMESH_DEBUGGER_EXPLAINER": "openai",
        "DEVMESH_DEBUGGER_MODEL_URL": llama.url,
        "DEVMESH_DEBUGGER_MODEL_NAME": MODEL_NAME,
        "DEVMESH_DEBUGGER_MODEL_TIMEOUT": "300",  # a build without SIMD makes ~3 tokens/s
    }
    _, addr = await start_config_server(valkey.url, env=env, specs=[debugger_app.SPEC])
    async with aio.insecure_channel(addr) as channel:
        yield debugger_pb2_grpc.DebuggerServiceStub(channel)


async def test_the_local_model_explains_and_no_planted_secret_reaches_an_answer_a_cache_entry_or_its_log(
    explained: debugger_pb2_grpc.DebuggerServiceStub, llama: ModelServer, valkey: Valkey
) -> None:
    log = planted_log() + f"Error: job-{uuid.uuid4().hex[:12]} failed\n"
    diagnosis = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    assert diagnosis.explanation.provider == "openai" and not diagnosis.explanation.fallback
    assert diagnosis.explanation.model == MODEL_NAME and diagnosis.explanation.text
    client = redis_client.connect(valkey.url, 2.0)
    try:
        cached = [
            await client.get(k) async for k in client.scan_iter(match="devmesh:debugger:explanations:*")
        ]
    finally:
        await client.aclose()
    server_log = llama.process.log_path.read_text(errors="replace")
    assert cached
    for secret in SECRETS:
        assert secret not in str(diagnosis) and secret not in server_log
        assert not any(secret.encode() in entry for entry in cached if entry)


async def test_the_local_models_answer_is_cached_for_the_same_failure(
    explained: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    log = f"npm ERR! code ERESOLVE\nnpm ERR! could not resolve dependency job-{uuid.uuid4().hex[:8]}\n"
    first = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    again = await explained.AnalyzeLog(pb.AnalyzeLogRequest(text=log))
    assert not first.explanation.fallback and not first.explanation.cached
    assert again.explanation.cached and again.explanation.text == first.explanation.text

"""A cost server (auth off, a data directory of its own) and a stub to it."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from services.cost import app as cost_app
from services.runtime.server import Server
from tests.conftest import ServerFactory
from tools.stack.valkey import Valkey

SAMPLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "focus" / "focus_1.0_sample.csv"
CHUNK = 64 * 1024
_DATABASES = itertools.count(1)


@dataclass
class CostServer:
    server: Server
    stub: cost_pb2_grpc.CostServiceStub
    data_dir: Path
    addr: str


@contextlib.asynccontextmanager
async def serve_cost(
    valkey: Valkey,
    start_config_server: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
    env: dict[str, str] | None = None,
) -> AsyncIterator[CostServer]:
    """A cost server of its own: a data directory and a Redis database no other one uses
    (catalogs of other modules stay apart)."""
    data_dir = tmp_path_factory.mktemp("cost-data")
    db = next(_DATABASES)
    server, addr = await start_config_server(
        f"{valkey.url.rsplit('/', 1)[0]}/{db}",
        specs=[cost_app.SPEC],
        data_dir=str(data_dir),
        env={
            "DEVMESH_COST_RETIRE_GRACE": "0.5",
            "DEVMESH_COST_WEBHOOK_FIRST_BACKOFF": "0.1",
            "DEVMESH_COST_WATCH_PROGRESS_INTERVAL": "0.3",
            **(env or {}),
        },
    )
    await server.runtime.redis.flushdb()
    options = [("grpc.max_send_message_length", 16 << 20)]
    async with aio.insecure_channel(addr, options=options) as channel:
        yield CostServer(server, cost_pb2_grpc.CostServiceStub(channel), data_dir, addr)


@pytest.fixture(scope="module")
async def cost(
    valkey: Valkey, start_config_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CostServer]:
    async with serve_cost(valkey, start_config_server, tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="session")
def sample() -> bytes:
    """The real FOCUS 1.0 sample (../shared/data/focus), as bytes."""
    if not SAMPLE.exists():
        pytest.skip(f"the real FOCUS sample is not at {SAMPLE} (../shared/data)")
    return SAMPLE.read_bytes()


def upload(
    data: bytes, source: str, periods: tuple[str, ...] = (), chunk: int = CHUNK, fmt: int = 0
) -> Iterator[pb.ImportCostDataRequest]:
    """The messages of an import of `data`: parameters in the first, then chunks."""
    yield pb.ImportCostDataRequest(
        source=source, billing_periods=list(periods), format=fmt, body={"data": data[:chunk]}
    )
    for start in range(chunk, len(data), chunk):
        yield pb.ImportCostDataRequest(body={"data": data[start : start + chunk]})

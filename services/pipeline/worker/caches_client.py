"""The worker's RestoreCache and SaveCache calls (over the channel of pipeline_client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.pipeline.worker.pipeline_client import UPLOAD_CHUNK_BYTES, UploadRefused


@dataclass(frozen=True)
class CacheCall:
    parent: str  # the run's name
    job: str
    attempt: int
    fence: str


async def restore(
    stub: runs_pb2_grpc.RunServiceStub,
    call: CacheCall,
    key: str,
    restore_keys: list[str],
    target: Path,
    timeout_s: float,
) -> runs_pb2.CacheChunk:
    """Write the matching entry's bytes to `target`; the stream's first message (an empty
    `key`: a miss, and `target` stays empty). UploadRefused when the service says no."""
    request = runs_pb2.RestoreCacheRequest(
        parent=call.parent,
        job=call.job,
        attempt=call.attempt,
        fence=call.fence,
        key=key,
        restore_keys=restore_keys,
    )
    header = runs_pb2.CacheChunk()
    try:
        with target.open("wb") as handle:
            first = True
            async for chunk in stub.RestoreCache(request, timeout=max(timeout_s, 1.0)):
                if first:
                    header = chunk
                    first = False
                handle.write(chunk.data)
    except aio.AioRpcError as error:
        raise UploadRefused.of(error) from None
    return header


async def save(
    stub: runs_pb2_grpc.RunServiceStub, call: CacheCall, key: str, archive: Path, timeout_s: float
) -> runs_pb2.CacheEntry:
    """Stream `archive` to SaveCache; UploadRefused when the service does not keep it."""

    async def messages() -> AsyncIterator[runs_pb2.SaveCacheRequest]:
        with archive.open("rb") as handle:
            yield runs_pb2.SaveCacheRequest(
                parent=call.parent,
                job=call.job,
                attempt=call.attempt,
                fence=call.fence,
                key=key,
                data=handle.read(UPLOAD_CHUNK_BYTES),
            )
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                yield runs_pb2.SaveCacheRequest(data=chunk)

    try:
        entry: runs_pb2.CacheEntry = await stub.SaveCache(messages(), timeout=max(timeout_s, 1.0))
        return entry
    except aio.AioRpcError as error:
        raise UploadRefused.of(error) from None

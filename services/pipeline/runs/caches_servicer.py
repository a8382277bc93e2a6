"""RestoreCache and SaveCache: protos to cache-domain calls and back (RunService's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from devmesh.pipeline.v1 import runs_pb2
from services.pipeline import names
from services.pipeline.runs.caches import (
    CacheAttempt,
    CacheDomain,
    CacheRecord,
    check_cache_key,
    check_restore_keys,
)
from services.pipeline.runs.store import RunRecord
from services.runtime import protos
from services.runtime.errors import InvalidArgument
from services.runtime.request_context import note_audit

_FENCE_MAX = 20  # digits of a fencing token
RunOf = Callable[[str, str], Awaitable[RunRecord]]  # (run name, its field) -> the run


def _attempt(job: str, attempt: int, fence: str) -> CacheAttempt:
    if not names.JOB_KEY.matches(job):
        raise InvalidArgument.for_field("job", "a job key (`build`, `test.2`)")
    if attempt <= 0:
        raise InvalidArgument.for_field("attempt", "an attempt number, from 1")
    if not (fence.isdigit() and len(fence) <= _FENCE_MAX):
        raise InvalidArgument.for_field("fence", "the attempt's fencing token (digits)")
    return CacheAttempt(job, attempt, fence)


def entry_proto(record: CacheRecord) -> runs_pb2.CacheEntry:
    return runs_pb2.CacheEntry(
        key=record.key,
        size_bytes=record.size,
        sha256=record.sha256,
        create_time=protos.timestamp(record.ct),
        last_used_time=protos.timestamp(record.lu),
    )


async def restore(
    caches: CacheDomain, run_of: RunOf, request: runs_pb2.RestoreCacheRequest
) -> AsyncIterator[runs_pb2.CacheChunk]:
    """The RestoreCache stream: what matched (or nothing), then its bytes."""
    run = await run_of(request.parent, "parent")
    attempt = _attempt(request.job, request.attempt, request.fence)
    key = check_cache_key(request.key, "key")
    prefixes = check_restore_keys(list(request.restore_keys), "restore_keys")
    note_audit(resource=names.run_name(run.project, run.pipeline, run.id))
    record, exact, chunks = await caches.restore(run, attempt, key, prefixes)
    cap = caches.settings.entry_bytes
    if record is None:
        yield runs_pb2.CacheChunk(max_size_bytes=cap)
        return
    yield runs_pb2.CacheChunk(
        key=record.key, exact_match=exact, size_bytes=record.size, sha256=record.sha256, max_size_bytes=cap
    )
    async for chunk in chunks:
        yield runs_pb2.CacheChunk(data=chunk)


async def save(
    caches: CacheDomain, run_of: RunOf, request_iterator: AsyncIterator[runs_pb2.SaveCacheRequest]
) -> runs_pb2.CacheEntry:
    """The SaveCache call: the first message names the attempt and the key."""
    messages = request_iterator.__aiter__()
    try:
        first = await messages.__anext__()
    except StopAsyncIteration:
        raise InvalidArgument.for_field("parent", "is required: the stream carried no message") from None
    run = await run_of(first.parent, "parent")
    attempt = _attempt(first.job, first.attempt, first.fence)
    key = check_cache_key(first.key, "key")
    note_audit(resource=names.run_name(run.project, run.pipeline, run.id))

    async def chunks() -> AsyncIterator[bytes]:
        yield first.data
        async for message in messages:
            yield message.data

    return entry_proto(await caches.save(run, attempt, key, chunks()))

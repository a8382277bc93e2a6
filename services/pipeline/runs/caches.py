"""Caches of projects: what RestoreCache and SaveCache do, in domain terms.

A cache entry belongs to a project, not to a run: every run of the project's pipelines restores
from and saves to the same set, as GitHub Actions shares caches within a repository. An entry
is immutable once saved (a key is saved once; a new lockfile makes a new key). Its bytes are a
blob in an ArtifactStore of its own (`<data_dir>/pipeline/caches/<project>/<blob>`); its record
(key, size, SHA-256, blob, saved, last used) is a field of the project's `caches` hash.

Only the worker running an attempt of one of the project's runs may read or write: the request
names the attempt's fencing token, checked before the bytes move and, for a save, again in the
script that writes the record. Entries past the total cap of the project (oldest last use
first) or unused for longer than the retention go, in the save that overflows and in the
retention sweep.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from services.pipeline.runs import keys
from services.pipeline.runs.artifacts_store import ArtifactStore, BlobNotFound, BlobTooLarge
from services.pipeline.runs.running_attempt import check_running
from services.pipeline.runs.store import RunRecord, RunStore, now_us
from services.pipeline.store import PREFIX
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
)
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis

log = get_logger(__name__)

CACHE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_RESTORE_KEYS = 10
PROJECTS = f"{PREFIX}:caches:projects"  # the projects that have cache entries (the sweep's list)


def project_caches(project: str) -> str:
    """The hash of a project's cache entries: key -> record (JSON)."""
    return f"{PREFIX}:caches:{project}"


# KEYS: jobs, the project's caches, projects. ARGV: job key, fence, cache key, record, project.
# {'ok'} | {'stale'} | {'exists'}
_COMMIT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'stale'} end
local job = cjson.decode(raw)
if tostring(job.f) ~= ARGV[2] or job.s ~= 'RUNNING' then return {'stale'} end
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 0 then return {'exists'} end
redis.call('SADD', KEYS[3], ARGV[5])
return {'ok'}
"""


@dataclass(frozen=True)
class CacheSettings:
    """Caps (bytes) of one entry and of a project's entries together, and how long an unused
    entry is kept (seconds)."""

    entry_bytes: int
    project_bytes: int
    retention_s: float


@dataclass(frozen=True)
class CacheRecord:
    """A stored cache entry."""

    key: str
    size: int
    sha256: str
    blob: str
    ct: int  # us: saved
    lu: int  # us: last restored or saved

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, raw: bytes | str) -> CacheRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class CacheAttempt:
    """The attempt a restore or save is made for."""

    job: str
    attempt: int
    fence: str


def check_cache_key(value: str, field: str) -> str:
    if not CACHE_KEY.fullmatch(value):
        raise InvalidArgument.for_field(field, "a cache key, `[A-Za-z0-9][A-Za-z0-9._-]{0,199}`")
    return value


def check_restore_keys(values: list[str], field: str) -> list[str]:
    if len(values) > MAX_RESTORE_KEYS:
        raise InvalidArgument.for_field(field, f"at most {MAX_RESTORE_KEYS} prefixes")
    return [check_cache_key(v, f"{field}[{i}]") for i, v in enumerate(values)]


def best_match(records: dict[str, CacheRecord], key: str, prefixes: list[str]) -> CacheRecord | None:
    """The entry of `key`, else the newest saved whose key starts with the first prefix that
    matches any (GitHub Actions' order)."""
    if key in records:
        return records[key]
    for prefix in prefixes:
        found = [r for r in records.values() if r.key.startswith(prefix)]
        if found:
            return max(found, key=lambda r: (r.ct, r.key))
    return None


def to_evict(records: list[CacheRecord], total_cap: int, oldest_use_us: int) -> list[CacheRecord]:
    """The entries to delete: those unused since `oldest_use_us`, then the least recently used
    until the rest fit in `total_cap`."""
    stale = [r for r in records if r.lu < oldest_use_us]
    kept = sorted((r for r in records if r.lu >= oldest_use_us), key=lambda r: (r.lu, r.key))
    total = sum(r.size for r in kept)
    while kept and total > total_cap:
        oldest = kept.pop(0)
        total -= oldest.size
        stale.append(oldest)
    return stale


class CachesOff(FailedPrecondition):
    def __init__(self) -> None:
        super().__init__(
            "this pipeline service keeps no caches: DEVMESH_DATA_DIR is empty", reason="CACHES_DISABLED"
        )


class CacheDomain:
    """Restore, save and evict a project's cache entries."""

    def __init__(self, redis: Redis, store: ArtifactStore | None, settings: CacheSettings) -> None:
        self.redis = redis
        self.runs = RunStore(redis)
        self.store = store
        self.settings = settings

    async def _records(self, project: str) -> dict[str, CacheRecord]:
        raw = await self.redis.hgetall(project_caches(project))
        return {k.decode(): CacheRecord.load(v) for k, v in raw.items()}

    async def restore(
        self, run: RunRecord, attempt: CacheAttempt, key: str, prefixes: list[str]
    ) -> tuple[CacheRecord | None, bool, AsyncIterator[bytes]]:
        """(the entry that matched, whether exactly, its bytes); (None, False, nothing) for a
        miss. Restoring counts as a use (retention)."""
        await check_running(self.runs, run, attempt.job, attempt.attempt, attempt.fence, only="uses caches")
        if self.store is None:
            return None, False, _nothing()
        for _ in range(3):  # an entry evicted between the read and the open: look again
            found = best_match(await self._records(run.project), key, prefixes)
            if found is None:
                return None, False, _nothing()
            chunks = self.store.open(found.blob).__aiter__()
            try:
                first = await anext(chunks, b"")
            except BlobNotFound:
                await self.redis.hdel(project_caches(run.project), found.key)
                continue
            used = CacheRecord(**{**asdict(found), "lu": now_us()})
            await self.redis.hset(project_caches(run.project), found.key, used.dump())
            log.info("pipeline.caches.restored", project=run.project, run=run.id, size=found.size)
            return used, found.key == key, _prepend(first, chunks)
        return None, False, _nothing()

    def _exists(self, key: str) -> AlreadyExists:
        return AlreadyExists(
            f"cache {key!r} exists; an entry is saved once",
            resource_type="cache",
            resource_name=key,
            reason="CACHE_EXISTS",
        )

    async def save(
        self, run: RunRecord, attempt: CacheAttempt, key: str, chunks: AsyncIterator[bytes]
    ) -> CacheRecord:
        """Store the entry whole, or nothing (the cap, an existing key, a fenced-off attempt)."""
        if self.store is None:
            raise CachesOff()
        await check_running(self.runs, run, attempt.job, attempt.attempt, attempt.fence, only="uses caches")
        caches = project_caches(run.project)
        if await self.redis.hexists(caches, key):
            raise self._exists(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        blob_name = f"{run.project}/{digest}.{attempt.fence}"
        cap = self.settings.entry_bytes
        try:
            blob = await self.store.put(blob_name, chunks, cap)
        except BlobTooLarge:
            raise ResourceExhausted(
                f"the cache is over its cap of {cap} bytes",
                quota_violations=[QuotaViolation(f"cache {key}", f"at most {cap} bytes")],
                reason="CACHE_TOO_LARGE",
            ) from None
        now = now_us()
        record = CacheRecord(key=key, size=blob.size, sha256=blob.sha256, blob=blob.name, ct=now, lu=now)
        (outcome,) = await self.runs.script(
            _COMMIT,
            [keys.jobs(run.id), caches, PROJECTS],
            [attempt.job, attempt.fence, key, record.dump(), run.project],
        )
        if outcome != "ok":
            await self.store.delete(blob.name)
            if outcome == "exists":
                raise self._exists(key)
            raise FailedPrecondition(
                f"attempt {attempt.attempt} of job {attempt.job} stopped running during the save",
                reason="ATTEMPT_NOT_RUNNING",
            )
        log.info("pipeline.caches.saved", project=run.project, run=run.id, size=record.size)
        await self.evict(run.project)
        return record

    async def evict(self, project: str) -> int:
        """Delete the project's entries past the retention or the total cap; how many went."""
        records = await self._records(project)
        oldest_use = now_us() - int(self.settings.retention_s * 1_000_000)
        gone = to_evict(list(records.values()), self.settings.project_bytes, oldest_use)
        for record in gone:
            await self.redis.hdel(project_caches(project), record.key)
            if self.store is not None:
                await self.store.delete(record.blob)
        if len(gone) == len(records):
            await self.redis.srem(PROJECTS, project)
        if gone:
            log.info("pipeline.caches.evicted", project=project, entries=len(gone))
        return len(gone)

    async def sweep(self) -> int:
        """One pass of `evict` over every project with entries (the retention sweep's)."""
        deleted = 0
        for raw in await self.redis.smembers(PROJECTS):
            deleted += await self.evict(raw.decode())
        return deleted


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk

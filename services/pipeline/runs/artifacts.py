"""Artifacts of runs: what UploadArtifact, ListArtifacts and GetArtifact do, in domain terms.

An artifact's bytes are a blob in the ArtifactStore (`<run>/<artifact>.<fence>`); its record
(job, attempt, size, SHA-256, the blob's name) is a field of the run's `artifacts` hash. Only
the worker running an attempt may upload for it: the upload names the attempt's fencing
token, checked before the bytes are taken and again, in the script that writes the record,
after they are stored. An upload whose attempt was fenced off meanwhile (the job was
reclaimed) leaves nothing behind. Each attempt writes its own blob, so a late upload never
overwrites bytes a newer record points to.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from services.pipeline.runs import keys
from services.pipeline.runs.artifacts_store import ArtifactStore, BlobNotFound, BlobTooLarge
from services.pipeline.runs.running_attempt import check_running
from services.pipeline.runs.store import RunRecord, RunStore, now_us
from services.runtime import pagination
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
)
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis

log = get_logger(__name__)

ARTIFACT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
MAX_ARTIFACTS_PER_RUN = 1000
PAGE_DEFAULT = 50
PAGE_MAX = 500

# KEYS: jobs, artifacts. ARGV: job key, fence, artifact id, record (JSON).
# {'ok', the blob it replaced or ''} | {'stale', ''} | {'taken', the owning job}
_COMMIT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'stale', ''} end
local job = cjson.decode(raw)
if tostring(job.f) ~= ARGV[2] or job.s ~= 'RUNNING' then return {'stale', ''} end
local old = redis.call('HGET', KEYS[2], ARGV[3])
local replaced = ''
if old then
  local previous = cjson.decode(old)
  if previous.job ~= ARGV[1] then return {'taken', previous.job} end
  replaced = previous.blob
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return {'ok', replaced}
"""


@dataclass(frozen=True)
class ArtifactCaps:
    """Size caps, in bytes, of one artifact and of one job attempt's artifacts together."""

    artifact_bytes: int
    job_bytes: int


@dataclass(frozen=True)
class ArtifactRecord:
    """A stored artifact."""

    id: str
    job: str
    attempt: int
    size: int
    sha256: str
    files: int
    ct: int  # us: stored
    blob: str

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, raw: bytes | str) -> ArtifactRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Upload:
    """What the first message of an upload says."""

    artifact_id: str
    job: str
    attempt: int
    fence: str
    files: int


def check_artifact_id(value: str, field: str) -> str:
    if not ARTIFACT_ID.fullmatch(value) or ".." in value:
        raise InvalidArgument.for_field(field, "an artifact id, `[a-z0-9][a-z0-9._-]{0,127}`")
    return value


class ArtifactsOff(FailedPrecondition):
    def __init__(self) -> None:
        super().__init__(
            "this pipeline service keeps no artifacts: DEVMESH_DATA_DIR is empty",
            reason="ARTIFACTS_DISABLED",
        )


class ArtifactDomain:
    """Upload, list, read and drop a run's artifacts."""

    def __init__(self, redis: Redis, store: ArtifactStore | None, caps: ArtifactCaps) -> None:
        self.redis = redis
        self.runs = RunStore(redis)
        self.store = store
        self.caps = caps

    def _not_found(self, artifact_id: str, name: str) -> NotFound:
        return NotFound(f"artifact {artifact_id!r} not found", resource_type="artifact", resource_name=name)

    async def _records(self, run_id: str) -> dict[str, ArtifactRecord]:
        raw = await self.redis.hgetall(keys.artifacts(run_id))
        return {k.decode(): ArtifactRecord.load(v) for k, v in raw.items()}

    def _too_large(self, what: str, cap: int) -> ResourceExhausted:
        return ResourceExhausted(
            f"{what} is over its cap of {cap} bytes",
            quota_violations=[QuotaViolation(what, f"at most {cap} bytes")],
            reason="ARTIFACT_TOO_LARGE",
        )

    async def upload(self, run: RunRecord, upload: Upload, chunks: AsyncIterator[bytes]) -> ArtifactRecord:
        """Store an attempt's artifact whole, or nothing (a cap, a fenced-off attempt)."""
        if self.store is None:
            raise ArtifactsOff()
        await check_running(self.runs, run, upload.job, upload.attempt, upload.fence, only="uploads")
        existing = await self._records(run.id)
        owner = existing.get(upload.artifact_id)
        if owner is not None and owner.job != upload.job:
            raise self._taken(upload.artifact_id, owner.job)
        if owner is None and len(existing) >= MAX_ARTIFACTS_PER_RUN:
            raise ResourceExhausted(
                f"a run keeps at most {MAX_ARTIFACTS_PER_RUN} artifacts", reason="TOO_MANY_ARTIFACTS"
            )
        used = sum(
            r.size
            for r in existing.values()
            if r.job == upload.job and r.attempt == upload.attempt and r.id != upload.artifact_id
        )
        room = self.caps.job_bytes - used
        cap = min(self.caps.artifact_bytes, room)
        blob_name = f"{run.id}/{upload.artifact_id}.{upload.fence}"
        try:
            blob = await self.store.put(blob_name, chunks, max(cap, 0))
        except BlobTooLarge:
            if room < self.caps.artifact_bytes:
                raise self._too_large(f"the artifacts of job {upload.job}", self.caps.job_bytes) from None
            raise self._too_large(f"artifact {upload.artifact_id}", self.caps.artifact_bytes) from None
        record = ArtifactRecord(
            id=upload.artifact_id,
            job=upload.job,
            attempt=upload.attempt,
            size=blob.size,
            sha256=blob.sha256,
            files=upload.files,
            ct=now_us(),
            blob=blob.name,
        )
        outcome, detail = await self.runs.script(
            _COMMIT,
            [keys.jobs(run.id), keys.artifacts(run.id)],
            [upload.job, upload.fence, upload.artifact_id, record.dump()],
        )
        if outcome != "ok":
            await self.store.delete(blob.name)  # the attempt lost its job, or the name was taken
            if outcome == "taken":
                raise self._taken(upload.artifact_id, detail)
            raise FailedPrecondition(
                f"attempt {upload.attempt} of job {upload.job} stopped running during the upload",
                reason="ATTEMPT_NOT_RUNNING",
            )
        if detail and detail != blob.name:
            await self.store.delete(detail)  # the earlier attempt's bytes
        log.info(
            "pipeline.artifacts.stored", run=run.id, artifact=record.id, job=record.job, size=record.size
        )
        return record

    def _taken(self, artifact_id: str, job: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"artifact {artifact_id!r} was uploaded by job {job}; a name is unique in a run",
            [PreconditionViolation("ARTIFACT_NAME_TAKEN", artifact_id, f"uploaded by job {job}")],
            reason="ARTIFACT_NAME_TAKEN",
        )

    async def page(
        self, run: RunRecord, job: str, page_size: int, token: str
    ) -> tuple[list[ArtifactRecord], str]:
        """One page of the run's artifacts in order of their ids (only `job`'s, if given)."""
        size = pagination.page_size(page_size, default=PAGE_DEFAULT, maximum=PAGE_MAX)
        query = ("artifacts", run.id, job)
        after = pagination.decode_token(token, query) if token else ""
        records = sorted(
            (r for r in (await self._records(run.id)).values() if not job or r.job == job), key=lambda r: r.id
        )
        remaining = [r for r in records if r.id > (after or "")]
        found = remaining[:size]
        more = len(remaining) > size
        return found, pagination.encode_token(found[-1].id, query) if more else ""

    async def get(self, run: RunRecord, artifact_id: str, name: str) -> ArtifactRecord:
        raw = await self.redis.hget(keys.artifacts(run.id), artifact_id)
        if raw is None:
            raise self._not_found(artifact_id, name)
        return ArtifactRecord.load(raw)

    async def read(
        self, run: RunRecord, artifact_id: str, name: str
    ) -> tuple[ArtifactRecord, AsyncIterator[bytes]]:
        """The record and the bytes of the artifact; a replacement between the two reads is
        read again (its record names the new blob)."""
        if self.store is None:
            raise self._not_found(artifact_id, name)
        for _ in range(3):
            record = await self.get(run, artifact_id, name)
            chunks = self.store.open(record.blob).__aiter__()
            try:
                first = await anext(chunks, b"")
            except BlobNotFound:
                continue
            return record, _prepend(first, chunks)
        raise self._not_found(artifact_id, name)

    async def drop_run(self, run_id: str) -> int:
        """Delete every blob of the run and its records; how many blobs went."""
        names: set[str] = {r.blob for r in (await self._records(run_id)).values()}
        if self.store is not None:
            names |= set(await self.store.list(f"{run_id}/"))
            for blob in sorted(names):
                await self.store.delete(blob)
        await self.redis.delete(keys.artifacts(run_id))
        return len(names)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk

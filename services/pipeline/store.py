"""Redis access for the pipeline service.

Keys (the `{project}` hash tag keeps one project's keys in one cluster slot):

    devmesh:pipeline:projects                       zset of project ids (lexicographic listing)
    devmesh:pipeline:{p}:project                    hash: the project's fields
    devmesh:pipeline:{p}:pipelines                  zset of pipeline ids
    devmesh:pipeline:{p}:pipeline:{id}              hash: fields, revision, the current definition
    devmesh:pipeline:{p}:pipeline:{id}:revisions    hash: revision -> PipelineRevision (serialized)
    devmesh:pipeline:{p}:pipeline:{id}:counter      latest revision; kept when the pipeline is
                                                    deleted, so numbers (and etags) never repeat

Every write is one MULTI transaction under WATCH of what the decision read: a concurrent
write in between makes it fail whole (redis-py's WatchError), and it runs again on fresh
state, or the caller's stale etag is ABORTED. A revision, once written, is never written
again (HSETNX) nor changed; it goes only with its pipeline. Every acknowledged write is
confirmed durable first (`DurableWriter.confirm`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from redis import exceptions as redis_errors

from devmesh.pipeline.v1 import pipeline_pb2
from services.runtime.errors import Aborted
from services.runtime.redis_client import DurableWriter, Redis

PREFIX = "devmesh:pipeline"
PROJECTS = f"{PREFIX}:projects"
MAX_ATTEMPTS = 16


def _project(project: str) -> str:
    return f"{PREFIX}:{{{project}}}"


def project_key(project: str) -> str:
    return f"{_project(project)}:project"


def pipelines_key(project: str) -> str:
    return f"{_project(project)}:pipelines"


def pipeline_key(project: str, pipeline: str) -> str:
    return f"{_project(project)}:pipeline:{pipeline}"


def revisions_key(project: str, pipeline: str) -> str:
    return f"{pipeline_key(project, pipeline)}:revisions"


def counter_key(project: str, pipeline: str) -> str:
    return f"{pipeline_key(project, pipeline)}:counter"


def now_us() -> int:
    return time.time_ns() // 1000


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


@dataclass(frozen=True)
class ProjectRecord:
    id: str
    display_name: str = ""
    description: str = ""
    repository_uri: str = ""
    create_time_us: int = 0


@dataclass(frozen=True)
class PipelineRecord:
    project: str
    id: str
    display_name: str = ""
    description: str = ""
    definition: bytes = b""  # a serialized PipelineDefinition
    revision: int = 0
    first_revision: int = 0  # the oldest revision still kept (a re-created pipeline's first)
    create_time_us: int = 0
    update_time_us: int = 0


def _decode_project(project: str, fields: dict[bytes, bytes]) -> ProjectRecord | None:
    if not fields:
        return None
    return ProjectRecord(
        id=project,
        display_name=_text(fields.get(b"display_name")),
        description=_text(fields.get(b"description")),
        repository_uri=_text(fields.get(b"repository_uri")),
        create_time_us=int(fields[b"create_time_us"]),
    )


def _decode_pipeline(project: str, pipeline: str, fields: dict[bytes, bytes]) -> PipelineRecord | None:
    if not fields:
        return None
    return PipelineRecord(
        project=project,
        id=pipeline,
        display_name=_text(fields.get(b"display_name")),
        description=_text(fields.get(b"description")),
        definition=fields.get(b"definition", b""),
        revision=int(fields[b"revision"]),
        first_revision=int(fields[b"first_revision"]),
        create_time_us=int(fields[b"create_time_us"]),
        update_time_us=int(fields[b"update_time_us"]),
    )


def _pipeline_fields(record: PipelineRecord) -> dict[str, Any]:
    return {
        "display_name": record.display_name,
        "description": record.description,
        "definition": record.definition,
        "revision": record.revision,
        "first_revision": record.first_revision,
        "create_time_us": record.create_time_us,
        "update_time_us": record.update_time_us,
    }


class Conflict(Exception):
    """What a decision found instead of what it needed; the domain turns it into its error."""

    def __init__(self, kind: str, current: Any = None) -> None:
        super().__init__(kind)
        self.kind = kind  # "exists", "missing", "parent_missing", "not_empty", "changed"
        self.current = current


class PipelineStore:
    def __init__(self, redis: Redis, durable: DurableWriter) -> None:
        self.redis = redis
        self._durable = durable

    async def _transaction(self, keys: list[str], body: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run `body(pipe)` under WATCH of `keys`: it reads (immediately), then calls
        `pipe.multi()` and queues its writes. Runs again while a concurrent write intervenes."""
        for attempt in range(MAX_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    result = await body(pipe)
                    await pipe.execute()
                except redis_errors.WatchError:
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
            await self._durable.confirm()
            return result
        raise Aborted("the pipeline is changing too fast to commit; retry", reason="CONTENTION")

    # -- projects -----------------------------------------------------------------------

    async def create_project(self, record: ProjectRecord) -> ProjectRecord:
        key = project_key(record.id)

        async def body(pipe: Any) -> ProjectRecord:
            if await pipe.exists(key):
                raise Conflict("exists")
            pipe.multi()
            pipe.hset(
                key,
                mapping={
                    "display_name": record.display_name,
                    "description": record.description,
                    "repository_uri": record.repository_uri,
                    "create_time_us": record.create_time_us,
                },
            )
            pipe.zadd(PROJECTS, {record.id: 0})
            return record

        result: ProjectRecord = await self._transaction([key], body)
        return result

    async def get_project(self, project: str) -> ProjectRecord | None:
        return _decode_project(project, await self.redis.hgetall(project_key(project)))

    async def list_projects(self, after: str | None, limit: int) -> tuple[list[ProjectRecord], bool]:
        """Up to `limit` projects after id `after`, and whether more follow."""
        ids = await self.redis.zrangebylex(
            PROJECTS, f"({after}" if after else "-", "+", start=0, num=limit + 1
        )
        found = await self._projects([_text(i) for i in ids[:limit]])
        return found, len(ids) > limit

    async def _projects(self, ids: list[str]) -> list[ProjectRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for project in ids:
                pipe.hgetall(project_key(project))
            results = await pipe.execute()
        decoded = (_decode_project(p, f) for p, f in zip(ids, results, strict=True))
        return [r for r in decoded if r is not None]

    async def delete_project(
        self, project: str, check: Callable[[ProjectRecord, int], None], force: bool
    ) -> None:
        """Delete the project (with its pipelines when `force`); `check(record, pipelines)`
        may refuse (a stale etag)."""
        keys = [project_key(project), pipelines_key(project)]

        async def body(pipe: Any) -> None:
            record = _decode_project(project, await pipe.hgetall(keys[0]))
            if record is None:
                raise Conflict("missing")
            pipelines = [_text(p) for p in await pipe.zrange(keys[1], 0, -1)]
            check(record, len(pipelines))
            if pipelines and not force:
                raise Conflict("not_empty", len(pipelines))
            pipe.multi()
            for pipeline in pipelines:
                pipe.delete(pipeline_key(project, pipeline), revisions_key(project, pipeline))
            pipe.delete(*keys)
            pipe.zrem(PROJECTS, project)

        await self._transaction(keys, body)

    # -- pipelines ----------------------------------------------------------------------

    async def create_pipeline(self, record: PipelineRecord, author: str, reason: str) -> PipelineRecord:
        project, pipeline = record.project, record.id
        keys = [project_key(project), pipeline_key(project, pipeline), counter_key(project, pipeline)]

        async def body(pipe: Any) -> PipelineRecord:
            if not await pipe.exists(keys[0]):
                raise Conflict("parent_missing")
            if await pipe.exists(keys[1]):
                raise Conflict("exists")
            revision = int(await pipe.get(keys[2]) or 0) + 1
            created = replace(record, revision=revision, first_revision=revision)
            pipe.multi()
            self._queue_revision(pipe, created, author, reason)
            pipe.zadd(pipelines_key(project), {pipeline: 0})
            return created

        result: PipelineRecord = await self._transaction(keys, body)
        return result

    @staticmethod
    def _queue_revision(pipe: Any, record: PipelineRecord, author: str, reason: str) -> None:
        project, pipeline = record.project, record.id
        entry = pipeline_pb2.PipelineRevision(revision=record.revision, author=author, reason=reason)
        entry.definition.ParseFromString(record.definition)
        entry.create_time.FromMicroseconds(record.update_time_us)
        pipe.set(counter_key(project, pipeline), record.revision)
        pipe.hset(pipeline_key(project, pipeline), mapping=_pipeline_fields(record))
        pipe.hsetnx(revisions_key(project, pipeline), str(record.revision), entry.SerializeToString())

    async def get_pipeline(self, project: str, pipeline: str) -> PipelineRecord | None:
        return _decode_pipeline(project, pipeline, await self.redis.hgetall(pipeline_key(project, pipeline)))

    async def project_exists(self, project: str) -> bool:
        return bool(await self.redis.exists(project_key(project)))

    async def list_pipelines(
        self, project: str, after: str | None, limit: int
    ) -> tuple[list[PipelineRecord], bool]:
        ids = [
            _text(i)
            for i in await self.redis.zrangebylex(
                pipelines_key(project), f"({after}" if after else "-", "+", start=0, num=limit + 1
            )
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for pipeline in ids[:limit]:
                pipe.hgetall(pipeline_key(project, pipeline))
            results = await pipe.execute()
        decoded = (_decode_pipeline(project, p, f) for p, f in zip(ids, results, strict=False))
        return [r for r in decoded if r is not None], len(ids) > limit

    async def update_pipeline(
        self,
        project: str,
        pipeline: str,
        change: Callable[[PipelineRecord], PipelineRecord],
        author: str,
        reason: str,
    ) -> PipelineRecord:
        """Apply `change` (which may refuse: a stale etag) to the current record as a new revision."""
        keys = [pipeline_key(project, pipeline)]

        async def body(pipe: Any) -> PipelineRecord:
            current = _decode_pipeline(project, pipeline, await pipe.hgetall(keys[0]))
            if current is None:
                raise Conflict("missing")
            changed = replace(change(current), revision=current.revision + 1, update_time_us=now_us())
            pipe.multi()
            self._queue_revision(pipe, changed, author, reason)
            return changed

        result: PipelineRecord = await self._transaction(keys, body)
        return result

    async def delete_pipeline(
        self, project: str, pipeline: str, check: Callable[[PipelineRecord], None]
    ) -> None:
        keys = [pipeline_key(project, pipeline)]

        async def body(pipe: Any) -> None:
            current = _decode_pipeline(project, pipeline, await pipe.hgetall(keys[0]))
            if current is None:
                raise Conflict("missing")
            check(current)
            pipe.multi()
            pipe.delete(keys[0], revisions_key(project, pipeline))
            pipe.zrem(pipelines_key(project), pipeline)

        await self._transaction(keys, body)

    async def revisions(
        self, project: str, pipeline: str, before: int | None, limit: int
    ) -> tuple[list[pipeline_pb2.PipelineRevision], bool] | None:
        """Up to `limit` revisions, newest first, older than `before` (None: from the newest), and
        whether more follow; None when the pipeline does not exist."""
        current = await self.get_pipeline(project, pipeline)
        if current is None:
            return None
        top = current.revision if before is None else min(before - 1, current.revision)
        numbers = list(range(top, max(current.first_revision, top - limit + 1) - 1, -1))
        if not numbers:
            return [], False
        raw = await self.redis.hmget(revisions_key(project, pipeline), [str(n) for n in numbers])
        found = [pipeline_pb2.PipelineRevision.FromString(r) for r in raw if r is not None]
        return found, numbers[-1] > current.first_revision

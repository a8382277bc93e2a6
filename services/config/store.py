"""Redis access for the config service.

Keys (the `{ns}` hash tag keeps one namespace's keys in one cluster slot):

    devmesh:config:namespaces            zset of namespace ids (lexicographic listing)
    devmesh:config:{ns}:counter          latest revision; kept when the namespace is deleted,
                                         so revision numbers are never reused
    devmesh:config:{ns}:meta             hash: the namespace's own fields
    devmesh:config:{ns}:envs             zset of environment ids
    devmesh:config:{ns}:env:{env}        hash: content (JSON), revision, times
    devmesh:config:{ns}:revisions        hash: revision -> record (JSON, content included)
    devmesh:config:{ns}:revidx[:{env}]   zsets of revision numbers, all and per environment
    devmesh:config:{ns}:log              stream, entry id `<revision>-0`: the watch log
    devmesh:config:wake                  pub/sub channel: "namespace <ns> has new revisions"

Every mutation reads, lets the domain validate and decide (`plan`), then applies the writes in
one script (`guarded_write`) that first checks that everything the plan read is unchanged
(the `Snapshot` records each read), then takes the next revision. When a check fails the
whole read-validate-write runs again on fresh state, so invariants that span keys (a
base-layer change must keep every overlay valid) hold without locks, while writers to
different environments of a namespace, which read nothing of each other's, never collide.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from services.config import models
from services.config.documents import Document
from services.config.guarded_write import REVISION, Filled, GuardedWrite
from services.config.names import BASE_ENVIRONMENT
from services.config.revision_view import RevisionView
from services.runtime import request_context
from services.runtime.errors import Aborted
from services.runtime.redis_client import DurableWriter, Redis
from services.runtime.redis_mux import MultiplexedRedis

PREFIX = "devmesh:config"
NAMESPACES = f"{PREFIX}:namespaces"
WAKE_CHANNEL = f"{PREFIX}:wake"
MAX_COMMIT_ATTEMPTS = 16


def _ns(ns: str) -> str:
    return f"{PREFIX}:{{{ns}}}"


def counter_key(ns: str) -> str:
    return f"{_ns(ns)}:counter"


def meta_key(ns: str) -> str:
    return f"{_ns(ns)}:meta"


def envs_key(ns: str) -> str:
    return f"{_ns(ns)}:envs"


def env_key(ns: str, env: str) -> str:
    return f"{_ns(ns)}:env:{env}"


def revisions_key(ns: str) -> str:
    return f"{_ns(ns)}:revisions"


def revision_index_key(ns: str, env: str = "") -> str:
    return f"{_ns(ns)}:revidx:{env}" if env else f"{_ns(ns)}:revidx"


def log_key(ns: str) -> str:
    return f"{_ns(ns)}:log"


def now_us() -> int:
    return time.time_ns() // 1000


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def decode_namespace(ns: str, fields: dict[bytes, bytes], revision: int) -> models.Namespace | None:
    if not fields:
        return None
    schema_text = _s(fields.get(b"schema"))
    return models.Namespace(
        id=ns,
        display_name=_s(fields.get(b"display_name")),
        description=_s(fields.get(b"description")),
        labels=json.loads(_s(fields.get(b"labels")) or "{}"),
        schema=json.loads(schema_text) if schema_text else None,
        revision=revision,
        meta_revision=int(fields[b"meta_revision"]),
        create_time_us=int(fields[b"create_time_us"]),
        update_time_us=int(fields[b"update_time_us"]),
    )


def decode_environment(ns: str, env: str, fields: dict[bytes, bytes]) -> models.Environment | None:
    if not fields:
        return None
    return models.Environment(
        namespace=ns,
        id=env,
        content=json.loads(fields[b"content"]),
        revision=int(fields[b"revision"]),
        create_time_us=int(fields[b"create_time_us"]),
        update_time_us=int(fields[b"update_time_us"]),
    )


def decode_revision(ns: str, text: bytes | str) -> models.Revision:
    return models.Revision(namespace=ns, **json.loads(text))


def encode_revision(record: models.Revision) -> str:
    """The stored JSON of a revision record, with REVISION where its number goes (the script
    that takes the number fills it in)."""
    fields = asdict(record)
    del fields["namespace"], fields["revision"]
    return '{"revision":' + REVISION + "," + json.dumps(fields, separators=(",", ":"), sort_keys=True)[1:]


@dataclass
class Change:
    """What one revision does. The store turns it into writes; the domain decides it."""

    action: str
    environment: str = ""
    content: Document | None = None  # the environment's new document
    namespace: models.Namespace | None = None  # the namespace's new fields
    previous: models.Environment | None = None  # the environment as the snapshot read it
    deleted_environments: tuple[str, ...] = ()  # for NAMESPACE_DELETED: every environment id
    source_revision: int = 0
    reason: str = ""


class Snapshot:
    """What a plan reads. Each read becomes a guard: the plan's writes apply only while
    everything it read is as it was."""

    def __init__(self, redis: Redis, ns: str) -> None:
        self._redis = redis
        self.ns = ns
        self.guards = GuardedWrite(counter_key(ns))

    async def namespace(self) -> models.Namespace | None:
        fields = await self._redis.hgetall(meta_key(self.ns))
        self.guards.expect_field(meta_key(self.ns), "meta_revision", _s(fields.get(b"meta_revision")))
        return decode_namespace(self.ns, fields, 0)  # the latest revision is the commit's

    async def environment(self, env: str) -> models.Environment | None:
        fields = await self._redis.hgetall(env_key(self.ns, env))
        return self._environment(env, fields)

    def _environment(self, env: str, fields: dict[bytes, bytes]) -> models.Environment | None:
        self.guards.expect_field(env_key(self.ns, env), "revision", _s(fields.get(b"revision")))
        return decode_environment(self.ns, env, fields)

    async def environment_ids(self) -> list[str]:
        ids = [_s(e) for e in await self._redis.zrange(envs_key(self.ns), 0, -1)]
        self.guards.expect_members(envs_key(self.ns), ids)
        return ids

    async def environments(self) -> dict[str, models.Environment]:
        ids = await self.environment_ids()
        async with self._redis.pipeline(transaction=False) as pipe:
            for env in ids:
                pipe.hgetall(env_key(self.ns, env))
            results = await pipe.execute()
        found = {}
        for env, fields in zip(ids, results, strict=True):
            record = self._environment(env, fields)
            if record is not None:
                found[env] = record
        return found


@dataclass(frozen=True)
class Committed:
    revision: models.Revision
    namespace: models.Namespace | None
    environment: models.Environment | None


class ConfigStore:
    def __init__(
        self, redis: Redis, mux: MultiplexedRedis, durable: DurableWriter, *, log_retention: int
    ) -> None:
        self.redis = redis
        self._mux = mux  # for the revision GET of every STRONG read
        self.view = RevisionView(self.current_revision)  # fed by the watch hub's wake-ups
        self._durable = durable
        self._log_retention = log_retention

    # -- transactions -------------------------------------------------------------------

    async def commit(self, ns: str, author: str, plan: Callable[[Snapshot], Awaitable[Change]]) -> Committed:
        """Run `plan` on what it reads and apply the change it returns atomically, as long as
        nothing it read has changed meanwhile.

        `plan` may raise a ServiceError to refuse the change; it may run more than once.
        """
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            snapshot = Snapshot(self.redis, ns)
            change = await plan(snapshot)
            planned = self._records(ns, author, change)
            self._queue_writes(snapshot.guards, ns, change, planned)
            try:
                revision = await snapshot.guards.apply(self.redis)
            finally:  # applied, refused or unknown: what this replica knew is stale
                self.view.changed(ns)
            if revision:
                break
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        else:
            raise Aborted(f"namespace {ns!r} is changing too fast to commit; retry", reason="CONTENTION")
        await self._durable.confirm()
        request_context.note_audit(
            resource=f"namespaces/{ns}"
            + (f"/environments/{change.environment}" if change.environment else ""),
            revision=revision,
            change=change.action,
        )
        return Committed(
            replace(planned.revision, revision=revision),
            replace(planned.namespace, revision=revision, meta_revision=revision)
            if planned.namespace
            else None,
            replace(planned.environment, revision=revision) if planned.environment else None,
        )

    @staticmethod
    def _records(ns: str, author: str, change: Change) -> Committed:
        """The records `change` writes, all but their revision number (0 here)."""
        now = now_us()
        record = models.Revision(
            namespace=ns,
            revision=0,
            action=change.action,
            environment=change.environment,
            content=change.content if change.action in models.ENVIRONMENT_WRITES else None,
            author=author,
            reason=change.reason,
            create_time_us=now,
            source_revision=change.source_revision,
        )
        namespace = environment = None
        if change.namespace is not None and change.action != models.NAMESPACE_DELETED:
            created = change.namespace.create_time_us or now
            namespace = replace(change.namespace, create_time_us=created, update_time_us=now)
        if change.action in models.ENVIRONMENT_WRITES:
            assert change.content is not None
            created = change.previous.create_time_us if change.previous is not None else now
            environment = models.Environment(ns, change.environment, change.content, 0, created, now)
        return Committed(record, namespace, environment)

    def _queue_writes(self, writes: GuardedWrite, ns: str, change: Change, planned: Committed) -> None:
        revision = Filled(REVISION)
        if change.action == models.NAMESPACE_DELETED:
            self._queue_namespace_delete(writes, ns, change)
        else:
            if planned.namespace is not None:
                fields = self._namespace_fields(planned.namespace)
                writes.command("HSET", meta_key(ns), "meta_revision", revision, *_flat(fields))
                writes.command("ZADD", NAMESPACES, 0, ns)
            if planned.environment is not None:
                self._queue_environment_write(writes, planned.environment)
            elif change.action == models.ENVIRONMENT_DELETED:
                writes.command("DEL", env_key(ns, change.environment))
                writes.command("ZREM", envs_key(ns), change.environment)
            writes.command("HSET", revisions_key(ns), revision, Filled(encode_revision(planned.revision)))
            writes.command("ZADD", revision_index_key(ns), revision, revision)
            if change.environment:
                writes.command("ZADD", revision_index_key(ns, change.environment), revision, revision)
        writes.command(
            "XADD",
            log_key(ns),
            "MAXLEN",
            "~",
            self._log_retention,
            Filled(f"{REVISION}-0"),
            "action",
            change.action,
            "environment",
            change.environment,
        )
        writes.command("PUBLISH", None, WAKE_CHANNEL, ns)

    @staticmethod
    def _namespace_fields(namespace: models.Namespace) -> dict[str, str | int]:
        return {
            "display_name": namespace.display_name,
            "description": namespace.description,
            "labels": json.dumps(namespace.labels, sort_keys=True),
            "schema": json.dumps(namespace.schema, sort_keys=True) if namespace.schema is not None else "",
            "create_time_us": namespace.create_time_us,
            "update_time_us": namespace.update_time_us,
        }

    @staticmethod
    def _queue_environment_write(writes: GuardedWrite, environment: models.Environment) -> None:
        ns, env = environment.namespace, environment.id
        writes.command(
            "HSET",
            env_key(ns, env),
            "content",
            json.dumps(environment.content, separators=(",", ":"), sort_keys=True),
            "revision",
            Filled(REVISION),
            "create_time_us",
            environment.create_time_us,
            "update_time_us",
            environment.update_time_us,
        )
        writes.command("ZADD", envs_key(ns), 0, env)

    @staticmethod
    def _queue_namespace_delete(writes: GuardedWrite, ns: str, change: Change) -> None:
        for env in change.deleted_environments:
            writes.command("DEL", env_key(ns, env))
            writes.command("DEL", revision_index_key(ns, env))
        for key in (meta_key(ns), envs_key(ns), revisions_key(ns), revision_index_key(ns)):
            writes.command("DEL", key)
        writes.command("ZREM", NAMESPACES, ns)

    # -- reads --------------------------------------------------------------------------

    async def namespace(self, ns: str) -> models.Namespace | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key(ns)).get(counter_key(ns))
            fields, revision = await pipe.execute()
        return decode_namespace(ns, fields, int(revision or 0))

    async def namespace_exists(self, ns: str) -> bool:
        return bool(await self.redis.exists(meta_key(ns)))

    async def list_namespaces(self, after: str | None, limit: int) -> list[models.Namespace]:
        ids = await self.redis.zrangebylex(NAMESPACES, f"({after}" if after else "-", "+", start=0, num=limit)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for raw in ids:
                pipe.hgetall(meta_key(_s(raw))).get(counter_key(_s(raw)))
            results = await pipe.execute()
        found = []
        for i, raw in enumerate(ids):
            namespace = decode_namespace(_s(raw), results[2 * i], int(results[2 * i + 1] or 0))
            if namespace is not None:  # deleted between the two reads
                found.append(namespace)
        return found

    async def environment(self, ns: str, env: str) -> tuple[models.Environment | None, int]:
        """An environment and the namespace revision it was read at, in one consistent read."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(env_key(ns, env)).get(counter_key(ns))
            fields, revision = await pipe.execute()
        return decode_environment(ns, env, fields), int(revision or 0)

    async def current_revision(self, ns: str, *, cached: bool = False) -> int:
        """The namespace's latest revision: what read caches are validated against. `cached`:
        as this replica knows it (`RevisionView`), else as Redis has it now."""
        if cached:
            return await self.view.revision(ns)
        return int(await self._mux.get(counter_key(ns)) or 0)

    async def environment_ids(self, ns: str) -> list[str]:
        return [_s(e) for e in await self.redis.zrange(envs_key(ns), 0, -1)]

    async def list_environments(self, ns: str, after: str | None, limit: int) -> list[models.Environment]:
        ids = await self.redis.zrangebylex(
            envs_key(ns), f"({after}" if after else "-", "+", start=0, num=limit
        )
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for raw in ids:
                pipe.hgetall(env_key(ns, _s(raw)))
            results = await pipe.execute()
        return [
            env
            for raw, fields in zip(ids, results, strict=True)
            if (env := decode_environment(ns, _s(raw), fields)) is not None
        ]

    async def layers(
        self, ns: str, env: str
    ) -> tuple[bool, models.Environment | None, models.Environment | None, int]:
        """One consistent read of what resolving `env` needs: (namespace exists, base, env, revision)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(meta_key(ns)).hgetall(env_key(ns, BASE_ENVIRONMENT)).hgetall(env_key(ns, env)).get(
                counter_key(ns)
            )
            exists, base, own, revision = await pipe.execute()
        return (
            bool(exists),
            decode_environment(ns, BASE_ENVIRONMENT, base),
            decode_environment(ns, env, own),
            int(revision or 0),
        )

    async def revision(self, ns: str, revision: int) -> models.Revision | None:
        text = await self.redis.hget(revisions_key(ns), str(revision))
        return decode_revision(ns, text) if text else None

    async def revisions(self, ns: str, numbers: list[int]) -> dict[int, models.Revision]:
        if not numbers:
            return {}
        texts = await self.redis.hmget(revisions_key(ns), [str(n) for n in numbers])
        return {n: decode_revision(ns, t) for n, t in zip(numbers, texts, strict=True) if t}

    async def list_revisions(
        self, ns: str, env: str, before: int | None, limit: int
    ) -> list[models.Revision]:
        """Newest first, optionally only `env`'s, strictly older than `before`."""
        numbers = await self.redis.zrevrangebyscore(
            revision_index_key(ns, env), f"({before}" if before else "+inf", "-inf", start=0, num=limit
        )
        found = await self.revisions(ns, [int(n) for n in numbers])
        return [found[int(n)] for n in numbers if int(n) in found]

    async def environment_at(self, ns: str, env: str, revision: int) -> models.Revision | None:
        """The revision record that set `env`'s document as of `revision` (None: never written)."""
        numbers = await self.redis.zrevrangebyscore(
            revision_index_key(ns, env), revision, "-inf", start=0, num=1
        )
        if not numbers:
            return None
        return await self.revision(ns, int(numbers[0]))

    # -- the watch log ------------------------------------------------------------------

    async def log_head(self, ns: str) -> int:
        """The newest revision in the log (0 when the log is empty)."""
        entries = await self.redis.xrevrange(log_key(ns), count=1)
        return _revision_of(entries[0][0]) if entries else 0

    async def log_oldest(self, ns: str) -> int:
        entries = await self.redis.xrange(log_key(ns), count=1)
        return _revision_of(entries[0][0]) if entries else 0

    async def log_after(self, ns: str, after: int, count: int) -> list[tuple[int, str, str]]:
        """Up to `count` log entries after revision `after`: (revision, action, environment)."""
        entries = await self.redis.xrange(log_key(ns), min=f"({after}-0", max="+", count=count)
        return [
            (_revision_of(entry_id), _s(f.get(b"action")), _s(f.get(b"environment")))
            for entry_id, f in entries
        ]


def _flat(fields: dict[str, str | int]) -> list[str | int]:
    return [item for pair in fields.items() for item in pair]


def _revision_of(entry_id: Any) -> int:
    return int(_s(entry_id).split("-", 1)[0])

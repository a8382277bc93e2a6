"""The catalog of the cost data, in Redis: every import's record, which import serves each
(billing period, source) partition, and the data version every import commit bumps.

The files are the data; the catalog says which of them are current. A commit flips the
partitions an import wrote, bumps the version and stores its record in one script, which
first checks that the committer still holds each partition's lease: readers see all of an
import or none of it, and two replicas never both commit the same partition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from services.runtime.errors import Aborted, NotFound
from services.runtime.leases import HELD_CHECK, Lease, fenced_arguments
from services.runtime.redis_client import DurableWriter, Redis

PREFIX = "devmesh:cost:"
IMPORTS = PREFIX + "imports"  # zset: import id by create time
PARTITIONS = PREFIX + "partitions"  # hash: "<period>|<source>" -> import id
VERSION = PREFIX + "data-version"


def import_key(import_id: str) -> str:
    return f"{PREFIX}import:{import_id}"


def lease_key(period: str, source: str) -> str:
    return f"{PREFIX}lease:{period}|{source}"


def partition_field(period: str, source: str) -> str:
    return f"{period}|{source}"


@dataclass
class ImportRecord:
    """One import, as stored (the contract's Import without what is derived at read time)."""

    id: str
    source: str
    billing_periods: list[str]
    format: str
    focus_version: str
    rows_read: int
    rows_stored: int
    rows_rejected: int
    rejections: dict[str, int]
    rejected_samples: list[dict[str, Any]]
    warnings: dict[str, int]
    warning_samples: list[dict[str, Any]]
    unknown_columns: list[str]
    effective_cost_totals: dict[str, str]  # currency -> decimal string
    bytes_received: int
    creator: str
    create_us: int
    complete_us: int
    superseded_periods: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, raw: bytes) -> ImportRecord:
        return cls(**json.loads(raw))

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


# KEYS: leases..., PARTITIONS, VERSION, IMPORTS, the record's key
# ARGV: lease count, tokens..., record, id, create score, partition fields...
_COMMIT = (
    HELD_CHECK
    + """
local base = tonumber(ARGV[1])
local partitions, version, imports, record = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
local id = ARGV[base + 3]
local replaced = {}
for i = base + 5, #ARGV do
  local old = redis.call('HGET', partitions, ARGV[i])
  if old and old ~= id then
    table.insert(replaced, ARGV[i])
    table.insert(replaced, old)
  end
  redis.call('HSET', partitions, ARGV[i], id)
end
redis.call('SET', record, ARGV[base + 2])
redis.call('ZADD', imports, ARGV[base + 4], id)
local now = redis.call('INCR', version)
return {'ok', now, unpack(replaced)}
"""
)


class Catalog:
    def __init__(self, redis: Redis, durable: DurableWriter) -> None:
        self.redis = redis
        self.durable = durable

    async def version(self) -> int:
        raw = await self.redis.get(VERSION)
        return int(raw or 0)

    async def partitions(self) -> dict[tuple[str, str], str]:
        """(period, source) -> the import that serves it."""
        found = await self.redis.hgetall(PARTITIONS)
        result = {}
        for key, value in found.items():
            period, _, source = key.decode().partition("|")
            result[(period, source)] = value.decode()
        return result

    async def snapshot(self) -> tuple[int, dict[tuple[str, str], str]]:
        """The data version and the partitions, read together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(VERSION)
            pipe.hgetall(PARTITIONS)
            raw_version, found = await pipe.execute()
        partitions = {}
        for key, value in found.items():
            period, _, source = key.decode().partition("|")
            partitions[(period, source)] = value.decode()
        return int(raw_version or 0), partitions

    async def commit(
        self, record: ImportRecord, periods: Sequence[str], leases: Sequence[Lease]
    ) -> tuple[int, list[tuple[str, str, str]]]:
        """Make `record`'s partitions current; the new data version and what it replaced
        (period, source, import id). ABORTED when a lease was lost on the way."""
        lease_keys, lease_args = fenced_arguments(leases)
        keys = [*lease_keys, PARTITIONS, VERSION, IMPORTS, import_key(record.id)]
        fields = [partition_field(p, record.source) for p in periods]
        args = [*lease_args, record.dump(), record.id, record.create_us, *fields]
        answer = await self.redis.eval(_COMMIT, len(keys), *keys, *args)
        status = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        if status == "lost":
            raise Aborted(
                "the import took longer than its lease and another import may have written the same "
                "billing period meanwhile; nothing was changed: import again",
                reason="LEASE_LOST",
            )
        await self.durable.confirm()
        replaced = [
            (answer[i].decode().partition("|")[0], record.source, answer[i + 1].decode())
            for i in range(2, len(answer), 2)
        ]
        return int(answer[1]), replaced

    async def mark_superseded(self, import_id: str, period: str) -> None:
        record = await self.find(import_id)
        if record is not None and period not in record.superseded_periods:
            record.superseded_periods.append(period)
            await self.redis.set(import_key(import_id), record.dump())

    async def find(self, import_id: str) -> ImportRecord | None:
        raw = await self.redis.get(import_key(import_id))
        return ImportRecord.load(raw) if raw is not None else None

    async def get(self, import_id: str) -> ImportRecord:
        found = await self.find(import_id)
        if found is None:
            raise NotFound(
                f"import {import_id!r} does not exist",
                resource_type="cost.devmesh.io/Import",
                resource_name=f"imports/{import_id}",
            )
        return found

    async def newest(self, after_score: float | None, limit: int, source: str) -> list[ImportRecord]:
        """Imports newest first, strictly older than `after_score` (a create time)."""
        found: list[ImportRecord] = []
        high: str = "+inf" if after_score is None else f"({after_score}"
        offset = 0
        while len(found) < limit:
            ids = await self.redis.zrevrangebyscore(IMPORTS, high, "-inf", start=offset, num=200)
            if not ids:
                break
            offset += len(ids)
            raws = await self.redis.mget([import_key(i.decode()) for i in ids])
            for raw in raws:
                if raw is None:
                    continue
                record = ImportRecord.load(raw)
                if not source or record.source == source:
                    found.append(record)
                    if len(found) == limit:
                        break
        return found

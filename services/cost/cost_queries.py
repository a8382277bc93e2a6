"""Answering cost queries: the current files, the engine, and answers cached in Redis.

An answer is cached under the data version it was computed at, so an import (which bumps the
version) invalidates every cached answer at once without deleting anything: older entries
expire. Pages of one answer all come from the same version; a page token of an older
version is ABORTED (the data changed: start again), never a page of different data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from services.cost.catalog import Catalog
from services.cost.layout import Layout
from services.cost.query import CostQuery
from services.cost.query_engine import Files, QueryEngine, ResultRow, current_files
from services.runtime.errors import Aborted
from services.runtime.redis_client import Redis

CACHE_PREFIX = "devmesh:cost:answer:"


@dataclass(frozen=True)
class Answer:
    rows: list[ResultRow]
    version: int

    def totals(self) -> dict[str, Decimal]:
        found: dict[str, Decimal] = {}
        for row in self.rows:
            found[row.currency] = found.get(row.currency, Decimal(0)) + row.amount
        return found


def _dump(rows: list[ResultRow]) -> bytes:
    return json.dumps(
        [[list(r.dimensions), r.bucket_us, r.currency, str(r.amount), r.other] for r in rows],
        separators=(",", ":"),
    ).encode()


def _load(raw: bytes) -> list[ResultRow]:
    return [ResultRow(tuple(d), b, c, Decimal(a), o) for d, b, c, a, o in json.loads(raw)]


class CostQueries:
    def __init__(
        self,
        catalog: Catalog,
        layout: Layout,
        engine: QueryEngine,
        redis: Redis,
        *,
        cache_ttl: float,
        max_rows: int,
    ) -> None:
        self.catalog = catalog
        self.layout = layout
        self.engine = engine
        self.redis = redis
        self.cache_ttl_ms = max(1, int(cache_ttl * 1000))
        self.max_rows = max_rows
        self._files: tuple[int, Files] | None = None  # (version, files) last listed
        self.listeners: list[Callable[[int], None]] = []

    async def files(self) -> tuple[int, Files]:
        """The data version and the current files (listed again only when it changed)."""
        version = await self.catalog.version()
        if self._files is not None and self._files[0] == version:
            return self._files
        version, partitions = await self.catalog.snapshot()
        listed = current_files(self.layout, partitions)
        self._files = (version, listed)
        return self._files

    async def version(self) -> int:
        """The current data version (it changes with every committed import)."""
        return await self.catalog.version()

    async def cached_page(self, version: int, page_key: str) -> bytes | None:
        """A page as it was answered at `version` (serialized), if it still is cached."""
        cached: bytes | None = await self.redis.get(f"{CACHE_PREFIX}{version}:page:{page_key}")
        return cached

    async def keep_page(self, version: int, page_key: str, page: bytes) -> None:
        """Cache a serialized page answered at `version`: a repeat then costs two Redis reads and
        a parse, not rebuilding thousands of rows (the cached rows alone take tens of ms)."""
        await self.redis.set(f"{CACHE_PREFIX}{version}:page:{page_key}", page, px=self.cache_ttl_ms)

    async def answer(self, query: CostQuery, at_version: int | None = None) -> Answer:
        """The whole answer to `query` at the current data version (which must be
        `at_version` when given: a later page of an earlier answer)."""
        version = await self.catalog.version()
        if at_version is not None and at_version != version:
            raise Aborted(
                "the cost data changed since the first page (an import was committed); query again "
                "from the first page",
                reason="DATA_CHANGED",
                metadata={"page_version": str(at_version), "current_version": str(version)},
            )
        key = f"{CACHE_PREFIX}{version}:{query.key()}"
        cached = await self.redis.get(key)
        if cached is not None:
            return Answer(_load(cached), version)
        listed_version, files = await self.files()
        rows = await self.engine.run(query, files, self.max_rows)
        if listed_version == version:  # an import landed meanwhile: the answer is not cached
            await self.redis.set(key, _dump(rows), px=self.cache_ttl_ms)
        return Answer(rows, listed_version)

"""Utilisation samples of workloads' containers: Parquet files on disk (one per batch, under
`<data>/cost/utilization/workload=<w>/`), the workload's prices in Redis, and the usage
figures the recommendations need, computed by DuckDB over the files."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas

from services.cost.duck import DuckSettings, connect, literal
from services.cost.rightsizing import CPU_PERCENTILE, DEFAULT_PRICES, Prices, Usage
from services.runtime.errors import InvalidArgument
from services.runtime.redis_client import DurableWriter, Redis

PRICES_KEY = "devmesh:cost:workload-prices"  # hash: workload -> JSON prices
MAX_SAMPLES_PER_MESSAGE = 10_000
MAX_VALUE = 1e15  # a petabyte, a billion cores: beyond it a sample is garbage
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Sample:
    container: str
    time_us: int
    cpu: float
    memory: float
    cpu_request: float
    memory_request: float
    cpu_limit: float
    memory_limit: float


def check_sample(sample: Sample, field: str) -> None:
    """INVALID_ARGUMENT naming the first bad value of a sample."""
    for name in ("cpu", "memory", "cpu_request", "memory_request", "cpu_limit", "memory_limit"):
        value = getattr(sample, name)
        if not math.isfinite(value) or value < 0 or value > MAX_VALUE:
            raise InvalidArgument.for_field(f"{field}.{name}", "must be a finite number from 0 to 1e15")
    if sample.time_us <= 0:
        raise InvalidArgument.for_field(f"{field}.time", "is required")


def parse_price(text: str, field: str) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument.for_field(field, "is not a decimal number") from None
    if not value.is_finite() or value < 0 or value > 1000:
        raise InvalidArgument.for_field(field, "must be a price from 0 to 1000")
    return value


class UtilizationStore:
    def __init__(self, root: Path, duck: DuckSettings, redis: Redis, durable: DurableWriter) -> None:
        self.root = root
        self.duck = duck
        self.redis = redis
        self.durable = durable

    def _dir(self, workload: str) -> Path:
        return self.root / f"workload={workload}"

    async def add(self, workload: str, samples: Sequence[Sample]) -> None:
        """Store a batch (one Parquet file, written whole under a temporary name)."""
        if samples:
            await asyncio.to_thread(self._write, workload, list(samples))

    def _write(self, workload: str, samples: list[Sample]) -> None:
        directory = self._dir(workload)
        directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial, final = directory / f".{name}.tmp", directory / f"{name}.parquet"
        columns = (
            "container",
            "time_us",
            "cpu",
            "memory",
            "cpu_request",
            "memory_request",
            "cpu_limit",
            "memory_limit",
        )
        batch = pandas.DataFrame({c: [getattr(s, c) for s in samples] for c in columns})
        with connect(self.duck) as db:
            db.register("batch", batch)
            db.execute(f"COPY batch TO {literal(str(partial))} (FORMAT parquet)")
        partial.rename(final)

    async def set_prices(self, workload: str, prices: Prices) -> None:
        data = {
            "cpu": str(prices.cpu_millicore_hour),
            "memory": str(prices.memory_gib_hour),
            "currency": prices.currency,
        }
        await self.redis.hset(PRICES_KEY, workload, json.dumps(data))
        await self.durable.confirm()

    async def prices(self, workload: str) -> Prices:
        raw = await self.redis.hget(PRICES_KEY, workload)
        if raw is None:
            return DEFAULT_PRICES
        data = json.loads(raw)
        return Prices(Decimal(data["cpu"]), Decimal(data["memory"]), data["currency"])

    def workloads(self) -> list[str]:
        return sorted(
            p.name.partition("=")[2] for p in self.root.glob("workload=*") if any(p.glob("*.parquet"))
        )

    def containers(self, workload: str) -> list[str]:
        return [u.container for u in self.usage(workload, 0)]

    def usage(self, workload: str, window_days: int) -> list[Usage]:
        """Per container: CPU at the percentile, the highest daily memory peak and the newest
        requests, over the last `window_days` days of its samples (0: all of them)."""
        files = self._dir(workload) / "*.parquet"
        if not any(self._dir(workload).glob("*.parquet")):
            return []
        window = (
            f"WHERE time_us > (SELECT max(time_us) FROM s) - {int(window_days) * DAY_US}"
            if window_days
            else ""
        )
        with connect(self.duck) as db:
            rows = db.execute(
                f"WITH s AS (SELECT * FROM read_parquet({literal(str(files))})), w AS (SELECT * FROM s {window}), "
                "daily AS (SELECT container, time_us // 86400000000 AS day, max(memory) AS peak FROM w GROUP BY ALL) "
                f"SELECT w.container, quantile_cont(cpu, {CPU_PERCENTILE / 100}), (SELECT max(peak) FROM daily d "
                "WHERE d.container = w.container), arg_max(cpu_request, time_us), arg_max(memory_request, time_us), "
                "count(*), min(time_us), max(time_us) FROM w GROUP BY w.container ORDER BY w.container"
            ).fetchall()
        return [
            Usage(str(c), float(p), float(m), float(cr), float(mr), int(n), int(lo), int(hi))
            for c, p, m, cr, mr, n, lo, hi in rows
        ]

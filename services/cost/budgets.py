"""Budgets (kept in Redis) and their thresholds.

A budget's current period is the month, quarter or year of the newest day of spend its filters
select (the data, not the clock, says where "now" is: exports arrive a day or more late, and
imported history is evaluated as it lands). Actual spend is that period's EffectiveCost so
far; forecasted spend is actual plus the forecast of the rest of the period (when there is
enough history to forecast; otherwise forecasted thresholds wait). A threshold crossed is
notified once per (budget, period, threshold): the notifier's key says so, across replicas
and restarts. Budgets are evaluated when created or updated and after every import.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.cost import forecast
from services.cost.anomalies import conditions_from
from services.cost.cost_queries import CostQueries
from services.cost.daily_spend import daily
from services.cost.dimensions import DEFAULT_METRIC, DIMENSIONS
from services.cost.importer import money
from services.cost.query import DAY_US, Condition
from services.runtime import etags
from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from services.runtime.notifications import Notifier, Webhook
from services.runtime.redis_client import DurableWriter, Redis

BUDGETS = "devmesh:cost:budgets"  # hash: id -> JSON (without its revision)
REVISIONS = "devmesh:cost:budget-revisions"  # hash: id -> revision
MAX_THRESHOLDS = 5
THRESHOLD_CROSSED = "BUDGET_THRESHOLD_CROSSED"
ACTUAL, FORECASTED = "ACTUAL", "FORECASTED"
PERIODS = ("MONTH", "QUARTER", "YEAR")

# The record is opaque to the scripts (Lua's JSON would round its microsecond times).
# KEYS: budgets, revisions; ARGV: id, expected revision (-1: any, -2: must not exist), JSON
_PUT = """
local revision = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local expected = tonumber(ARGV[2])
if expected == -2 and revision >= 0 then return {'exists'} end
if expected ~= -2 and revision < 0 then return {'missing'} end
if expected >= 0 and expected ~= revision then return {'stale', revision} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'ok', redis.call('HINCRBY', KEYS[2], ARGV[1], 1)}
"""
_DELETE = """
local revision = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if revision < 0 then return {'missing'} end
if tonumber(ARGV[2]) >= 0 and tonumber(ARGV[2]) ~= revision then return {'stale', revision} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return {'ok', revision}
"""


@dataclass
class BudgetRecord:
    id: str
    amount: str
    currency: str
    period: str
    filters: list[list[Any]]
    thresholds: list[list[Any]]  # [percent, basis]
    webhook_urls: list[str]
    webhook_secret: str
    create_us: int
    revision: int = 0

    @property
    def etag(self) -> str:
        return etags.of(self.revision)

    def conditions(self) -> tuple[Condition, ...]:
        return (*conditions_from(self.filters), Condition(DIMENSIONS["currency"], "EQUALS", (self.currency,)))


@dataclass(frozen=True)
class Status:
    """A budget's spend in its current period."""

    period_label: str
    period_start_us: int
    actual: Decimal
    forecasted: Decimal | None


def period_bounds(day_us: int, period: str) -> tuple[int, int, str]:
    """Start, end (exclusive) and label of the period `day_us` falls in."""
    day = datetime.fromtimestamp(day_us / 1e6, UTC)
    if period == "YEAR":
        start, end, label = datetime(day.year, 1, 1), datetime(day.year + 1, 1, 1), f"{day.year}"
    elif period == "QUARTER":
        first = 3 * ((day.month - 1) // 3) + 1
        start = datetime(day.year, first, 1)
        end = datetime(day.year + (first == 10), (first + 2) % 12 + 1, 1)
        label = f"{day.year}-Q{(first - 1) // 3 + 1}"
    else:
        start = datetime(day.year, day.month, 1)
        end = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1)
        label = f"{day.year}-{day.month:02d}"
    return (
        int(start.replace(tzinfo=UTC).timestamp() * 1e6),
        int(end.replace(tzinfo=UTC).timestamp() * 1e6),
        label,
    )


class Budgets:
    def __init__(
        self, queries: CostQueries, redis: Redis, durable: DurableWriter, notifier: Notifier
    ) -> None:
        self.queries = queries
        self.redis = redis
        self.durable = durable
        self.notifier = notifier

    async def _put(self, record: BudgetRecord, expected: int) -> BudgetRecord:
        data = asdict(record)
        data.pop("revision")
        answer = await self.redis.eval(_PUT, 2, BUDGETS, REVISIONS, record.id, expected, json.dumps(data))
        status = answer[0].decode()
        if status == "exists":
            raise AlreadyExists(
                f"budget {record.id!r} already exists",
                resource_type="cost.devmesh.io/Budget",
                resource_name=f"budgets/{record.id}",
            )
        if status == "missing":
            raise self._missing(record.id)
        if status == "stale":
            raise etags.mismatch("", etags.of(int(answer[1])), f"budget budgets/{record.id}")
        await self.durable.confirm()
        record.revision = int(answer[1])
        return record

    def _missing(self, budget_id: str) -> NotFound:
        return NotFound(
            f"budget {budget_id!r} does not exist",
            resource_type="cost.devmesh.io/Budget",
            resource_name=f"budgets/{budget_id}",
        )

    async def create(self, record: BudgetRecord) -> BudgetRecord:
        created = await self._put(record, -2)
        await self.evaluate(created)
        return created

    async def get(self, budget_id: str) -> BudgetRecord:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(BUDGETS, budget_id)
            pipe.hget(REVISIONS, budget_id)
            raw, revision = await pipe.execute()
        if raw is None:
            raise self._missing(budget_id)
        return BudgetRecord(**json.loads(raw), revision=int(revision or 0))

    async def all(self) -> list[BudgetRecord]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(BUDGETS)
            pipe.hgetall(REVISIONS)
            found, revisions = await pipe.execute()
        return sorted(
            (BudgetRecord(**json.loads(v), revision=int(revisions.get(k, 0))) for k, v in found.items()),
            key=lambda b: b.id,
        )

    async def update(self, record: BudgetRecord, etag: str) -> BudgetRecord:
        current = await self.get(record.id)
        etags.check(etag, current.etag, f"budget budgets/{record.id}")
        updated = await self._put(record, current.revision if etag else -1)
        await self.evaluate(updated)
        return updated

    async def delete(self, budget_id: str, etag: str) -> None:
        current = await self.get(budget_id)
        etags.check(etag, current.etag, f"budget budgets/{budget_id}")
        answer = await self.redis.eval(
            _DELETE, 2, BUDGETS, REVISIONS, budget_id, current.revision if etag else -1
        )
        if answer[0] == b"missing":
            raise self._missing(budget_id)
        if answer[0] == b"stale":
            raise etags.mismatch(etag, etags.of(int(answer[1])), f"budget budgets/{budget_id}")
        await self.durable.confirm()

    async def status(self, record: BudgetRecord) -> Status | None:
        """The current period's actual and forecasted spend; None when nothing is spent yet."""
        series = await daily(
            self.queries,
            group_by=(),
            filters=record.conditions(),
            metric=DEFAULT_METRIC,
            end_us=None,
            days=forecast.MAX_HISTORY_DAYS,
        )
        if not series:
            return None
        (history,) = series
        last_day = history.end_us - DAY_US
        start, end, label = period_bounds(last_day, record.period)
        actual = sum(
            (Decimal(str(v)) for i, v in enumerate(history.values) if history.day(i) >= start), Decimal(0)
        )
        forecasted: Decimal | None = None
        remaining = (end - history.end_us) // DAY_US
        if remaining <= 0:
            forecasted = actual
        else:
            try:
                result = await asyncio.to_thread(
                    forecast.remembered, history.values, remaining, forecast.DEFAULT_LEVEL
                )
                forecasted = actual + Decimal(str(round(float(result.mean.sum()), 10)))
            except FailedPrecondition:
                forecasted = None  # too little history: forecasted thresholds wait
        return Status(label, start, actual.quantize(Decimal("1e-10")), forecasted)

    async def evaluate(self, record: BudgetRecord) -> Status | None:
        """Notify each threshold the current period's spend crossed, once."""
        status = await self.status(record)
        if status is None:
            return None
        amount = Decimal(record.amount)
        for percent, basis in record.thresholds:
            spend = status.actual if basis == ACTUAL else status.forecasted
            if spend is None or spend < amount * Decimal(str(percent)) / 100:
                continue
            await self.notifier.emit(
                f"budget:{record.id}:{status.period_label}:{basis}:{percent}",
                THRESHOLD_CROSSED,
                {
                    "resource": f"budgets/{record.id}",
                    "period": status.period_label,
                    "threshold_percent": percent,
                    "basis": basis,
                    "amount": money(spend),
                    "currency": record.currency,
                    "budget_amount": record.amount,
                    "time_us": time.time_ns() // 1000,
                },
                [Webhook(url, record.webhook_secret) for url in record.webhook_urls],
            )
        return status

    async def evaluate_all(self) -> None:
        for record in await self.all():
            await self.evaluate(record)

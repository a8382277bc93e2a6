"""Daily spend series for forecasts, anomaly monitors and budgets, read through the same query
layer as QueryCost (the daily rollups, cached under the data version)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from services.cost.cost_queries import CostQueries
from services.cost.dimensions import DIMENSIONS, Dimension, Metric
from services.cost.query import DAY_US, Condition, CostQuery

CURRENCY = DIMENSIONS["currency"]


@dataclass(frozen=True)
class Series:
    """One group's daily spend: day (00:00 UTC, µs) -> amount, over consecutive days."""

    key: tuple[str, ...]  # the group's values (the monitored dimension's, then the currency)
    start_us: int
    values: np.ndarray

    @property
    def end_us(self) -> int:
        """The day after the last day."""
        return self.start_us + len(self.values) * DAY_US

    def day(self, index: int) -> int:
        return self.start_us + index * DAY_US


def day_floor(us: int) -> int:
    return us - us % DAY_US


LOOKBACK_DAYS = 1095  # how far back the newest day of spend is looked for


async def newest_day(queries: CostQueries, *, filters: tuple[Condition, ...], metric: Metric) -> int | None:
    """The newest day with spend (00:00 UTC, µs) in the last three years; None without any."""
    until = day_floor(time.time_ns() // 1000) + DAY_US
    month = await _latest_bucket(queries, filters, metric, until - LOOKBACK_DAYS * DAY_US, until, "MONTH")
    if month is None:
        return None
    return await _latest_bucket(queries, filters, metric, month, min(until, month + 32 * DAY_US), "DAY")


async def _latest_bucket(
    queries: CostQueries,
    filters: tuple[Condition, ...],
    metric: Metric,
    start: int,
    end: int,
    granularity: str,
) -> int | None:
    answer = await queries.answer(
        CostQuery(
            group_by=(), filters=filters, start_us=start, end_us=end, granularity=granularity, metric=metric
        )
    )
    buckets = [row.bucket_us for row in answer.rows if row.bucket_us is not None and row.amount != 0]
    return day_floor(max(buckets)) if buckets else None


async def daily(
    queries: CostQueries,
    *,
    group_by: Sequence[Dimension],
    filters: tuple[Condition, ...],
    metric: Metric,
    end_us: int | None,
    days: int,
) -> list[Series]:
    """Each group's daily spend over the `days` days before `end_us` (a day boundary; None: the
    day after the last day with spend). Days without spend are 0; a series starts on its first
    day with spend."""
    if end_us is None:
        newest = await newest_day(queries, filters=filters, metric=metric)
        if newest is None:
            return []
        end_us = newest + DAY_US
    until = day_floor(end_us)
    query = CostQuery(
        group_by=(*group_by, CURRENCY),
        filters=filters,
        start_us=until - days * DAY_US,
        end_us=until,
        granularity="DAY",
        metric=metric,
    )
    answer = await queries.answer(query)
    by_key: dict[tuple[str, ...], dict[int, Decimal]] = {}
    for row in answer.rows:
        if row.bucket_us is None:
            continue
        by_key.setdefault(row.dimensions, {})[row.bucket_us] = row.amount
    if not by_key:
        return []
    last = until
    found = []
    for key, amounts in sorted(by_key.items()):
        first = min(amounts)
        count = (last - first) // DAY_US
        values = np.zeros(count)
        for day, amount in amounts.items():
            if day < last:
                values[(day - first) // DAY_US] = float(amount)
        found.append(Series(key, first, values))
    return found

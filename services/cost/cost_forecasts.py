"""ForecastCost: the daily history of the spend a filter selects, the forecast, and the
month-end projection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from services.cost import forecast
from services.cost.cost_queries import CostQueries
from services.cost.daily_spend import daily
from services.cost.dimensions import Metric
from services.cost.query import DAY_US, Condition
from services.runtime.errors import FailedPrecondition, InvalidArgument

HISTORY_DAYS = forecast.MAX_HISTORY_DAYS


@dataclass(frozen=True)
class Projection:
    currency: str
    result: forecast.Forecast
    start_us: int  # the first day forecast
    history_days: int
    month_to_date: float
    month_end: tuple[float, float, float] | None  # mean, lower, upper; None when out of the horizon


def month_end_us(day_us: int) -> int:
    """The first day of the month after the one `day_us` is in."""
    day = datetime.fromtimestamp(day_us / 1e6, UTC)
    following = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=UTC)
    return int(following.timestamp() * 1_000_000)


async def project(
    queries: CostQueries,
    *,
    filters: tuple[Condition, ...],
    metric: Metric,
    currency: str,
    horizon_days: int,
    level: int,
    history_end_us: int | None,
) -> Projection:
    if not metric.money:
        raise InvalidArgument.for_field("metric", "ConsumedQuantity is not forecast: pick a cost metric")
    level = forecast.check_level(level)
    end = history_end_us + DAY_US if history_end_us is not None else None
    series = await daily(queries, group_by=(), filters=filters, metric=metric, end_us=end, days=HISTORY_DAYS)
    currencies = sorted(s.key[-1] for s in series)
    if currency:
        series = [s for s in series if s.key[-1] == currency]
    elif len(series) > 1:
        raise FailedPrecondition(
            f"the spend selected is in several currencies ({', '.join(currencies)}): name one in `currency`",
            reason="SEVERAL_CURRENCIES",
        )
    if not series:
        raise FailedPrecondition(
            f"a forecast needs at least {forecast.MIN_HISTORY_DAYS} days of history; the spend selected has none",
            reason="NOT_ENOUGH_HISTORY",
            metadata={"needed_days": str(forecast.MIN_HISTORY_DAYS), "history_days": "0"},
        )
    (history,) = series
    start = history.end_us
    month_end = month_end_us(start)
    if horizon_days < 0:
        raise InvalidArgument.for_field("horizon_days", "must not be negative")
    horizon = horizon_days or (month_end - start) // DAY_US
    result = await asyncio.to_thread(forecast.remembered, history.values, horizon, level)
    month_start = _month_start(start)
    done = [v for i, v in enumerate(history.values) if history.day(i) >= month_start]
    remaining = (month_end - start) // DAY_US
    projected = None
    if remaining <= horizon:
        mean, low, high = forecast.total_bounds(result, remaining)
        mtd = float(sum(done))
        projected = (mtd + mean, mtd + low, mtd + high)
    return Projection(history.key[-1], result, start, len(history.values), float(sum(done)), projected)


def _month_start(day_us: int) -> int:
    day = datetime.fromtimestamp(day_us / 1e6, UTC)
    return int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp() * 1_000_000)

"""A cost query, checked: what to group by, which rows, which range and buckets, what to sum.

Built from plain values (the servicer unpacks the request), so that QueryCost, budgets,
anomaly monitors and forecasts share one language of dimensions and filters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from services.cost.dimensions import DEFAULT_METRIC, Dimension, Metric, dimension
from services.runtime.errors import InvalidArgument

MAX_GROUP_BY = 4
MAX_FILTERS = 20
MAX_FILTER_VALUES = 100
MAX_VALUE = 512
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
GRANULARITIES = ("", "HOUR", "DAY", "WEEK", "MONTH")
OPERATORS = ("EQUALS", "IN", "PREFIX")
OTHER = "other"


@dataclass(frozen=True)
class Condition:
    """One filter: `dimension` compared with `values` by `operator`, maybe negated."""

    dimension: Dimension
    operator: str
    values: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class CostQuery:
    group_by: tuple[Dimension, ...]
    filters: tuple[Condition, ...]
    start_us: int
    end_us: int
    granularity: str = ""
    metric: Metric = DEFAULT_METRIC
    top_n: int = 0

    def key(self) -> str:
        """A stable digest of the query (cache keys, page-token fingerprints)."""
        described = [
            [d.name for d in self.group_by],
            [[c.dimension.name, c.operator, list(c.values), c.negate] for c in self.filters],
            self.start_us,
            self.end_us,
            self.granularity,
            self.metric.name,
            self.top_n,
        ]
        return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:32]

    def on_rollup(self) -> bool:
        """Whether the daily rollups can answer it: day-aligned range, buckets of a day or more,
        and only dimensions the rollups keep."""
        return (
            self.granularity != "HOUR"
            and self.start_us % DAY_US == 0
            and self.end_us % DAY_US == 0
            and all(d.rollup is not None for d in self.group_by)
            and all(c.dimension.rollup is not None for c in self.filters)
        )


def conditions(raw: Sequence[tuple[str, str, Sequence[str], bool]], field: str) -> tuple[Condition, ...]:
    """Filters from (dimension, operator, values, negate); INVALID_ARGUMENT names the bad one."""
    if len(raw) > MAX_FILTERS:
        raise InvalidArgument.for_field(field, f"at most {MAX_FILTERS} filters")
    found = []
    for index, (name, operator, values, negate) in enumerate(raw):
        where = f"{field}[{index}]"
        dim = dimension(name, f"{where}.dimension")
        operator = operator or "EQUALS"
        if operator not in OPERATORS:
            raise InvalidArgument.for_field(f"{where}.operator", "must be EQUALS, IN or PREFIX")
        if not values or len(values) > MAX_FILTER_VALUES:
            raise InvalidArgument.for_field(f"{where}.values", f"1 to {MAX_FILTER_VALUES} values")
        if operator != "IN" and len(values) != 1:
            raise InvalidArgument.for_field(f"{where}.values", f"{operator} takes exactly one value")
        if any(len(v) > MAX_VALUE or "\x00" in v for v in values):
            raise InvalidArgument.for_field(
                f"{where}.values", f"values are at most {MAX_VALUE} characters, no NUL"
            )
        found.append(Condition(dim, operator, tuple(values), negate))
    return tuple(found)


def build(
    *,
    group_by: Sequence[str],
    filters: tuple[Condition, ...],
    start_us: int,
    end_us: int,
    granularity: str,
    metric: Metric,
    top_n: int,
    max_range_days: int,
) -> CostQuery:
    """A checked query."""
    if len(group_by) > MAX_GROUP_BY:
        raise InvalidArgument.for_field("group_by", f"at most {MAX_GROUP_BY} dimensions")
    dims = tuple(dimension(name, f"group_by[{i}]") for i, name in enumerate(group_by))
    if len({d.name for d in dims}) != len(dims):
        raise InvalidArgument.for_field("group_by", "names a dimension twice")
    if not start_us or not end_us:
        raise InvalidArgument.for_field("start_time" if not start_us else "end_time", "is required")
    if end_us <= start_us:
        raise InvalidArgument.for_field("end_time", "must be after start_time")
    if end_us - start_us > max_range_days * DAY_US:
        raise InvalidArgument.for_field("end_time", f"the range is at most {max_range_days} days")
    if granularity not in GRANULARITIES:
        raise InvalidArgument.for_field("granularity", "unknown granularity")
    if top_n < 0:
        raise InvalidArgument.for_field("top_n", "must not be negative")
    if top_n and not dims:
        raise InvalidArgument.for_field("top_n", "needs a group_by to rank groups")
    return CostQuery(dims, filters, start_us, end_us, granularity, metric, top_n)

"""The dimensions and metrics a cost query names, and the columns that hold them.

One table for the query layer, the daily rollups, anomaly monitors and budgets: a dimension is
a name (`service`), the SQL that reads it from the stored FOCUS rows, and the column of the
daily rollup that holds it (None: only the rows have it, so a query on it reads the rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.cost.duck import literal
from services.runtime.errors import InvalidArgument

TAG_PREFIX = "tag:"
MAX_TAG_KEY = 128
_TAG_KEY = re.compile(r"[^\x00-\x1f]{1,128}")


@dataclass(frozen=True)
class Dimension:
    name: str
    sql: str  # over the stored rows
    rollup: str | None  # its column in the daily rollup


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        # FOCUS 1.3 names the provider ServiceProviderName and keeps ProviderName deprecated.
        Dimension("provider", "coalesce(ServiceProviderName, ProviderName)", "provider"),
        Dimension("service", "ServiceName", "service"),
        Dimension("service_category", "ServiceCategory", "service_category"),
        Dimension("region", "RegionId", "region"),
        Dimension("sub_account", "SubAccountId", "sub_account"),
        Dimension("billing_account", "BillingAccountId", "billing_account"),
        Dimension("charge_category", "ChargeCategory", "charge_category"),
        Dimension("currency", "BillingCurrency", "currency"),
        Dimension("resource", "ResourceId", None),
        Dimension("sku", "SkuId", None),
    )
}
ROLLUP_DIMENSIONS = [d for d in DIMENSIONS.values() if d.rollup is not None]


@dataclass(frozen=True)
class Metric:
    name: str  # the contract's enum name, without its prefix
    column: str  # the FOCUS column summed
    rollup: str  # its sum in the daily rollup
    money: bool  # has a currency


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("EFFECTIVE_COST", "EffectiveCost", "effective_cost", True),
        Metric("BILLED_COST", "BilledCost", "billed_cost", True),
        Metric("LIST_COST", "ListCost", "list_cost", True),
        Metric("CONTRACTED_COST", "ContractedCost", "contracted_cost", True),
        Metric("CONSUMED_QUANTITY", "ConsumedQuantity", "consumed_quantity", False),
    )
}
DEFAULT_METRIC = METRICS["EFFECTIVE_COST"]


def dimension(name: str, field: str) -> Dimension:
    """The dimension `name` (`service`, `tag:team`); INVALID_ARGUMENT naming `field`."""
    if name.startswith(TAG_PREFIX):
        key = name[len(TAG_PREFIX) :]
        if not _TAG_KEY.fullmatch(key):
            raise InvalidArgument.for_field(field, f"a tag key is 1-{MAX_TAG_KEY} printable characters")
        return Dimension(name, f"Tags[{literal(key)}]", None)
    found = DIMENSIONS.get(name)
    if found is None:
        known = ", ".join(DIMENSIONS)
        raise InvalidArgument.for_field(
            field,
            f"{name[:60]!r} is not a dimension; use one of {known}, or tag:<key>",
            reason="UNKNOWN_DIMENSION",
        )
    return found


def rollup_sql(files: str) -> str:
    """The daily rollup of the rows in `files` (a read_parquet argument)."""
    keys = [f"{d.sql} AS {d.rollup}" for d in ROLLUP_DIMENSIONS]
    sums = [f"sum({m.column}) AS {m.rollup}" for m in METRICS.values()]
    return (
        f"SELECT date_trunc('day', ChargePeriodStart) AS day, ConsumedUnit AS consumed_unit, {', '.join(keys)}, "
        f"{', '.join(sums)}, count(*) AS row_count FROM read_parquet({files}) GROUP BY ALL"
    )

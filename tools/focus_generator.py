"""Valid FOCUS 1.2 data at any size, with labelled anomalies, and utilisation samples with
known answers: for the cost service's tests and benchmarks.

    python -m tools.focus_generator --rows 1000000 --out /tmp/focus.csv      (.csv, .csv.gz, .parquet)

Rows are hourly charges of `resources` resources over `days` days from `start`: several
providers, services, regions, sub-accounts and tags, whose cost follows a trend and a weekly
cycle with multiplicative noise. DuckDB writes them (range() x range(), hash-based noise), so a
million rows take seconds. Each anomaly multiplies one service's cost on one day; the
anomalies are returned with the data, as labels.

`daily_series` makes the same kind of series directly (a day's total), for the forecast and
anomaly benchmarks; `utilization` makes a container's samples whose p95 and peak are computed
with numpy from the very samples, so the recommendation they lead to is known.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from services.cost.duck import DuckSettings, connect, literal

PROVIDERS = ("AWS", "Microsoft", "Google Cloud")
SERVICES = (
    ("Amazon Elastic Compute Cloud", "Compute", 0),
    ("Amazon Simple Storage Service", "Storage", 0),
    ("Amazon Relational Database Service", "Databases", 0),
    ("AWS Lambda", "Compute", 0),
    ("Virtual Machines", "Compute", 1),
    ("Storage", "Storage", 1),
    ("Azure Cosmos DB", "Databases", 1),
    ("Compute Engine", "Compute", 2),
    ("Cloud Storage", "Storage", 2),
    ("BigQuery", "Analytics", 2),
)
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eastus", "westeurope", "us-central1", "europe-west1")
TEAMS = ("web", "api", "data", "ml", "platform")
ENVIRONMENTS = ("prod", "staging", "dev")
# Cost on each weekday (Monday first) relative to the week's mean: quieter weekends.
WEEKLY = (1.08, 1.1, 1.1, 1.08, 1.04, 0.8, 0.8)


@dataclass(frozen=True)
class Anomaly:
    """A labelled anomaly: `service`'s cost multiplied by `factor` on `day`."""

    day: date
    service: str
    factor: float


@dataclass(frozen=True)
class Spec:
    start: date = date(2024, 9, 1)
    days: int = 30
    resources: int = 40
    seed: int = 7
    trend_per_day: float = 0.003  # +0.3% a day
    noise: float = 0.15  # spread of the hourly multiplicative noise
    anomalies: tuple[Anomaly, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return self.days * 24 * self.resources


def spec_for_rows(rows: int, *, days: int = 30, **more: object) -> Spec:
    """A spec of about `rows` rows over `days` days (at least one resource)."""
    return Spec(days=days, resources=max(1, math.ceil(rows / (days * 24))), **more)  # type: ignore[arg-type]


def _rows_sql(spec: Spec) -> str:
    weekly = "[" + ", ".join(str(w) for w in WEEKLY) + "]"
    services = "[" + ", ".join(literal(s) for s, _, _ in SERVICES) + "]"
    categories = "[" + ", ".join(literal(c) for _, c, _ in SERVICES) + "]"
    providers = "[" + ", ".join(literal(PROVIDERS[p]) for _, _, p in SERVICES) + "]"
    regions = "[" + ", ".join(literal(r) for r in REGIONS) + "]"
    teams = "[" + ", ".join(literal(t) for t in TEAMS) + "]"
    envs = "[" + ", ".join(literal(e) for e in ENVIRONMENTS) + "]"
    anomaly = " ".join(
        f"WHEN day_index = {(a.day - spec.start).days} AND service = {literal(a.service)} THEN {a.factor}"
        for a in spec.anomalies
    )
    factor = f"CASE {anomaly} ELSE 1.0 END" if anomaly else "1.0"
    start = literal(spec.start.isoformat())
    return f"""
WITH grid AS (
  SELECT h, r, h // 24 AS day_index,
         TIMESTAMP {start} + to_hours(h) AS t,
         {services}[r % {len(SERVICES)} + 1] AS service,
         {categories}[r % {len(SERVICES)} + 1] AS category,
         {providers}[r % {len(SERVICES)} + 1] AS provider,
         {regions}[(r // {len(SERVICES)}) % {len(REGIONS)} + 1] AS region,
         (r % 7) AS account,
         {teams}[(r // 3) % {len(TEAMS)} + 1] AS team,
         {envs}[(r // 5) % {len(ENVIRONMENTS)} + 1] AS env,
         0.05 + (hash(r, {spec.seed}) % 1000) / 1000.0 AS base,
         ((hash(h, r, {spec.seed}) % 1000000) / 1000000.0 + (hash(r, h, {spec.seed} + 1) % 1000000) / 1000000.0
          + (hash(h + r, {spec.seed} + 2) % 1000000) / 1000000.0 - 1.5) AS noise
  FROM range({spec.days * 24}) hours(h), range({spec.resources}) resources(r)
), priced AS (
  SELECT *, round(base * (1 + {spec.trend_per_day} * day_index) * {weekly}[isodow(t)]
                 * greatest(0.05, 1 + {spec.noise * 2} * noise) * {factor}, 10) AS cost
  FROM grid
)
SELECT
  CASE WHEN region LIKE '%-%-%' THEN region || 'a' END AS AvailabilityZone,
  CAST(cost AS DECIMAL(20, 10)) AS BilledCost,
  'ba-' || (account % 2) AS BillingAccountId,
  'Billing account ' || (account % 2) AS BillingAccountName,
  'Billing Profile' AS BillingAccountType,
  'USD' AS BillingCurrency,
  strftime(date_trunc('month', t) + INTERVAL 1 MONTH, '%Y-%m-%dT%H:%M:%SZ') AS BillingPeriodEnd,
  strftime(date_trunc('month', t), '%Y-%m-%dT%H:%M:%SZ') AS BillingPeriodStart,
  NULL AS CapacityReservationId, NULL AS CapacityReservationStatus,
  'Usage' AS ChargeCategory, NULL AS ChargeClass,
  service || ' usage in ' || region AS ChargeDescription,
  'Usage-Based' AS ChargeFrequency,
  strftime(t + INTERVAL 1 HOUR, '%Y-%m-%dT%H:%M:%SZ') AS ChargePeriodEnd,
  strftime(t, '%Y-%m-%dT%H:%M:%SZ') AS ChargePeriodStart,
  NULL AS CommitmentDiscountCategory, NULL AS CommitmentDiscountId, NULL AS CommitmentDiscountName,
  NULL AS CommitmentDiscountQuantity, NULL AS CommitmentDiscountStatus, NULL AS CommitmentDiscountType,
  NULL AS CommitmentDiscountUnit,
  CAST(round(cost * 100, 6) AS DECIMAL(20, 6)) AS ConsumedQuantity, 'Hours' AS ConsumedUnit,
  CAST(cost AS DECIMAL(20, 10)) AS ContractedCost, CAST(1 AS DECIMAL(20, 10)) AS ContractedUnitPrice,
  CAST(cost AS DECIMAL(20, 10)) AS EffectiveCost,
  'inv-' || strftime(t, '%Y%m') AS InvoiceId, provider AS InvoiceIssuerName,
  CAST(round(cost * 1.2, 10) AS DECIMAL(20, 10)) AS ListCost, CAST(1.2 AS DECIMAL(20, 10)) AS ListUnitPrice,
  'Standard' AS PricingCategory, 'USD' AS PricingCurrency,
  CAST(1 AS DECIMAL(20, 10)) AS PricingCurrencyContractedUnitPrice,
  CAST(cost AS DECIMAL(20, 10)) AS PricingCurrencyEffectiveCost,
  CAST(1.2 AS DECIMAL(20, 10)) AS PricingCurrencyListUnitPrice,
  CAST(round(cost * 100, 6) AS DECIMAL(20, 6)) AS PricingQuantity, 'Hours' AS PricingUnit,
  provider AS ProviderName, provider AS PublisherName,
  region AS RegionId, upper(region) AS RegionName,
  'res-' || r AS ResourceId, 'resource ' || r AS ResourceName, category AS ResourceType,
  category AS ServiceCategory, service AS ServiceName, category || ' (other)' AS ServiceSubcategory,
  'sku-' || (r % 23) AS SkuId, 'meter' AS SkuMeter, NULL AS SkuPriceDetails, 'price-' || (r % 23) AS SkuPriceId,
  'acct-' || account AS SubAccountId, 'Account ' || account AS SubAccountName, 'Subscription' AS SubAccountType,
  '{{"team": "' || team || '", "env": "' || env || '"}}' AS Tags
FROM priced
"""


def write_rows(spec: Spec, out: Path, *, threads: int = 2) -> int:
    """Write `spec`'s rows to `out` (.csv, .csv.gz or .parquet); the number of rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    name = out.name
    if name.endswith(".parquet"):
        options = "FORMAT parquet"
    elif name.endswith(".gz"):
        options = "FORMAT csv, HEADER true, COMPRESSION gzip"
    else:
        options = "FORMAT csv, HEADER true"
    with connect(DuckSettings(1024, threads, out.parent)) as db:
        db.execute(f"COPY ({_rows_sql(spec)}) TO {literal(str(out))} ({options})")
    return spec.rows


def daily_truth(spec: Spec, rows_file: Path) -> dict[tuple[date, str], float]:
    """(day, service) -> the day's cost in a written file (what detection should see)."""
    with connect(DuckSettings(512, 2, rows_file.parent)) as db:
        found = db.execute(
            f"SELECT CAST(ChargePeriodStart AS DATE), ServiceName, sum(EffectiveCost) FROM read_csv({literal(str(rows_file))}) "
            "GROUP BY ALL"
        ).fetchall()
    return {(d, s): float(v) for d, s, v in found}


def daily_series(
    days: int,
    *,
    base: float = 100.0,
    trend_per_day: float = 0.004,
    weekly: tuple[float, ...] = WEEKLY,
    noise: float = 0.04,
    seed: int = 0,
    anomalies: dict[int, float] | None = None,
) -> np.ndarray:
    """A day's total cost for `days` days: trend x weekly cycle x (1 + Gaussian noise), each
    day in `anomalies` (index -> factor) multiplied by its factor."""
    rng = np.random.default_rng(seed)
    index = np.arange(days)
    cycle = np.array([weekly[i % 7] for i in index])
    values = base * (1 + trend_per_day * index) * cycle * (1 + noise * rng.standard_normal(days))
    for day, factor in (anomalies or {}).items():
        values[day] *= factor
    clipped: np.ndarray = np.maximum(values, 0.0)
    return clipped


@dataclass(frozen=True)
class ContainerSamples:
    """A container's samples, and what a recommendation from them must say."""

    container: str
    times_us: list[int]
    cpu: list[float]
    memory: list[float]
    cpu_request: float
    memory_request: float
    cpu_p95: float  # numpy's linear percentile of `cpu`, as DuckDB's quantile_cont computes it
    memory_peak: float


def utilization(
    container: str,
    *,
    days: int = 14,
    every_minutes: int = 5,
    cpu_mean: float = 200.0,
    memory_mean: float = 400 * 1024**2,
    cpu_request: float = 1000.0,
    memory_request: float = 2 * 1024**3,
    start_us: int = 1_725_148_800_000_000,  # 2024-09-01
    seed: int = 0,
) -> ContainerSamples:
    """Samples of a container with a daily cycle, over `days` days."""
    rng = np.random.default_rng(seed)
    count = days * 24 * 60 // every_minutes
    minutes = np.arange(count) * every_minutes
    daily = 1 + 0.5 * np.sin(2 * np.pi * (minutes % 1440) / 1440)
    cpu = np.maximum(cpu_mean * daily * (1 + 0.2 * rng.standard_normal(count)), 1.0)
    memory = np.maximum(
        memory_mean * (0.9 + 0.2 * daily / 1.5) * (1 + 0.05 * rng.standard_normal(count)), 1.0
    )
    times = [start_us + int(m) * 60_000_000 for m in minutes]
    return ContainerSamples(
        container=container,
        times_us=times,
        cpu=[float(v) for v in cpu],
        memory=[float(v) for v in memory],
        cpu_request=cpu_request,
        memory_request=memory_request,
        cpu_p95=float(np.percentile(cpu, 95)),
        memory_peak=float(memory.max()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.focus_generator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 9, 1))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--anomaly", action="append", default=[], help="DAY_INDEX:SERVICE:FACTOR, e.g. 20:BigQuery:4"
    )
    args = parser.parse_args(argv)
    anomalies = []
    for text in args.anomaly:
        day, service, factor = text.split(":")
        anomalies.append(Anomaly(args.start + timedelta(days=int(day)), service, float(factor)))
    spec = spec_for_rows(
        args.rows, days=args.days, start=args.start, seed=args.seed, anomalies=tuple(anomalies)
    )
    print(f"{write_rows(spec, args.out)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The query layer, behind one interface: `QueryEngine.run(query, files)`.

`DuckDBEngine` is the embedded default: DuckDB over the Parquet files of the current imports
(the daily rollups when they can answer, the rows otherwise). A distributed engine (Trino,
Spark SQL, ClickHouse) reading the same layout is another implementation of the same
protocol: it gets the same checked query and the same list of current partitions.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from services.cost.duck import DuckSettings, connect, literal
from services.cost.layout import Layout
from services.cost.query import OTHER, CostQuery
from services.runtime.errors import InvalidArgument

UNIT = "unit"  # the dimension ConsumedQuantity rows are kept apart by, in place of a currency
_BUCKETS = {"HOUR": "hour", "DAY": "day", "WEEK": "week", "MONTH": "month"}


@dataclass(frozen=True)
class ResultRow:
    dimensions: tuple[str, ...]  # in the query's group_by order
    bucket_us: int | None
    currency: str  # the unit for ConsumedQuantity
    amount: Decimal
    other: bool = False


@dataclass(frozen=True)
class Files:
    """The Parquet files of the current partitions, rows and rollups."""

    rows: tuple[str, ...]
    rollups: tuple[str, ...]


class QueryEngine(Protocol):
    async def run(self, query: CostQuery, files: Files, max_rows: int) -> list[ResultRow]:
        """Every row of the answer (at most max_rows; more is INVALID_ARGUMENT)."""
        ...


def current_files(layout: Layout, partitions: dict[tuple[str, str], str]) -> Files:
    """The files of the imports the catalog names (an import may hold no row of a period)."""
    rows: list[str] = []
    rollups: list[str] = []
    for (period, source), import_id in sorted(partitions.items()):
        for directory, out in (
            (layout.rows_dir(period, source, import_id), rows),
            (layout.rollup_dir(period, source, import_id), rollups),
        ):
            try:
                names = sorted(n for n in os.listdir(directory) if n.endswith(".parquet"))
            except FileNotFoundError:
                continue
            out.extend(str(Path(directory) / n) for n in names)
    return Files(tuple(rows), tuple(rollups))


def sql_for(query: CostQuery, files: Files, max_rows: int) -> tuple[str, list[Any]]:
    """The SQL that answers `query`, and its parameters."""
    on_rollup = query.on_rollup()
    chosen = files.rollups if on_rollup else files.rows
    source = "read_parquet([" + ", ".join(literal(f) for f in chosen) + "], union_by_name = true)"
    time_column = "day" if on_rollup else "ChargePeriodStart"
    metric = query.metric.rollup if on_rollup else query.metric.column
    currency = (
        ("BillingCurrency" if not on_rollup else "currency")
        if query.metric.money
        else ("consumed_unit" if on_rollup else "ConsumedUnit")
    )

    def column(dim: Any) -> str:
        return str(dim.rollup if on_rollup else dim.sql)

    params: list[Any] = [query.start_us, query.end_us]
    where = [
        f"{time_column} >= make_timestamptz($1::BIGINT)",
        f"{time_column} < make_timestamptz($2::BIGINT)",
    ]
    for condition in query.filters:
        value = f"coalesce({column(condition.dimension)}, '')"
        if condition.operator == "IN":
            holders = []
            for v in condition.values:
                params.append(v)
                holders.append(f"${len(params)}")
            test = f"{value} IN ({', '.join(holders)})"
        else:
            params.append(condition.values[0])
            test = (
                f"{value} = ${len(params)}"
                if condition.operator == "EQUALS"
                else f"starts_with({value}, ${len(params)})"
            )
        where.append(f"NOT ({test})" if condition.negate else test)
    bucket = (
        f"date_trunc({literal(_BUCKETS[query.granularity])}, {time_column})"
        if query.granularity
        else "NULL::TIMESTAMPTZ"
    )
    dims = [f"coalesce(CAST({column(d)} AS VARCHAR), '') AS d{i}" for i, d in enumerate(query.group_by)]
    names = [f"d{i}" for i in range(len(query.group_by))]
    keys = ", ".join([*names, "cur"])
    base = (
        f"SELECT {bucket} AS bucket, {', '.join([*dims, ''])} coalesce({currency}, '') AS cur, {metric} AS m "
        f"FROM {source} WHERE {' AND '.join(where)}"
    )
    grouped = f"SELECT bucket, {keys}, sum(m) AS amount FROM base GROUP BY ALL"
    if query.top_n:
        ranked = (
            f"SELECT {keys}, row_number() OVER (PARTITION BY cur ORDER BY sum(amount) DESC, {', '.join(names)}) AS rn "
            f"FROM grouped GROUP BY {keys}"
        )
        kept = [
            f"CASE WHEN r.rn <= {int(query.top_n)} THEN g.{n} ELSE {literal(OTHER)} END AS {n}" for n in names
        ]
        final = (
            f"SELECT g.bucket, {', '.join(kept)}, g.cur, sum(g.amount) AS amount, r.rn > {int(query.top_n)} AS other "
            f"FROM grouped g JOIN ranked r USING ({keys}) GROUP BY ALL"
        )
        sql = f"WITH base AS ({base}), grouped AS ({grouped}), ranked AS ({ranked}) {final}"
    else:
        sql = f"WITH base AS ({base}), grouped AS ({grouped}) SELECT *, false AS other FROM grouped"
    order = ", ".join(["bucket NULLS FIRST", "other", "amount DESC", *names, "cur"])
    return f"SELECT * FROM ({sql}) ORDER BY {order} LIMIT {max_rows + 1}", params


class DuckDBEngine:
    """DuckDB over the files, in worker threads (DuckDB releases the GIL while it runs)."""

    def __init__(self, duck: DuckSettings) -> None:
        self._db = connect(duck)

    async def run(self, query: CostQuery, files: Files, max_rows: int) -> list[ResultRow]:
        chosen = files.rollups if query.on_rollup() else files.rows
        if not chosen:
            return []
        sql, params = sql_for(query, files, max_rows)
        rows = await asyncio.to_thread(self._execute, sql, params)
        if len(rows) > max_rows:
            raise InvalidArgument.for_field(
                "group_by",
                f"the answer has more than {max_rows} rows: use top_n, a coarser granularity, fewer "
                "dimensions or a shorter range",
                reason="ANSWER_TOO_LARGE",
            )
        width = len(query.group_by)
        return [
            ResultRow(
                dimensions=tuple(row[1 : 1 + width]),
                bucket_us=_micros(row[0]),
                currency=row[1 + width],
                amount=Decimal(row[2 + width] or 0),
                other=bool(row[3 + width]),
            )
            for row in rows
        ]

    def _execute(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._db.cursor() as cursor:
            rows: list[tuple[Any, ...]] = cursor.execute(sql, params).fetchall()
            return rows

    def close(self) -> None:
        self._db.close()


def _micros(value: Any) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1_000_000)

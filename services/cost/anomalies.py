"""Anomaly monitors and the anomalies they find (kept in Redis), and their evaluation.

A monitor watches each value of one dimension (or the total) of the spend its filters select.
It is evaluated when it is created and after every import: each value's daily series (the
last 90 days) goes through `anomaly_detection.detect`; a day found anomalous becomes an
Anomaly once (found again later, it keeps its record and its feedback). Alert thresholds in
money and percent decide only whether an anomaly is notified (stream and webhooks), never
whether it is detected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from services.cost import anomaly_detection
from services.cost.cost_queries import CostQueries
from services.cost.daily_spend import Series, daily
from services.cost.dimensions import DEFAULT_METRIC, DIMENSIONS, ROLLUP_DIMENSIONS, dimension
from services.cost.importer import money
from services.cost.query import DAY_US, Condition, CostQuery
from services.runtime.errors import AlreadyExists, NotFound
from services.runtime.notifications import Notifier, Webhook
from services.runtime.redis_client import DurableWriter, Redis

MONITORS = "devmesh:cost:monitors"  # hash: id -> JSON
WINDOW_DAYS = 90
MAX_ANOMALIES = 1000  # per monitor; the oldest days go first
ANOMALY_DETECTED = "ANOMALY_DETECTED"


def anomalies_key(monitor: str) -> str:
    return f"devmesh:cost:anomalies:{monitor}"


def conditions_json(filters: tuple[Condition, ...]) -> list[list[Any]]:
    return [[c.dimension.name, c.operator, list(c.values), c.negate] for c in filters]


def conditions_from(data: list[list[Any]]) -> tuple[Condition, ...]:
    return tuple(Condition(dimension(d, "filters"), o, tuple(v), bool(n)) for d, o, v, n in data)


@dataclass
class Monitor:
    id: str
    dimension: str
    filters: list[list[Any]]
    z_threshold: float
    min_daily_cost: str
    alert_threshold_amount: str
    alert_threshold_percent: float
    webhook_urls: list[str]
    webhook_secret: str
    create_us: int
    history_days: int = 0
    evaluate_us: int = 0

    def conditions(self) -> tuple[Condition, ...]:
        return conditions_from(self.filters)

    def passes_gates(self, impact: Decimal, percent: float) -> bool:
        if self.alert_threshold_amount and impact < Decimal(self.alert_threshold_amount):
            return False
        return not (self.alert_threshold_percent and percent < self.alert_threshold_percent)


@dataclass
class AnomalyRecord:
    id: str
    monitor: str
    dimension_value: str
    currency: str
    day_us: int
    expected: str
    actual: str
    impact: str
    impact_percent: float
    z_score: float
    root_causes: list[dict[str, Any]] = field(default_factory=list)
    notified: bool = False
    feedback: str = ""
    create_us: int = 0


class Anomalies:
    def __init__(
        self, queries: CostQueries, redis: Redis, durable: DurableWriter, notifier: Notifier
    ) -> None:
        self.queries = queries
        self.redis = redis
        self.durable = durable
        self.notifier = notifier
        self._lock = asyncio.Lock()

    async def create(self, monitor: Monitor) -> Monitor:
        created = await self.redis.hsetnx(MONITORS, monitor.id, json.dumps(asdict(monitor)))
        if not created:
            raise AlreadyExists(
                f"anomaly monitor {monitor.id!r} already exists",
                resource_type="cost.devmesh.io/AnomalyMonitor",
                resource_name=f"anomalyMonitors/{monitor.id}",
            )
        await self.durable.confirm()
        return await self.evaluate(monitor)

    async def get(self, monitor_id: str) -> Monitor:
        raw = await self.redis.hget(MONITORS, monitor_id)
        if raw is None:
            raise NotFound(
                f"anomaly monitor {monitor_id!r} does not exist",
                resource_type="cost.devmesh.io/AnomalyMonitor",
                resource_name=f"anomalyMonitors/{monitor_id}",
            )
        return Monitor(**json.loads(raw))

    async def monitors(self) -> list[Monitor]:
        found = await self.redis.hgetall(MONITORS)
        return sorted((Monitor(**json.loads(v)) for v in found.values()), key=lambda m: m.id)

    async def delete(self, monitor_id: str) -> None:
        await self.get(monitor_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(MONITORS, monitor_id)
            pipe.delete(anomalies_key(monitor_id))
            await pipe.execute()
        await self.durable.confirm()

    async def anomalies(self, monitor_id: str | None) -> list[AnomalyRecord]:
        """Newest day first (then by monitor and id)."""
        ids = [monitor_id] if monitor_id else [m.id for m in await self.monitors()]
        found: list[AnomalyRecord] = []
        for mid in ids:
            found += [
                AnomalyRecord(**json.loads(v))
                for v in (await self.redis.hgetall(anomalies_key(mid))).values()
            ]
        return sorted(found, key=lambda a: (-a.day_us, a.monitor, a.id))

    async def anomaly(self, monitor_id: str, anomaly_id: str) -> AnomalyRecord:
        raw = await self.redis.hget(anomalies_key(monitor_id), anomaly_id)
        if raw is None:
            raise NotFound(
                f"anomaly {anomaly_id!r} of monitor {monitor_id!r} does not exist",
                resource_type="cost.devmesh.io/Anomaly",
                resource_name=f"anomalyMonitors/{monitor_id}/anomalies/{anomaly_id}",
            )
        return AnomalyRecord(**json.loads(raw))

    async def set_feedback(self, monitor_id: str, anomaly_id: str, feedback: str) -> AnomalyRecord:
        record = await self.anomaly(monitor_id, anomaly_id)
        record.feedback = feedback
        await self.redis.hset(anomalies_key(monitor_id), anomaly_id, json.dumps(asdict(record)))
        await self.durable.confirm()
        return record

    async def evaluate_all(self) -> None:
        for monitor in await self.monitors():
            await self.evaluate(monitor)

    async def evaluate(self, monitor: Monitor) -> Monitor:
        """Look at the monitor's spend; store (and notify) what it finds for the first time."""
        async with self._lock:
            group = (DIMENSIONS[monitor.dimension],) if monitor.dimension in DIMENSIONS else ()
            if monitor.dimension.startswith("tag:"):
                group = (dimension(monitor.dimension, "dimension"),)
            series = await daily(
                self.queries,
                group_by=group,
                filters=monitor.conditions(),
                metric=DEFAULT_METRIC,
                end_us=None,
                days=WINDOW_DAYS,
            )
            known = await self.redis.hkeys(anomalies_key(monitor.id))
            seen = {k.decode() for k in known}
            for each in series:
                await self._evaluate_series(monitor, each, seen, bool(group))
            monitor.history_days = max((len(s.values) for s in series), default=0)
            monitor.evaluate_us = time.time_ns() // 1000
            if await self.redis.hexists(MONITORS, monitor.id):
                await self.redis.hset(MONITORS, monitor.id, json.dumps(asdict(monitor)))
            await self._prune(monitor.id)
            await self.durable.confirm()
            return monitor

    async def _evaluate_series(self, monitor: Monitor, series: Series, seen: set[str], grouped: bool) -> None:
        value = series.key[0] if grouped else ""
        currency = series.key[-1]
        findings = await asyncio.to_thread(
            anomaly_detection.detect,
            series.values,
            z_threshold=monitor.z_threshold or anomaly_detection.DEFAULT_Z,
            min_daily_cost=float(monitor.min_daily_cost or 1),
        )
        digest = hashlib.sha256(f"{value}|{currency}".encode()).hexdigest()[:10]
        new = []
        for finding in findings:
            day = series.day(finding.index)
            anomaly_id = f"{time.strftime('%Y%m%d', time.gmtime(day / 1e6))}-{digest}"
            if anomaly_id not in seen:
                new.append((finding, day, anomaly_id))
        if not new:
            return
        # The breakdowns root causes read, queried once for the series' new findings: a query
        # per dimension and finding made a monitor that finds many outlast the edge's 15 s.
        window = (new[0][1] - 7 * DAY_US, new[-1][1] + DAY_US)
        breakdowns = await self._breakdowns(monitor, value, currency, window)
        for finding, day, anomaly_id in new:
            impact = Decimal(str(round(finding.impact, 10)))
            record = AnomalyRecord(
                id=anomaly_id,
                monitor=monitor.id,
                dimension_value=value,
                currency=currency,
                day_us=day,
                expected=money(Decimal(str(round(finding.expected, 10)))),
                actual=money(Decimal(str(round(finding.actual, 10)))),
                impact=money(impact),
                impact_percent=round(finding.impact_percent, 2),
                z_score=round(finding.z_score, 3),
                root_causes=self._root_causes(breakdowns, day, finding.impact),
                create_us=time.time_ns() // 1000,
            )
            record.notified = monitor.passes_gates(impact, record.impact_percent)
            await self.redis.hset(anomalies_key(monitor.id), anomaly_id, json.dumps(asdict(record)))
            seen.add(anomaly_id)
            if record.notified:
                await self.notifier.emit(
                    f"anomaly:{monitor.id}:{anomaly_id}",
                    ANOMALY_DETECTED,
                    {
                        "resource": f"anomalyMonitors/{monitor.id}/anomalies/{anomaly_id}",
                        "amount": record.impact,
                        "currency": currency,
                        "dimension_value": value,
                        "day_us": day,
                    },
                    [Webhook(url, monitor.webhook_secret) for url in monitor.webhook_urls],
                )

    async def _breakdowns(
        self, monitor: Monitor, value: str, currency: str, window: tuple[int, int]
    ) -> dict[str, list[tuple[int, str, float]]]:
        """The monitored value's daily spend by each other dimension over `window`:
        dimension -> (day, the dimension's value, amount)."""
        filters = [*monitor.conditions(), Condition(DIMENSIONS["currency"], "EQUALS", (currency,))]
        if monitor.dimension:
            filters.append(Condition(dimension(monitor.dimension, "dimension"), "EQUALS", (value,)))
        found: dict[str, list[tuple[int, str, float]]] = {}
        for candidate in ROLLUP_DIMENSIONS:
            if candidate.name in (monitor.dimension, "currency"):
                continue
            query = CostQuery(
                group_by=(candidate,),
                filters=tuple(filters),
                start_us=window[0],
                end_us=window[1],
                granularity="DAY",
            )
            found[candidate.name] = [
                (row.bucket_us or 0, row.dimensions[0], float(row.amount))
                for row in (await self.queries.answer(query)).rows
            ]
        return found

    def _root_causes(
        self, breakdowns: dict[str, list[tuple[int, str, float]]], day: int, impact: float
    ) -> list[dict[str, Any]]:
        """The dimension values whose spend rose most on the day, among the monitored value's."""
        on_day: dict[tuple[str, str], float] = {}
        before: dict[tuple[str, str], list[float]] = {}
        for name, rows in breakdowns.items():
            for bucket, candidate_value, amount in rows:
                key = (name, candidate_value)
                if bucket == day:
                    on_day[key] = amount
                elif day - 7 * DAY_US <= bucket < day:
                    before.setdefault(key, []).append(amount)
        for key, history in before.items():
            before[key] = history + [0.0] * (7 - len(history))  # days without spend count as 0
        causes = anomaly_detection.root_causes(on_day, before, impact)
        return [
            {
                "dimension": c.dimension,
                "value": c.value,
                "contribution": money(Decimal(str(round(c.delta, 10)))),
                "share": round(c.share, 4),
            }
            for c in causes
        ]

    async def _prune(self, monitor_id: str) -> None:
        ids = await self.redis.hkeys(anomalies_key(monitor_id))
        if len(ids) > MAX_ANOMALIES:
            oldest = sorted(i.decode() for i in ids)[: len(ids) - MAX_ANOMALIES]
            await self.redis.hdel(anomalies_key(monitor_id), *oldest)

"""CostService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import empty_pb2
from grpc import aio

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from services.cost import query as cost_query
from services.cost import rightsizing
from services.cost.anomalies import Anomalies, AnomalyRecord, Monitor, conditions_json
from services.cost.budgets import ACTUAL, FORECASTED, MAX_THRESHOLDS, BudgetRecord, Budgets, Status
from services.cost.catalog import Catalog, ImportRecord
from services.cost.cost_forecasts import project
from services.cost.cost_queries import CostQueries
from services.cost.dimensions import DEFAULT_METRIC, METRICS, dimension
from services.cost.importer import Importer, ImportRequest, money
from services.cost.query_engine import UNIT
from services.cost.recommendations import CLAIMED, DISMISSED, FAILED, SUCCEEDED, Item, Recommendations
from services.cost.rightsizing import Prices
from services.cost.settings import CostSettings
from services.cost.utilization_store import (
    MAX_SAMPLES_PER_MESSAGE,
    Sample,
    UtilizationStore,
    check_sample,
    parse_price,
)
from services.runtime import pagination, protos
from services.runtime.errors import InvalidArgument
from services.runtime.notifications import Notifier, check_url
from services.runtime.request_context import note_audit, principal_name
from services.runtime.resource_names import AIP_ID, IdRule, ResourceName

IMPORT = ResourceName("imports/{import}", {"import": IdRule(r"[0-9a-f]{32}", "32 hexadecimal digits")})
# Kubernetes names: a workload `namespace.name` (DNS subdomain characters), a container a DNS label.
WORKLOAD_ID = IdRule(
    r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", "a Kubernetes name: lowercase letters, digits, '.' and '-'"
)
CONTAINER_ID = IdRule(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a container name (an RFC 1123 label)")
WORKLOAD = ResourceName("workloads/{workload}", {"workload": WORKLOAD_ID}, wildcards=frozenset({"workload"}))
RECOMMENDATION = ResourceName(
    "workloads/{workload}/recommendations/{recommendation}",
    {"workload": WORKLOAD_ID, "recommendation": CONTAINER_ID},
)
MONITOR = ResourceName("anomalyMonitors/{anomaly_monitor}", wildcards=frozenset({"anomaly_monitor"}))
ANOMALY = ResourceName(
    "anomalyMonitors/{anomaly_monitor}/anomalies/{anomaly}",
    {"anomaly": IdRule(r"[0-9]{8}-[0-9a-f]{10}", "YYYYMMDD-<10 hexadecimal digits>")},
)
BUDGET = ResourceName("budgets/{budget}")
_FEEDBACK = {"": pb.Anomaly.FEEDBACK_UNSPECIFIED, "ACKNOWLEDGED": pb.Anomaly.FEEDBACK_ACKNOWLEDGED,
             "NOT_AN_ANOMALY": pb.Anomaly.FEEDBACK_NOT_AN_ANOMALY}  # fmt: skip
_PERIODS = {pb.Budget.PERIOD_UNSPECIFIED: "MONTH", pb.Budget.PERIOD_MONTH: "MONTH",
            pb.Budget.PERIOD_QUARTER: "QUARTER", pb.Budget.PERIOD_YEAR: "YEAR"}  # fmt: skip
_BASES = {pb.BudgetThreshold.BASIS_UNSPECIFIED: ACTUAL, pb.BudgetThreshold.BASIS_ACTUAL: ACTUAL,
          pb.BudgetThreshold.BASIS_FORECASTED: FORECASTED}  # fmt: skip
_EVENT_TYPES = {"BUDGET_THRESHOLD_CROSSED": pb.CostEvent.TYPE_BUDGET_THRESHOLD_CROSSED,
                "ANOMALY_DETECTED": pb.CostEvent.TYPE_ANOMALY_DETECTED}  # fmt: skip
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_WEBHOOKS = 5
_REC_STATES = {
    "ACTIVE": pb.Recommendation.STATE_ACTIVE,
    "CLAIMED": pb.Recommendation.STATE_CLAIMED,
    "SUCCEEDED": pb.Recommendation.STATE_SUCCEEDED,
    "FAILED": pb.Recommendation.STATE_FAILED,
    "DISMISSED": pb.Recommendation.STATE_DISMISSED,
}
_FORMATS = {
    pb.DATA_FORMAT_UNSPECIFIED: "",
    pb.DATA_FORMAT_CSV: "CSV",
    pb.DATA_FORMAT_CSV_GZIP: "CSV_GZIP",
    pb.DATA_FORMAT_PARQUET: "PARQUET",
}
_FORMAT_ENUMS = {name: value for value, name in _FORMATS.items() if name}
_GRANULARITIES = {
    pb.GRANULARITY_UNSPECIFIED: "",
    pb.GRANULARITY_HOUR: "HOUR",
    pb.GRANULARITY_DAY: "DAY",
    pb.GRANULARITY_WEEK: "WEEK",
    pb.GRANULARITY_MONTH: "MONTH",
}
_OPERATORS = {
    pb.Filter.OPERATOR_UNSPECIFIED: "EQUALS",
    pb.Filter.OPERATOR_EQUALS: "EQUALS",
    pb.Filter.OPERATOR_IN: "IN",
    pb.Filter.OPERATOR_PREFIX: "PREFIX",
}
DEFAULT_QUERY_PAGE = 1000
MAX_QUERY_PAGE = 10_000


def _enum(table: Mapping[Any, Any], value: int, field: str) -> Any:
    if value not in table:
        raise InvalidArgument.for_field(field, f"{value} is not a known value")
    return table[value]


def metric_of(value: int, field: str = "metric") -> Any:
    if value == pb.METRIC_UNSPECIFIED:
        return DEFAULT_METRIC
    name = pb.Metric.Name(value).removeprefix("METRIC_") if value in pb.Metric.values() else ""  # type: ignore[arg-type]
    if name not in METRICS:
        raise InvalidArgument.for_field(field, f"{value} is not a known metric")
    return METRICS[name]


def filters_of(filters: Any, field: str) -> tuple[cost_query.Condition, ...]:
    raw = [
        (f.dimension, _enum(_OPERATORS, f.operator, f"{field}[{i}].operator"), list(f.values), f.negate)
        for i, f in enumerate(filters)
    ]
    return cost_query.conditions(raw, field)


def recommendation_proto(item: Item) -> pb.Recommendation:
    sizing, usage = item.sizing, item.sizing.usage
    return pb.Recommendation(
        name=RECOMMENDATION.format(item.workload, usage.container),
        container=usage.container,
        current_cpu_request_millicores=usage.cpu_request,
        recommended_cpu_request_millicores=sizing.cpu,
        current_memory_request_bytes=usage.memory_request,
        recommended_memory_request_bytes=sizing.memory,
        evidence=pb.RecommendationEvidence(
            cpu_percentile=rightsizing.CPU_PERCENTILE,
            cpu_at_percentile_millicores=usage.cpu_at_percentile,
            memory_peak_bytes=usage.memory_peak,
            target_utilization=sizing.target,
            window_start_time=protos.timestamp(usage.window_start_us),
            window_end_time=protos.timestamp(usage.window_end_us),
            samples=usage.samples,
        ),
        monthly_savings=pb.Money(currency=item.currency, amount=money(sizing.savings)),
        savings_percent=round(sizing.savings_percent, 2),
        state=_REC_STATES[item.state],
        state_reason=item.reason,
        update_time=protos.timestamp(item.update_us),
        etag=item.etag,
    )


def sample_of(message: pb.UtilizationSample, field: str) -> Sample:
    CONTAINER_ID.check(message.container, f"{field}.container")
    sample = Sample(
        container=message.container,
        time_us=protos.microseconds(message.time, f"{field}.time") if message.HasField("time") else 0,
        cpu=message.cpu_millicores,
        memory=message.memory_bytes,
        cpu_request=message.cpu_request_millicores,
        memory_request=message.memory_request_bytes,
        cpu_limit=message.cpu_limit_millicores,
        memory_limit=message.memory_limit_bytes,
    )
    check_sample(sample, field)
    return sample


def decimal_of(text: str, field: str, *, positive: bool = False) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument.for_field(field, f"{text[:40]!r} is not a decimal number") from None
    if not value.is_finite() or value < 0 or (positive and value == 0) or value > Decimal("1e18"):
        raise InvalidArgument.for_field(
            field, "must be a decimal number above 0" if positive else "must be a decimal number, at least 0"
        )
    return value


def webhooks_of(urls: Any, field: str) -> list[str]:
    if len(urls) > MAX_WEBHOOKS:
        raise InvalidArgument.for_field(field, f"at most {MAX_WEBHOOKS} webhooks")
    for index, url in enumerate(urls):
        problem = check_url(url)
        if problem:
            raise InvalidArgument.for_field(f"{field}[{index}]", problem)
    return list(urls)


def secret_of(text: str, field: str) -> str:
    if len(text) > 256:
        raise InvalidArgument.for_field(field, "at most 256 characters")
    return text


def money_proto(amount: Decimal | str, currency: str) -> pb.Money:
    return pb.Money(currency=currency, amount=money(Decimal(amount)))


def monitor_proto(monitor: Monitor) -> pb.AnomalyMonitor:
    return pb.AnomalyMonitor(
        name=MONITOR.format(monitor.id),
        dimension=monitor.dimension,
        filters=[
            pb.Filter(dimension=d, operator=pb.Filter.Operator.Value(f"OPERATOR_{o}"), values=v, negate=n)
            for d, o, v, n in monitor.filters
        ],
        z_threshold=monitor.z_threshold,
        min_daily_cost=monitor.min_daily_cost,
        alert_threshold_amount=monitor.alert_threshold_amount,
        alert_threshold_percent=monitor.alert_threshold_percent,
        webhook_urls=monitor.webhook_urls,
        create_time=protos.timestamp(monitor.create_us),
        history_days=monitor.history_days,
        evaluate_time=protos.optional_timestamp(monitor.evaluate_us),
    )


def anomaly_proto(record: AnomalyRecord) -> pb.Anomaly:
    return pb.Anomaly(
        name=ANOMALY.format(record.monitor, record.id),
        dimension_value=record.dimension_value,
        day=protos.timestamp(record.day_us),
        expected=pb.Money(currency=record.currency, amount=record.expected),
        actual=pb.Money(currency=record.currency, amount=record.actual),
        impact=pb.Money(currency=record.currency, amount=record.impact),
        impact_percent=record.impact_percent,
        z_score=record.z_score,
        root_causes=[pb.RootCause(**cause) for cause in record.root_causes],
        notified=record.notified,
        feedback=_FEEDBACK[record.feedback],
        create_time=protos.timestamp(record.create_us),
    )


def budget_proto(record: BudgetRecord, status: Status | None) -> pb.Budget:
    message = pb.Budget(
        name=BUDGET.format(record.id),
        amount=pb.Money(currency=record.currency, amount=record.amount),
        period=pb.Budget.Period.Value(f"PERIOD_{record.period}"),
        filters=[
            pb.Filter(dimension=d, operator=pb.Filter.Operator.Value(f"OPERATOR_{o}"), values=v, negate=n)
            for d, o, v, n in record.filters
        ],
        thresholds=[
            pb.BudgetThreshold(percent=p, basis=pb.BudgetThreshold.Basis.Value(f"BASIS_{b}"))
            for p, b in record.thresholds
        ],
        webhook_urls=record.webhook_urls,
        create_time=protos.timestamp(record.create_us),
        etag=record.etag,
    )
    if status is not None:
        message.actual_spend.CopyFrom(money_proto(status.actual, record.currency))
        if status.forecasted is not None:
            message.forecasted_spend.CopyFrom(money_proto(status.forecasted, record.currency))
        message.period_start_time.CopyFrom(protos.timestamp(status.period_start_us))
    return message


def import_proto(record: ImportRecord) -> pb.Import:
    superseded = sorted(set(record.superseded_periods))
    state = (
        pb.Import.STATE_SUPERSEDED
        if record.billing_periods and set(superseded) >= set(record.billing_periods)
        else pb.Import.STATE_ACTIVE
    )
    return pb.Import(
        name=IMPORT.format(record.id),
        source=record.source,
        billing_periods=record.billing_periods,
        superseded_billing_periods=superseded,
        state=state,
        format=_FORMAT_ENUMS.get(record.format, pb.DATA_FORMAT_UNSPECIFIED),
        focus_version=record.focus_version,
        rows_read=record.rows_read,
        rows_stored=record.rows_stored,
        rows_rejected=record.rows_rejected,
        rejections=[pb.ReasonCount(reason=r, count=c) for r, c in sorted(record.rejections.items())],
        rejected_samples=[pb.RowIssue(**s) for s in record.rejected_samples],
        warnings=[pb.ReasonCount(reason=r, count=c) for r, c in sorted(record.warnings.items())],
        warning_samples=[pb.RowIssue(**s) for s in record.warning_samples],
        unknown_columns=record.unknown_columns,
        effective_cost_totals=[
            pb.Money(currency=c, amount=a) for c, a in record.effective_cost_totals.items()
        ],
        bytes_received=record.bytes_received,
        creator=record.creator,
        create_time=protos.timestamp(record.create_us),
        complete_time=protos.timestamp(record.complete_us),
    )


class CostServicer(cost_pb2_grpc.CostServiceServicer):
    def __init__(
        self,
        settings: CostSettings,
        catalog: Catalog,
        importer: Importer,
        queries: CostQueries,
        utilization: UtilizationStore,
        recommendations: Recommendations,
        anomalies: Anomalies,
        budgets: Budgets,
        notifier: Notifier,
    ) -> None:
        self._anomalies = anomalies
        self._budgets = budgets
        self._notifier = notifier
        self._settings = settings
        self._catalog = catalog
        self._importer = importer
        self._queries = queries
        self._utilization = utilization
        self._recommendations = recommendations

    async def ImportCostData(
        self, request_iterator: AsyncIterator[pb.ImportCostDataRequest], context: aio.ServicerContext
    ) -> pb.Import:
        messages = request_iterator.__aiter__()
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument.for_field("source", "is required: the stream carried no message") from None
        request = self._importer.check(
            ImportRequest(first.source, list(first.billing_periods), _enum(_FORMATS, first.format, "format"))
        )
        note_audit(resource=f"sources/{request.source}")

        async def chunks() -> AsyncIterator[bytes]:
            yield first.body.data
            async for message in messages:
                yield message.body.data

        record = await self._importer.run(request, chunks(), principal_name())
        note_audit(resource=IMPORT.format(record.id), rows_stored=record.rows_stored)
        return import_proto(record)

    async def GetImport(self, request: pb.GetImportRequest, context: aio.ServicerContext) -> pb.Import:
        (import_id,) = IMPORT.parse(request.name)
        return import_proto(await self._catalog.get(import_id))

    async def ListImports(
        self, request: pb.ListImportsRequest, context: aio.ServicerContext
    ) -> pb.ListImportsResponse:
        size = pagination.page_size(request.page_size)
        if request.source:
            IdRule(r"[a-z][a-z0-9-]{0,61}[a-z0-9]", "an AIP-122 id").check(request.source, "source")
        query = ("imports", request.source)
        cursor = pagination.decode_token(request.page_token, query)
        after = float(cursor) if cursor else None
        found = await self._catalog.newest(after, size + 1, request.source)
        more = len(found) > size
        page = found[:size]
        token = pagination.encode_token(str(page[-1].create_us), query) if more else ""
        return pb.ListImportsResponse(imports=[import_proto(r) for r in page], next_page_token=token)

    async def QueryCost(  # type: ignore[override]  # bytes: see the docstring
        self, request: pb.QueryCostRequest, context: aio.ServicerContext
    ) -> pb.QueryCostResponse | bytes:
        """The page asked for; a cached page is returned as the bytes it was cached as (the
        service registers QueryCost with a serializer that sends bytes unchanged)."""
        query = cost_query.build(
            group_by=list(request.group_by),
            filters=filters_of(request.filters, "filters"),
            start_us=protos.microseconds(request.start_time, "start_time")
            if request.HasField("start_time")
            else 0,
            end_us=protos.microseconds(request.end_time, "end_time") if request.HasField("end_time") else 0,
            granularity=_enum(_GRANULARITIES, request.granularity, "granularity"),
            metric=metric_of(request.metric),
            top_n=request.top_n,
            max_range_days=self._settings.cost_max_range_days,
        )
        size = pagination.page_size(request.page_size, default=DEFAULT_QUERY_PAGE, maximum=MAX_QUERY_PAGE)
        fingerprint = ("costs", query.key())
        cursor = pagination.decode_token(request.page_token, fingerprint)
        at_version, offset = None, 0
        if cursor:
            version_text, _, offset_text = cursor.partition(":")
            at_version, offset = int(version_text), int(offset_text)
        page_key = hashlib.sha256(f"{query.key()}|{size}|{request.page_token}".encode()).hexdigest()
        current = await self._queries.version()
        if at_version in (None, current):
            cached = await self._queries.cached_page(current, page_key)
            if cached is not None:
                return cached
        answer = await self._queries.answer(query, at_version)
        page = answer.rows[offset : offset + size]
        end = offset + len(page)
        token = (
            pagination.encode_token(f"{answer.version}:{end}", fingerprint) if end < len(answer.rows) else ""
        )
        names = [d.name for d in query.group_by]
        rows = []
        for row in page:
            dims = dict(zip(names, row.dimensions, strict=True))
            currency = row.currency
            if not query.metric.money:
                dims[UNIT], currency = row.currency, ""
            rows.append(
                pb.CostRow(
                    dimensions=dims,
                    period_start=protos.timestamp(row.bucket_us) if row.bucket_us is not None else None,
                    amount=money(row.amount),
                    currency=currency,
                    other=row.other,
                )
            )
        totals = [
            pb.Money(currency=c if query.metric.money else "", amount=money(a))
            for c, a in sorted(answer.totals().items())
        ]
        response = pb.QueryCostResponse(
            rows=rows, totals=totals, next_page_token=token, data_version=answer.version
        )
        if answer.version == current:
            await self._queries.keep_page(current, page_key, response.SerializeToString())
        return response

    async def ImportUtilization(
        self, request_iterator: AsyncIterator[pb.ImportUtilizationRequest], context: aio.ServicerContext
    ) -> pb.ImportUtilizationResponse:
        workload = ""
        stored = 0
        async for message in request_iterator:
            if not workload:
                if not message.workload:
                    raise InvalidArgument.for_field("workload", "is required in the first message")
                (workload,) = WORKLOAD.parse(message.workload, "workload")
                if workload == "-":
                    raise InvalidArgument.for_field("workload", "name one workload, not `-`")
                note_audit(resource=WORKLOAD.format(workload))
                cpu = parse_price(message.cpu_millicore_hour_cost, "cpu_millicore_hour_cost")
                memory = parse_price(message.memory_gib_hour_cost, "memory_gib_hour_cost")
                currency = message.currency or "USD"
                if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
                    raise InvalidArgument.for_field("currency", "is an ISO 4217 code (USD)")
                if cpu is not None or memory is not None or message.currency:
                    default = rightsizing.DEFAULT_PRICES
                    await self._utilization.set_prices(
                        workload,
                        Prices(
                            cpu if cpu is not None else default.cpu_millicore_hour,
                            memory if memory is not None else default.memory_gib_hour,
                            currency,
                        ),
                    )
            if len(message.samples) > MAX_SAMPLES_PER_MESSAGE:
                raise InvalidArgument.for_field("samples", f"at most {MAX_SAMPLES_PER_MESSAGE} per message")
            batch = [sample_of(s, f"samples[{i}]") for i, s in enumerate(message.samples)]
            await self._utilization.add(workload, batch)
            stored += len(batch)
        if not workload:
            raise InvalidArgument.for_field("workload", "is required: the stream carried no message")
        containers = await asyncio.to_thread(self._utilization.containers, workload)
        return pb.ImportUtilizationResponse(
            workload=WORKLOAD.format(workload), samples_stored=stored, containers=containers
        )

    async def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: aio.ServicerContext
    ) -> pb.ListRecommendationsResponse:
        (workload,) = WORKLOAD.parse(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        query = ("recommendations", workload, request.profile)
        offset = int(pagination.decode_token(request.page_token, query) or 0)
        items = await self._recommendations.list(None if workload == "-" else workload, request.profile)
        page = items[offset : offset + size]
        token = pagination.encode_token(str(offset + size), query) if offset + size < len(items) else ""
        return pb.ListRecommendationsResponse(
            recommendations=[recommendation_proto(i) for i in page], next_page_token=token
        )

    async def _mark(self, request: Any, state: str) -> pb.Recommendation:
        workload, container = RECOMMENDATION.parse(request.name)
        item = await self._recommendations.mark(workload, container, state, request.etag, request.reason)
        return recommendation_proto(item)

    async def MarkRecommendationClaimed(
        self, request: pb.MarkRecommendationClaimedRequest, context: aio.ServicerContext
    ) -> pb.Recommendation:
        return await self._mark(request, CLAIMED)

    async def MarkRecommendationSucceeded(
        self, request: pb.MarkRecommendationSucceededRequest, context: aio.ServicerContext
    ) -> pb.Recommendation:
        return await self._mark(request, SUCCEEDED)

    async def MarkRecommendationFailed(
        self, request: pb.MarkRecommendationFailedRequest, context: aio.ServicerContext
    ) -> pb.Recommendation:
        return await self._mark(request, FAILED)

    async def MarkRecommendationDismissed(
        self, request: pb.MarkRecommendationDismissedRequest, context: aio.ServicerContext
    ) -> pb.Recommendation:
        return await self._mark(request, DISMISSED)

    async def ForecastCost(
        self, request: pb.ForecastCostRequest, context: aio.ServicerContext
    ) -> pb.ForecastCostResponse:
        end = (
            protos.microseconds(request.history_end_time, "history_end_time")
            if request.HasField("history_end_time")
            else None
        )
        if end is not None and not 0 < end < 253_402_300_800_000_000:  # before year 10000
            raise InvalidArgument.for_field("history_end_time", "is out of range")
        projection = await project(
            self._queries,
            filters=filters_of(request.filters, "filters"),
            metric=metric_of(request.metric),
            currency=request.currency[:8],
            horizon_days=request.horizon_days,
            level=request.prediction_interval_level,
            history_end_us=end,
        )
        result = projection.result
        points = [
            pb.ForecastPoint(
                day=protos.timestamp(projection.start_us + i * cost_query.DAY_US),
                amount=money(Decimal(str(round(float(result.mean[i]), 10)))),
                lower=money(Decimal(str(round(float(result.lower[i]), 10)))),
                upper=money(Decimal(str(round(float(result.upper[i]), 10)))),
            )
            for i in range(len(result.mean))
        ]
        answer = pb.ForecastCostResponse(
            points=points,
            currency=projection.currency,
            method=result.method,
            backtest_mape=0.0 if math.isnan(result.backtest_mape) else round(result.backtest_mape, 4),
            prediction_interval_level=result.level,
            history_days=projection.history_days,
            month_to_date=money(Decimal(str(round(projection.month_to_date, 10)))),
            forecast_start_time=protos.timestamp(projection.start_us),
        )
        if projection.month_end is not None:
            mean, low, high = (money(Decimal(str(round(v, 10)))) for v in projection.month_end)
            answer.month_end_projection, answer.month_end_lower, answer.month_end_upper = mean, low, high
        return answer

    def _monitor_of(self, monitor_id: str, message: pb.AnomalyMonitor) -> Monitor:
        if message.dimension:
            dimension(message.dimension, "anomaly_monitor.dimension")
        if not math.isfinite(message.z_threshold) or not 0 <= message.z_threshold <= 100:
            raise InvalidArgument.for_field("anomaly_monitor.z_threshold", "must be from 0 to 100")
        percent = message.alert_threshold_percent
        if not math.isfinite(percent) or not 0 <= percent <= 100_000:
            raise InvalidArgument.for_field(
                "anomaly_monitor.alert_threshold_percent", "must be from 0 to 100000"
            )
        for field in ("min_daily_cost", "alert_threshold_amount"):
            text = getattr(message, field)
            if text:
                decimal_of(text, f"anomaly_monitor.{field}")
        return Monitor(
            id=monitor_id,
            dimension=message.dimension,
            filters=conditions_json(filters_of(message.filters, "anomaly_monitor.filters")),
            z_threshold=message.z_threshold,
            min_daily_cost=message.min_daily_cost,
            alert_threshold_amount=message.alert_threshold_amount,
            alert_threshold_percent=percent,
            webhook_urls=webhooks_of(message.webhook_urls, "anomaly_monitor.webhook_urls"),
            webhook_secret=secret_of(message.webhook_secret, "anomaly_monitor.webhook_secret"),
            create_us=time.time_ns() // 1000,
        )

    async def CreateAnomalyMonitor(
        self, request: pb.CreateAnomalyMonitorRequest, context: aio.ServicerContext
    ) -> pb.AnomalyMonitor:
        AIP_ID.check(request.anomaly_monitor_id, "anomaly_monitor_id")
        note_audit(resource=MONITOR.format(request.anomaly_monitor_id))
        monitor = self._monitor_of(request.anomaly_monitor_id, request.anomaly_monitor)
        return monitor_proto(await self._anomalies.create(monitor))

    async def GetAnomalyMonitor(
        self, request: pb.GetAnomalyMonitorRequest, context: aio.ServicerContext
    ) -> pb.AnomalyMonitor:
        (monitor_id,) = MONITOR.parse(request.name)
        return monitor_proto(await self._anomalies.get(monitor_id))

    async def ListAnomalyMonitors(
        self, request: pb.ListAnomalyMonitorsRequest, context: aio.ServicerContext
    ) -> pb.ListAnomalyMonitorsResponse:
        size = pagination.page_size(request.page_size)
        query = ("monitors",)
        after = pagination.decode_token(request.page_token, query) or ""
        found = [m for m in await self._anomalies.monitors() if m.id > after]
        page = found[:size]
        token = pagination.encode_token(page[-1].id, query) if len(found) > size else ""
        return pb.ListAnomalyMonitorsResponse(
            anomaly_monitors=[monitor_proto(m) for m in page], next_page_token=token
        )

    async def DeleteAnomalyMonitor(
        self, request: pb.DeleteAnomalyMonitorRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        (monitor_id,) = MONITOR.parse(request.name)
        await self._anomalies.delete(monitor_id)
        return empty_pb2.Empty()

    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: aio.ServicerContext
    ) -> pb.ListAnomaliesResponse:
        (monitor_id,) = MONITOR.parse(request.parent, "parent")
        size = pagination.page_size(request.page_size)
        query = ("anomalies", monitor_id)
        offset = int(pagination.decode_token(request.page_token, query) or 0)
        if monitor_id != "-":
            await self._anomalies.get(monitor_id)
        found = await self._anomalies.anomalies(None if monitor_id == "-" else monitor_id)
        page = found[offset : offset + size]
        token = pagination.encode_token(str(offset + size), query) if offset + size < len(found) else ""
        return pb.ListAnomaliesResponse(anomalies=[anomaly_proto(a) for a in page], next_page_token=token)

    async def GetAnomaly(self, request: pb.GetAnomalyRequest, context: aio.ServicerContext) -> pb.Anomaly:
        monitor_id, anomaly_id = ANOMALY.parse(request.name)
        return anomaly_proto(await self._anomalies.anomaly(monitor_id, anomaly_id))

    async def SetAnomalyFeedback(
        self, request: pb.SetAnomalyFeedbackRequest, context: aio.ServicerContext
    ) -> pb.Anomaly:
        monitor_id, anomaly_id = ANOMALY.parse(request.name)
        names = {v: k for k, v in _FEEDBACK.items()}
        if request.feedback not in names or not names[request.feedback]:
            raise InvalidArgument.for_field("feedback", "say ACKNOWLEDGED or NOT_AN_ANOMALY")
        return anomaly_proto(
            await self._anomalies.set_feedback(monitor_id, anomaly_id, names[request.feedback])
        )

    def _budget_of(self, budget_id: str, message: pb.Budget, field: str) -> BudgetRecord:
        if not message.HasField("amount"):
            raise InvalidArgument.for_field(f"{field}.amount", "is required")
        amount = decimal_of(message.amount.amount, f"{field}.amount.amount", positive=True)
        currency = message.amount.currency
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise InvalidArgument.for_field(f"{field}.amount.currency", "is an ISO 4217 code (USD)")
        if len(message.thresholds) > MAX_THRESHOLDS:
            raise InvalidArgument.for_field(f"{field}.thresholds", f"at most {MAX_THRESHOLDS} thresholds")
        thresholds = []
        for index, threshold in enumerate(message.thresholds):
            if not math.isfinite(threshold.percent) or not 0 < threshold.percent <= 1000:
                raise InvalidArgument.for_field(
                    f"{field}.thresholds[{index}].percent", "must be above 0 and at most 1000"
                )
            thresholds.append(
                [threshold.percent, _enum(_BASES, threshold.basis, f"{field}.thresholds[{index}].basis")]
            )
        if len({(p, b) for p, b in thresholds}) != len(thresholds):
            raise InvalidArgument.for_field(f"{field}.thresholds", "names a threshold twice")
        return BudgetRecord(
            id=budget_id,
            amount=money(amount),
            currency=currency,
            period=_enum(_PERIODS, message.period, f"{field}.period"),
            filters=conditions_json(filters_of(message.filters, f"{field}.filters")),
            thresholds=thresholds,
            webhook_urls=webhooks_of(message.webhook_urls, f"{field}.webhook_urls"),
            webhook_secret=secret_of(message.webhook_secret, f"{field}.webhook_secret"),
            create_us=time.time_ns() // 1000,
        )

    async def CreateBudget(self, request: pb.CreateBudgetRequest, context: aio.ServicerContext) -> pb.Budget:
        AIP_ID.check(request.budget_id, "budget_id")
        note_audit(resource=BUDGET.format(request.budget_id))
        record = await self._budgets.create(self._budget_of(request.budget_id, request.budget, "budget"))
        return budget_proto(record, await self._budgets.status(record))

    async def GetBudget(self, request: pb.GetBudgetRequest, context: aio.ServicerContext) -> pb.Budget:
        (budget_id,) = BUDGET.parse(request.name)
        record = await self._budgets.get(budget_id)
        return budget_proto(record, await self._budgets.status(record))

    async def ListBudgets(
        self, request: pb.ListBudgetsRequest, context: aio.ServicerContext
    ) -> pb.ListBudgetsResponse:
        size = pagination.page_size(request.page_size)
        query = ("budgets",)
        after = pagination.decode_token(request.page_token, query) or ""
        found = [b for b in await self._budgets.all() if b.id > after]
        page = found[:size]
        token = pagination.encode_token(page[-1].id, query) if len(found) > size else ""
        return pb.ListBudgetsResponse(budgets=[budget_proto(b, None) for b in page], next_page_token=token)

    async def UpdateBudget(self, request: pb.UpdateBudgetRequest, context: aio.ServicerContext) -> pb.Budget:
        (budget_id,) = BUDGET.parse(request.budget.name, "budget.name")
        fields = ("amount", "period", "filters", "thresholds", "webhook_urls", "webhook_secret")
        paths = list(request.update_mask.paths) or list(fields)
        unknown = [p for p in paths if p not in fields]
        if unknown:
            raise InvalidArgument.for_field("update_mask", f"{unknown[0][:60]!r} cannot be updated")
        current = await self._budgets.get(budget_id)
        merged = pb.Budget()
        merged.CopyFrom(budget_proto(current, None))
        merged.webhook_secret = current.webhook_secret
        for path in paths:
            if path in ("filters", "thresholds", "webhook_urls"):
                getattr(merged, path)[:] = getattr(request.budget, path)
            elif path == "amount":
                merged.amount.CopyFrom(request.budget.amount)
            else:
                setattr(merged, path, getattr(request.budget, path))
        record = self._budget_of(budget_id, merged, "budget")
        record.create_us = current.create_us
        updated = await self._budgets.update(record, request.budget.etag)
        return budget_proto(updated, await self._budgets.status(updated))

    async def DeleteBudget(
        self, request: pb.DeleteBudgetRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        (budget_id,) = BUDGET.parse(request.name)
        await self._budgets.delete(budget_id, request.etag)
        return empty_pb2.Empty()

    async def WatchCostEvents(
        self, request: pb.WatchCostEventsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.CostEvent]:
        if request.after_id and not _STREAM_ID.fullmatch(request.after_id):
            raise InvalidArgument.for_field("after_id", "is not an event id (`<ms>-<n>`)")
        interval = self._settings.cost_watch_progress_interval
        events = self._notifier.follow(request.after_id, block_ms=max(10, int(interval * 1000)))
        last = request.after_id
        async with contextlib.aclosing(events):
            async for event_id, payload in _with_beats(events, interval):
                if event_id is None:
                    yield pb.CostEvent(id=last, type=pb.CostEvent.TYPE_PROGRESS)
                    continue
                last = event_id
                yield event_proto(event_id, payload)


async def _with_beats(
    events: AsyncIterator[tuple[str, dict[str, Any]]], interval: float
) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """`events`, with a (None, {}) beat when none came for `interval` seconds."""
    iterator = events.__aiter__()
    pending: asyncio.Task[tuple[str, dict[str, Any]]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None, {}
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()


def event_proto(event_id: str, payload: dict[str, Any]) -> pb.CostEvent:
    event = pb.CostEvent(
        id=event_id,
        type=_EVENT_TYPES.get(payload.get("type", ""), pb.CostEvent.TYPE_UNSPECIFIED),
        resource=payload.get("resource", ""),
        period=payload.get("period", ""),
        threshold_percent=float(payload.get("threshold_percent", 0)),
        amount=pb.Money(currency=payload.get("currency", ""), amount=payload.get("amount", "")),
    )
    basis = payload.get("basis")
    if basis:
        event.basis = pb.BudgetThreshold.Basis.Value(f"BASIS_{basis}")
    if payload.get("budget_amount"):
        event.budget_amount.CopyFrom(pb.Money(currency=payload["currency"], amount=payload["budget_amount"]))
    stamp = payload.get("time_us") or int(event_id.split("-")[0]) * 1000
    event.create_time.CopyFrom(protos.timestamp(int(stamp)))
    return event

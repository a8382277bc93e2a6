"""CostService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from grpc import aio

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from services.cost import query as cost_query
from services.cost import rightsizing
from services.cost.catalog import Catalog, ImportRecord
from services.cost.cost_queries import CostQueries
from services.cost.dimensions import DEFAULT_METRIC, METRICS
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
from services.runtime.request_context import note_audit, principal_name
from services.runtime.resource_names import IdRule, ResourceName

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
    ) -> None:
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

    async def QueryCost(
        self, request: pb.QueryCostRequest, context: aio.ServicerContext
    ) -> pb.QueryCostResponse:
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
        return pb.QueryCostResponse(
            rows=rows, totals=totals, next_page_token=token, data_version=answer.version
        )

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

"""The cost service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from devmesh.cost.v1 import cost_pb2, cost_pb2_grpc
from services.cost.after_imports import AfterImports
from services.cost.anomalies import Anomalies
from services.cost.budgets import Budgets
from services.cost.catalog import Catalog
from services.cost.cost_queries import CostQueries
from services.cost.duck import DuckSettings
from services.cost.importer import Importer, ImportLimits
from services.cost.layout import Layout
from services.cost.query_engine import DuckDBEngine
from services.cost.recommendations import Recommendations
from services.cost.servicer import CostServicer
from services.cost.settings import CostSettings
from services.cost.utilization_store import UtilizationStore
from services.runtime.identity import roles
from services.runtime.notifications import Notifier
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.settings import SettingsError
from services.runtime.spec import ServiceSpec

SERVICE = cost_pb2.DESCRIPTOR.services_by_name["CostService"].full_name
_READS = (
    "cost.imports.get",
    "cost.imports.list",
    "cost.costs.*",
    "cost.monitors.get",
    "cost.monitors.list",
    "cost.anomalies.get",
    "cost.anomalies.list",
    "cost.budgets.get",
    "cost.budgets.list",
    "cost.events.watch",
    "cost.recommendations.list",
)
NOT_BUILT: frozenset[str] = frozenset()


def _load_statistics() -> None:
    """Import statsmodels now: it takes seconds, which the service pays when it starts rather
    than its first forecast or monitor (inside the edge's timeout); `devmesh` and the other
    services, which read this spec, never pay it."""
    importlib.import_module("statsmodels.tsa.seasonal")
    importlib.import_module("statsmodels.tsa.holtwinters")


def build(runtime: Runtime, settings: CostSettings) -> ServiceBinding:
    _load_statistics()
    if not runtime.settings.data_dir:
        raise SettingsError("the cost service keeps its Parquet files on disk: set DEVMESH_DATA_DIR")
    layout = Layout(Path(runtime.settings.data_dir) / "cost")
    layout.create()
    duck = DuckSettings(settings.cost_duckdb_memory_mb, settings.cost_duckdb_threads, layout.tmp)
    catalog = Catalog(runtime.redis, runtime.durable)
    importer = Importer(
        catalog,
        layout,
        duck,
        ImportLimits(
            max_bytes=settings.cost_max_import_bytes,
            max_line_bytes=settings.cost_max_line_bytes,
            lease_ttl=settings.cost_lease_ttl,
            retire_grace=settings.cost_retire_grace,
            segment_bytes=settings.cost_import_segment_bytes,
        ),
    )
    engine = DuckDBEngine(duck)
    queries = CostQueries(
        catalog,
        layout,
        engine,
        runtime.redis,
        cache_ttl=settings.cost_cache_ttl,
        max_rows=settings.cost_max_answer_rows,
    )
    utilization = UtilizationStore(layout.root / "utilization", duck, runtime.redis, runtime.durable)
    recommendations = Recommendations(
        utilization,
        runtime.redis,
        runtime.durable,
        window_days=settings.cost_rightsizing_window_days,
        min_monthly_savings=Decimal(settings.cost_rightsizing_min_monthly_savings),
    )
    notifier = Notifier(
        runtime.redis,
        runtime.durable,
        "devmesh:cost:notify:",
        max_attempts=settings.cost_webhook_max_attempts,
        timeout=settings.cost_webhook_timeout,
        first_backoff=settings.cost_webhook_first_backoff,
    )
    anomalies = Anomalies(queries, runtime.redis, runtime.durable, notifier)
    budgets = Budgets(queries, runtime.redis, runtime.durable, notifier)
    after_imports = AfterImports([anomalies.evaluate_all, budgets.evaluate_all])
    importer.on_commit = after_imports.kick
    servicer = CostServicer(
        settings, catalog, importer, queries, utilization, recommendations, anomalies, budgets, notifier
    )

    def register(server: aio.Server) -> None:
        _register_sending_cached_pages_as_they_are(servicer, server)

    async def start() -> None:
        await importer.sweep()
        await notifier.start()
        await after_imports.start()

    async def stop() -> None:
        await after_imports.stop()
        await notifier.stop()  # event streams end within a progress interval
        await importer.stop()
        engine.close()

    return ServiceBinding(register=register, dependencies=[runtime.redis_dependency], start=start, stop=stop)


SPEC = ServiceSpec(
    name="cost",
    summary="FOCUS billing data: imports, breakdowns by any dimension, forecasts, anomalies, budgets, rightsizing",
    settings=CostSettings,
    build=build,
    servicers={SERVICE: CostServicer},
    grants={
        roles.OPERATOR: (
            "cost.imports.*",
            "cost.costs.*",
            "cost.monitors.*",
            "cost.anomalies.*",
            "cost.budgets.*",
            "cost.events.watch",
            "cost.utilization.*",
            "cost.recommendations.*",
        ),
        roles.VIEWER: _READS,
        # Exporters and agents upload billing data and utilisation samples.
        roles.SERVICE: (*_READS, "cost.imports.create", "cost.utilization.create"),
    },
    read_verbs=frozenset({"get", "list", "query", "forecast", "watch"}),
    unimplemented=NOT_BUILT,
    commands="services.cost.cli",
)


class _Handlers:
    """Takes the method handlers the generated `add_CostServiceServicer_to_server` makes."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def _register_sending_cached_pages_as_they_are(servicer: CostServicer, server: aio.Server) -> None:
    """Register the service as generated, except that QueryCost may answer with a page that is
    already serialized (bytes, from the answer cache): it is sent unchanged. Parsing a cached
    page of 2,800 rows and serializing it again took some 5 ms of a cache hit's 5-10."""
    made = _Handlers()
    cost_pb2_grpc.add_CostServiceServicer_to_server(servicer, made)
    query = made.handlers["QueryCost"]
    serialize = query.response_serializer

    def serialize_unless_bytes(message: Any) -> bytes:
        return message if type(message) is bytes else bytes(serialize(message))

    made.handlers["QueryCost"] = grpc.unary_unary_rpc_method_handler(
        query.unary_unary,
        request_deserializer=query.request_deserializer,
        response_serializer=serialize_unless_bytes,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(made.service, made.handlers),))
    server.add_registered_method_handlers(made.service, made.handlers)

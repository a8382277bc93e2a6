"""OpenTelemetry tracing and Prometheus metrics for a devmesh process.

Tracing exports over OTLP/gRPC only when an endpoint is configured; otherwise no SDK
provider is installed and spans are non-recording (they still carry an incoming W3C trace
id through to the logs). Metrics live in the default Prometheus registry and are served
on a side HTTP port when `DEVMESH_METRICS_ADDR` is set.
"""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_DURATION = Histogram(
    "devmesh_rpc_duration_seconds",
    "Server-side RPC latency by method and final status code.",
    ["service", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_IN_FLIGHT = Gauge(
    "devmesh_rpc_in_flight", "RPCs being served now (admitted past the access check and the bound).", ["kind"]
)
RPC_REJECTED = Counter("devmesh_rpc_rejected_total", "RPCs refused by a concurrency bound.", ["kind"])
ACCESS_CHECK = Histogram(
    "devmesh_access_check_seconds",
    "Time authentication, authorization and the rate limit take per admitted or refused call.",
    buckets=(25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 200e-6, 300e-6, 500e-6, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0),
)
AUTH_FAILURES = Counter("devmesh_auth_failures_total", "Calls refused by authentication.", ["reason"])
PERMISSION_DENIALS = Counter(
    "devmesh_permission_denials_total", "Calls refused by authorization.", ["permission"]
)
RATE_LIMIT_DECISIONS = Counter(
    "devmesh_ratelimit_decisions_total", "Rate-limit decisions by result and backend.", ["result", "backend"]
)
RATE_LIMIT_DEGRADED = Gauge(
    "devmesh_ratelimit_degraded", "1 while Redis is unreachable and the limiter uses its fallback."
)
AUDIT_WRITE_FAILURES = Counter(
    "devmesh_audit_write_failures_total", "Audit events that reached only the log, not the stream."
)
DEPENDENCY_UP = Gauge("devmesh_dependency_up", "1 while a hard dependency answers its probe.", ["dependency"])


_tracing = False  # set once an SDK provider is installed


def tracing_enabled() -> bool:
    """Whether spans are recorded and exported (an OTLP endpoint is configured)."""
    return _tracing


def configure_tracing(service_name: str, otlp_endpoint: str) -> None:
    """Install an SDK tracer provider exporting to `otlp_endpoint`; do nothing when it is empty."""
    global _tracing
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    _tracing = True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def serve_metrics(addr: str) -> int:
    """Serve /metrics on `addr` (host:port); returns the bound port."""
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    return int(server.server_port)

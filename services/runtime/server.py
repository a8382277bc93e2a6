"""Host any set of devmesh services in one grpc.aio server.

A service is its `ServiceSpec` (`spec.py`); building it gives a `ServiceBinding` (how to
register its servicers, what it depends on, what to start and stop). `Server` puts every method
behind the call pipeline, adds grpc.health.v1 per service, reflection, metrics, and a graceful
drain: NOT_SERVING first, then stop accepting, then `shutdown_grace` seconds for in-flight
calls.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime import pagination, redis_client, telemetry, vault
from services.runtime.audit import AuditLog
from services.runtime.health import Dependency, HealthMonitor, HealthServicer
from services.runtime.identity.authenticator import Authenticator, AuthSettings
from services.runtime.interceptors import Access, Audit, CallPipeline
from services.runtime.logging import get_logger
from services.runtime.methods import MethodTable
from services.runtime.peers import PeerChannel
from services.runtime.ratelimit import RateLimiter
from services.runtime.redis_mux import MultiplexedRedis
from services.runtime.settings import RuntimeSettings, SettingsError
from services.runtime.settings import load as load_settings
from services.runtime.spec import ServiceSpec, install_roles
from services.runtime.tls import CertificateFiles
from services.runtime.vault import Vault

log = get_logger(__name__)

MAX_METADATA_BYTES = 128 * 1024


@dataclass
class Runtime:
    """What the runtime hands a service when building it: settings and shared clients.

    `redis` is the pooled client, for anything; `redis_mux` shares one connection among every
    caller, for single non-blocking commands on the hot path (`redis_mux` says why)."""

    settings: RuntimeSettings
    redis: redis_client.Redis
    environ: Mapping[str, str]
    vault: Vault | None = None
    authenticator: Authenticator | None = None
    durable: redis_client.DurableWriter = field(init=False)
    redis_dependency: Dependency = field(init=False)
    redis_mux: MultiplexedRedis = field(init=False)
    _peers: dict[str, PeerChannel] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.durable = redis_client.DurableWriter(
            self.redis, self.settings.redis_wait_aof, self.settings.redis_timeout
        )
        self.redis_dependency = Dependency("redis", lambda: redis_client.ping(self.redis))
        self.redis_mux = MultiplexedRedis(self.redis, self.settings.redis_batch_window)

    def peer_channel(self, service: str) -> PeerChannel | None:
        """The channel to another service (one its spec names as a peer), with this process's
        certificate; None when DEVMESH_PEERS gives no address for it."""
        found = self._peers.get(service)
        if found is None:
            addr = dict(self.settings.peers).get(service)
            if addr is None:
                return None
            settings = self.settings
            tls = (
                CertificateFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file)
                if settings.tls_enabled
                else None
            )
            found = self._peers[service] = PeerChannel(service, addr, tls)
        return found

    async def aclose(self) -> None:
        """Close the shared clients (the server has stopped using them)."""
        for peer in self._peers.values():
            await peer.close()
        await self.redis_mux.aclose()
        await self.redis.aclose()
        if self.vault is not None:
            await self.vault.close()


@dataclass
class ServiceBinding:
    """One devmesh service as the server hosts it, built from its spec."""

    register: Callable[[aio.Server], None]
    dependencies: Sequence[Dependency] = ()
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


def _authenticator(runtime: Runtime) -> Authenticator | None:
    settings = runtime.settings
    if settings.auth == "off":
        return None
    if runtime.vault is None:
        raise SettingsError("DEVMESH_AUTH=required needs Vault (DEVMESH_VAULT_ADDR) to verify credentials")
    return Authenticator(
        AuthSettings(
            audience=settings.auth_audience,
            edge_identities=settings.auth_edge_identities,
            mesh_roles=settings.auth_mesh_roles,
            cache_ttl=settings.auth_cache_ttl,
            jwks_refresh=settings.auth_jwks_refresh,
        ),
        runtime.redis,
        runtime.vault,
    )


PAGE_TOKEN_KEY = "devmesh:runtime:page-token-key"


async def _install_page_token_key(redis: redis_client.Redis) -> None:
    """Seal page tokens with the key every replica shares: the first server to start makes it."""
    await redis.set(PAGE_TOKEN_KEY, secrets.token_hex(32), nx=True)
    pagination.use_key(bytes.fromhex((await redis.get(PAGE_TOKEN_KEY)).decode()))


class _Registrar:
    """What the generated `add_*Servicer_to_server` functions are handed instead of the server:
    each service's generic handler goes into the call pipeline, and method registration is
    skipped.

    The generated code also registers every method with grpc core. grpc.aio (1.85) then keeps
    one pending accept per registered method and runs an `asyncio.wait` over all of them for
    every incoming call: with the thirty-odd methods of one of our processes that cost more
    than a tenth of the CPU of a cheap read (grpc/grpc PR #43461 fixes it upstream). The
    pipeline finds the same method with one dict lookup.
    """

    def __init__(self, pipeline: CallPipeline) -> None:
        self._pipeline = pipeline

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._pipeline.add(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        pass


class Server:
    def __init__(
        self,
        runtime: Runtime,
        hosted: Sequence[ServiceSpec],
        *,
        mesh: Sequence[ServiceSpec] = (),
        settings_by_name: Mapping[str, object] | None = None,
    ) -> None:
        """Serve the `hosted` services.

        `mesh`: every service of the mesh (the catalog; by default the hosted ones). The roles
        hold what their specs grant, and server reflection describes all their APIs, so that
        reflection through the edge is complete whichever upstream answers it. `settings`: each
        hosted service's settings, by name, as the process loaded them (`settings_by_name`); the
        ones missing are loaded from the runtime's environment."""
        self.runtime = runtime
        self.specs = list(hosted)
        mesh = list(mesh) or self.specs
        install_roles(mesh)
        self.reflect = [name for spec in mesh for name in spec.proto_services]
        settings = runtime.settings
        translators = [redis_client.translate_error, vault.translate_error]
        self._ratelimit_redis: MultiplexedRedis | None = None  # its own instance, when configured
        # Services reach the authenticator (the one that makes API keys needs its pepper) here.
        runtime.authenticator = _authenticator(runtime)
        loaded = dict(settings_by_name or {})
        self.bindings = [
            spec.build(runtime, loaded.get(spec.name) or load_settings(spec.settings, runtime.environ))
            for spec in self.specs
        ]
        access = None
        edges = runtime.authenticator.settings.edge_identities if runtime.authenticator else frozenset()
        audit = Audit(AuditLog(runtime.redis, retention=settings.audit_retention), edges)
        if runtime.authenticator is not None:
            limiter = None
            if settings.rate_limit_enabled:
                if settings.rate_limit_redis_url:
                    self._ratelimit_redis = MultiplexedRedis(
                        redis_client.connect(settings.rate_limit_redis_url, settings.redis_timeout),
                        settings.redis_batch_window,
                    )
                limiter = RateLimiter(
                    self._ratelimit_redis or runtime.redis_mux, fallback=settings.rate_limit_fallback
                )
            access = Access(runtime.authenticator, limiter, dict(settings.rate_limits), translators)
        self.pipeline = CallPipeline(
            methods=MethodTable({name: spec.read_verbs for spec in mesh for name in spec.proto_services}),
            max_unary=settings.max_concurrent_rpcs,
            max_streams=settings.max_concurrent_streams,
            translators=translators,
            audit=audit,
            access=access,
        )
        self.grpc = aio.server(
            handlers=[self.pipeline],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # Without BDP probing the receive window stays at HTTP/2's default: with it,
                # grpc grew the window until a fast client had ~20 MiB of a streamed log
                # buffered in this process ahead of the reader (measured on StreamAnalyzeLog),
                # which undid the bounded memory of reading a log as it arrives.
                ("grpc.http2.bdp_probe", 0),
                # Above any request headers the edge lets through (Envoy's default limit is 60 KiB),
                # so that oversized credentials reach the authenticator and get its answer
                # (TOKEN_MALFORMED), not grpc's RESOURCE_EXHAUSTED. Between the soft and the
                # absolute limit grpc refuses at random: the two are equal.
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        self.health = HealthServicer()
        self.monitor = HealthMonitor(
            self.health,
            {
                name: binding.dependencies
                for spec, binding in zip(self.specs, self.bindings, strict=True)
                for name in spec.proto_services
            },
            settings.health_interval,
            probe_timeout=settings.redis_timeout,
        )
        self.port = 0
        self.certificates: CertificateFiles | None = None

    @property
    def proto_services(self) -> list[str]:
        return [name for spec in self.specs for name in spec.proto_services]

    async def start(self) -> int:
        """Bind, start every service and the health monitor; returns the bound port."""
        settings = self.runtime.settings
        if settings.redis_wait_aof and not await redis_client.aof_enabled(self.runtime.redis):
            raise SettingsError(
                "DEVMESH_REDIS_WAIT_AOF is on but Redis runs without appendonly; enable AOF "
                "(appendonly yes, appendfsync always or everysec) or set DEVMESH_REDIS_WAIT_AOF=0 "
                "and accept that acknowledged writes can be lost on a Redis restart"
            )
        await _install_page_token_key(self.runtime.redis)
        if self.runtime.vault is not None:
            await self.runtime.vault.login()
        if self.runtime.authenticator is not None:
            await self.runtime.authenticator.start()
        registrar = cast(aio.Server, _Registrar(self.pipeline))
        for binding in self.bindings:
            binding.register(registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        reflection.enable_server_reflection(
            [
                *dict.fromkeys([*self.proto_services, *self.reflect]),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            registrar,
        )
        if settings.tls_enabled:
            self.certificates = CertificateFiles(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file
            )
            self.port = self.grpc.add_secure_port(settings.grpc_addr, self.certificates.server_credentials())
        else:  # settings allow this only on loopback, with DEVMESH_INSECURE=1
            self.port = self.grpc.add_insecure_port(settings.grpc_addr)
        if self.port == 0:
            raise SettingsError(f"cannot listen on DEVMESH_GRPC_ADDR={settings.grpc_addr}")
        for binding in self.bindings:
            if binding.start is not None:
                await binding.start()
        await self.grpc.start()
        await self.monitor.start()
        log.info(
            "server.started",
            port=self.port,
            services=[spec.name for spec in self.specs],
            mtls=settings.tls_enabled,
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, stop accepting, let in-flight calls finish within `grace` seconds."""
        grace = self.runtime.settings.shutdown_grace if grace is None else grace
        await self.monitor.stop()
        # Streams never finish on their own: services end them at the start of the drain.
        for binding in self.bindings:
            if binding.stop is not None:
                await binding.stop()
        await self.grpc.stop(grace)
        if self.runtime.authenticator is not None:
            await self.runtime.authenticator.stop()
        if self._ratelimit_redis is not None:
            await self._ratelimit_redis.aclose()
        log.info("server.stopped", port=self.port)

    async def wait(self) -> None:
        await self.grpc.wait_for_termination()


async def serve(
    settings: RuntimeSettings,
    hosted: Sequence[ServiceSpec],
    environ: Mapping[str, str],
    *,
    mesh: Sequence[ServiceSpec] = (),
    settings_by_name: Mapping[str, object] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then drain. Used by `devmesh serve`."""
    telemetry.configure_tracing("devmesh", settings.otlp_endpoint)
    if settings.metrics_addr:
        try:
            port = telemetry.serve_metrics(settings.metrics_addr)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve metrics on DEVMESH_METRICS_ADDR={settings.metrics_addr}: {exc.strerror}"
            ) from None
        log.info("metrics.serving", port=port)
    runtime = Runtime(
        settings,
        redis_client.connect(settings.redis_url, settings.redis_timeout),
        environ,
        Vault(settings) if settings.vault_addr else None,
    )
    server = Server(runtime, hosted, mesh=mesh, settings_by_name=settings_by_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        await stop.wait()
        log.info("server.draining", grace_s=settings.shutdown_grace)
        await server.stop()
    finally:
        await runtime.aclose()
        telemetry.shutdown_tracing()


__all__ = ["Dependency", "Runtime", "Server", "ServiceBinding", "serve"]

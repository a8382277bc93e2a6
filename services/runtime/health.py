"""grpc.health.v1 per service, following the health of each service's hard dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.errors import NotFound, Unavailable
from services.runtime.logging import get_logger
from services.runtime.tasks import cancel_and_wait
from services.runtime.telemetry import DEPENDENCY_UP

log = get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check, List and Watch as the health protocol defines them (grpc/grpc doc/health-checking.md).

    grpcio-health-checking's asyncio servicer has no List, and its Watch writes with
    `context.write` instead of yielding, which the call pipeline (like every streaming method
    of ours) expects. Watch streams end once the server drains, after telling NOT_SERVING.
    """

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {"": SERVING}
        self._changed = asyncio.Event()  # set, and replaced, on every change
        self._draining = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            raise NotFound(f"no health is reported for service {request.service!r}", reason="UNKNOWN_SERVICE")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=s) for name, s in self._status.items()}
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The service's status now, then each change; SERVICE_UNKNOWN while none is reported."""
        last = None
        while True:
            # Read together, before the yield: a drain that starts while the message is being
            # written must still get its NOT_SERVING written before the stream ends.
            changed, status, draining = (
                self._changed,
                self._status.get(request.service, SERVICE_UNKNOWN),
                self._draining,
            )
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if draining:
                raise Unavailable("the server is shutting down; watch another replica", retry_after=0.1,
                                  reason="SHUTTING_DOWN")  # fmt: skip
            await changed.wait()

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """Report `service`'s status; ignored once the server drains (everything is NOT_SERVING)."""
        if self._draining or self._status.get(service) == status:
            return
        self._status[service] = status
        self._notify()

    def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service, for good, and end the Watch streams."""
        self._draining = True
        self._status = dict.fromkeys(self._status, NOT_SERVING)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


@dataclass(frozen=True)
class Dependency:
    """A hard dependency: while `probe` raises, the services that need it are NOT_SERVING."""

    name: str
    probe: Callable[[], Awaitable[None]]


class HealthMonitor:
    """Probes dependencies every `interval` seconds and sets each service's health status.

    The overall status (service name "") is SERVING only while every service is.
    """

    def __init__(
        self,
        servicer: HealthServicer,
        needs: Mapping[str, Sequence[Dependency]],
        interval: float,
        probe_timeout: float,
    ) -> None:
        self.servicer = servicer
        self._needs = needs
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._task: asyncio.Task[None] | None = None
        self._up: dict[str, bool] = {}

    async def _probe(self, dependency: Dependency) -> bool:
        try:
            await asyncio.wait_for(dependency.probe(), self._probe_timeout)
            up = True
        except Exception as exc:
            up = False
            if self._up.get(dependency.name, True):
                log.warning("health.dependency_down", dependency=dependency.name, error=type(exc).__name__)
        if up and self._up.get(dependency.name) is False:
            log.info("health.dependency_up", dependency=dependency.name)
        self._up[dependency.name] = up
        DEPENDENCY_UP.labels(dependency.name).set(1 if up else 0)
        return up

    async def check_once(self) -> None:
        unique = {d.name: d for deps in self._needs.values() for d in deps}
        results = dict(
            zip(unique, await asyncio.gather(*(self._probe(d) for d in unique.values())), strict=True)
        )
        all_serving = True
        for service, deps in self._needs.items():
            serving = all(results[d.name] for d in deps)
            all_serving &= serving
            self.servicer.set(service, SERVING if serving else NOT_SERVING)
        self.servicer.set("", SERVING if all_serving else NOT_SERVING)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def start(self) -> None:
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        """Stop probing and report NOT_SERVING everywhere (the drain has begun)."""
        await cancel_and_wait(self._task)
        self.servicer.enter_graceful_shutdown()

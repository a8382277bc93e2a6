"""grpc.health.v1 per service, following the health of each service's hard dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

from services.runtime.logging import get_logger
from services.runtime.tasks import cancel_and_wait
from services.runtime.telemetry import DEPENDENCY_UP

log = get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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
        servicer: health.aio.HealthServicer,
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
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        await self.servicer.set("", SERVING if all_serving else NOT_SERVING)

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
        await self.servicer.enter_graceful_shutdown()

"""The Redis (Valkey) adapter every service uses: timeouts on every call, errors as UNAVAILABLE."""

from __future__ import annotations

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from services.runtime.errors import ServiceError, Unavailable

__all__ = ["DurableWriter", "Redis", "aof_enabled", "connect", "ping", "translate_error"]

# Errors that mean "the store is down, slow or not ready": safe to retry later.
_UNAVAILABLE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
)


def connect(url: str, timeout: float) -> Redis:
    """A pooled client whose every command fails after `timeout` seconds instead of hanging."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        decode_responses=False,
    )


def translate_error(exc: BaseException) -> ServiceError | None:
    """Map a redis-py failure to UNAVAILABLE with RetryInfo; None for anything else."""
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return Unavailable("the shared state store is unavailable; retry shortly", reason="REDIS_UNAVAILABLE")
    return None


async def ping(client: Redis) -> None:
    """Health probe: raises when Redis does not answer."""
    await client.ping()


async def aof_enabled(client: Redis) -> bool:
    info = await client.info("persistence")
    return bool(int(info.get("aof_enabled", 0)))


class DurableWriter:
    """Confirms that acknowledged writes reached the append-only file (WAITAOF).

    With `appendfsync always` Redis fsyncs before replying, so WAITAOF answers at once; with
    `everysec` it waits for the next fsync. Either way a write we acknowledge survives a
    Redis restart.
    """

    def __init__(self, client: Redis, enabled: bool, timeout: float) -> None:
        self._client = client
        self.enabled = enabled
        self._timeout_ms = max(1, int(timeout * 1000))

    async def confirm(self) -> None:
        if not self.enabled:
            return
        local, _replicas = await self._client.execute_command("WAITAOF", 1, 0, self._timeout_ms)
        if int(local) < 1:
            raise Unavailable(
                "the write was applied but Redis did not confirm it durable in time; "
                "read it back before retrying",
                reason="WRITE_NOT_DURABLE",
            )

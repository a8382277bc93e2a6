"""The Redis (Valkey) adapter every service uses: timeouts on every call, errors as UNAVAILABLE."""

from __future__ import annotations

from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

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


# Connections of one client's pool. A burst of more concurrent commands waits for a free one
# (up to the command timeout) instead of failing: redis-py's default pool refuses the 101st
# at once, which made a burst of 1,000 watch streams fail UNAVAILABLE.
MAX_CONNECTIONS = 128


def connect(url: str, timeout: float) -> Redis:
    """A pooled client whose every command fails after `timeout` seconds instead of hanging."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        decode_responses=False,
    )
    return Redis(connection_pool=pool)


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


# A counter each confirmation bumps: WAITAOF waits only for the writes of its own connection.
AOF_FENCE = "devmesh:runtime:aof-fence"


class DurableWriter:
    """Confirms that acknowledged writes reached the append-only file (WAITAOF).

    WAITAOF waits for the writes of the connection it is sent on, and a pooled client sends
    it on whichever connection is free: maybe one that never wrote, whose WAITAOF answers at
    once. So a confirmation first writes a fence on its own connection, then waits for that:
    the AOF is one sequence, so once the fence is on disk, so is every write acknowledged
    before the confirmation began. With `appendfsync always` Redis fsyncs before replying and
    WAITAOF answers at once; with `everysec` it waits for the next fsync. Either way a write
    we acknowledge survives a Redis restart.
    """

    def __init__(self, client: Redis, enabled: bool, timeout: float) -> None:
        self._client = client
        self.enabled = enabled
        self._timeout_ms = max(1, int(timeout * 1000))

    async def confirm(self) -> None:
        if not self.enabled:
            return
        async with self._client.pipeline(transaction=False) as pipe:  # one connection, in order
            self.queue_on(pipe)
            _, waited = await pipe.execute()
        self.check(waited)

    def queue_on(self, pipe: Any) -> bool:
        """Queue the confirmation at the end of a non-transactional pipeline: its commands go
        on one connection in order, so the WAITAOF covers the writes queued before it (one
        round trip instead of two). False when not enabled; else pass the last reply to
        `check`."""
        if not self.enabled:
            return False
        pipe.incr(AOF_FENCE)
        pipe.execute_command("WAITAOF", 1, 0, self._timeout_ms)
        return True

    def check(self, waited: Any) -> None:
        """Raise unless WAITAOF's reply says the AOF has the writes."""
        local, _replicas = waited
        if int(local) < 1:
            raise Unavailable(
                "the write was applied but Redis did not confirm it durable in time; "
                "read it back before retrying",
                reason="WRITE_NOT_DURABLE",
            )

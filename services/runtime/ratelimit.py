"""Per-principal rate limits: GCRA in one atomic Lua script on Redis, shared by every replica.

GCRA (the generic cell rate algorithm) keeps one number per principal, the theoretical
arrival time (TAT) of the next token; a call costing `n` is admitted when
`TAT + n*interval - burst*interval <= now`. It is smooth (no fixed-window edges that admit a
double burst) and exact under concurrency, because Redis runs the script atomically with its
own clock.

When Redis is unreachable the limiter either falls back to the same algorithm in process
(`local`, the default: each replica then admits up to the limit on its own) or refuses
(`refuse`: UNAVAILABLE). It says so in the log and in `devmesh_ratelimit_degraded`, and tries
Redis again every `retry_interval` seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis import exceptions as redis_errors

from services.runtime.errors import Unavailable
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.telemetry import RATE_LIMIT_DECISIONS, RATE_LIMIT_DEGRADED

log = get_logger(__name__)

KEY_PREFIX = "devmesh:ratelimit"
FALLBACK_LOCAL = "local"
FALLBACK_REFUSE = "refuse"

# KEYS[1]: the principal's TAT; ARGV: interval (µs per token), burst (tokens), cost (tokens).
# Returns {admitted 0|1, tokens remaining, µs until admitted, µs until the bucket is full}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local capacity = interval * burst
local new_tat = tat + interval * cost
local allow_at = new_tat - capacity
if allow_at > now then
  return {0, math.floor((now - (tat - capacity)) / interval), allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
"""

_REDIS_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError)


@dataclass(frozen=True)
class Limit:
    per_second: float
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, math.floor(1_000_000 / self.per_second))


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until a call of the same cost would be admitted
    reset_after: float  # seconds until the bucket is full again
    backend: str

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(max(0, self.remaining))),
            ("x-ratelimit-reset", str(math.ceil(self.reset_after))),
        )


def _gcra_local(tats: dict[str, int], key: str, limit: Limit, cost: int, now: int) -> list[int]:
    """The Lua script's arithmetic, for the in-process fallback."""
    interval = limit.interval_us
    capacity = interval * limit.burst
    tat = max(tats.get(key, now), now)
    new_tat = tat + interval * cost
    allow_at = new_tat - capacity
    if allow_at > now:
        return [0, (now - (tat - capacity)) // interval, allow_at - now, tat - now]
    tats[key] = new_tat
    return [1, (now - allow_at) // interval, 0, new_tat - now]


def parse_limits(raw: str) -> dict[str, Limit]:
    """`role=rate/burst,...` (`*` for any other role) -> limits; ValueError when malformed."""
    limits = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        role, sep, spec = entry.partition("=")
        rate, slash, burst = spec.partition("/")
        try:
            limit = Limit(float(rate), int(burst) if slash else max(1, math.ceil(2 * float(rate))))
        except ValueError:
            raise ValueError(f"expected <role>=<per second>/<burst>, got {entry!r}") from None
        if not sep or not role or not limit.per_second > 0 or limit.burst < 1:
            raise ValueError(f"expected <role>=<per second>/<burst> with positive numbers, got {entry!r}")
        limits[role.strip()] = limit
    if "*" not in limits:
        raise ValueError("name a limit for `*`: every role without its own limit gets it")
    return limits


class RateLimiter:
    def __init__(self, redis: Redis, *, fallback: str = FALLBACK_LOCAL, retry_interval: float = 1.0) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)
        self.fallback = fallback
        self._retry_interval = retry_interval
        self._degraded_until = 0.0  # monotonic time before which Redis is not tried again
        self.degraded = False
        self._local: dict[str, int] = {}

    async def check(self, principal: str, limit: Limit, cost: int) -> Decision:
        cost = max(1, min(cost, limit.burst))  # a call dearer than the burst could never pass
        key = f"{KEY_PREFIX}:{principal}"
        args = (limit.interval_us, limit.burst, cost)
        backend = "redis"
        if time.monotonic() >= self._degraded_until:
            try:
                result = await self._script(keys=[key], args=args)
                if self.degraded:
                    self._recovered()
            except _REDIS_DOWN as exc:
                self._degrade(exc)
                result = None
        else:
            result = None
        if result is None:
            if self.fallback == FALLBACK_REFUSE:
                RATE_LIMIT_DECISIONS.labels("unavailable", "none").inc()
                raise Unavailable(
                    "the rate limiter cannot reach Redis and is set to refuse calls meanwhile",
                    reason="RATE_LIMITER_UNAVAILABLE",
                    retry_after=self._retry_interval,
                )
            backend = "local"
            if len(self._local) > 100_000:
                self._local.clear()
            result = _gcra_local(self._local, key, limit, cost, int(time.time() * 1_000_000))
        admitted, remaining, retry_us, reset_us = (int(x) for x in result)
        RATE_LIMIT_DECISIONS.labels("admitted" if admitted else "limited", backend).inc()
        return Decision(bool(admitted), limit.burst, remaining, retry_us / 1e6, reset_us / 1e6, backend)

    def _degrade(self, exc: Exception) -> None:
        self._degraded_until = time.monotonic() + self._retry_interval
        if not self.degraded:
            self.degraded = True
            RATE_LIMIT_DEGRADED.set(1)
            log.warning(
                "ratelimit.redis_unreachable",
                error=type(exc).__name__,
                fallback=self.fallback,
                detail="limits are enforced per replica"
                if self.fallback == FALLBACK_LOCAL
                else "refusing calls",
            )

    def _recovered(self) -> None:
        self.degraded = False
        self._local.clear()
        RATE_LIMIT_DEGRADED.set(0)
        log.warning("ratelimit.redis_recovered")

"""Per-principal rate limits: GCRA in one atomic Lua script on Redis, shared by every replica.

GCRA (the generic cell rate algorithm) keeps one number per principal, the theoretical
arrival time (TAT) of the next token; a call costing `n` is admitted when `n` tokens are
available, `burst - (TAT - now) / interval` of them. It is smooth (no fixed-window edges that
admit a double burst) and exact under concurrency, because Redis runs the script atomically
with its own clock.

Leases keep Redis off most calls for generous limits: a replica may take up to
`lease_size(limit)` tokens in one script call (never more than are available) and spend them
locally for a few tens of milliseconds. Tokens taken are spent from the shared bucket at once,
so replicas together can never admit more than the limit; a lease left unused only admits
less. Small limits (a few calls a second) get leases of one token: every call asks Redis.

When Redis is unreachable the limiter either falls back to the same algorithm in process
(`local`, the default: each replica then admits up to the limit on its own) or refuses
(`refuse`: UNAVAILABLE). It says so in the log and in `devmesh_ratelimit_degraded`, and tries
Redis again every `retry_interval` seconds.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from redis import exceptions as redis_errors

from services.runtime.errors import Unavailable
from services.runtime.logging import get_logger
from services.runtime.redis_mux import MultiplexedRedis
from services.runtime.telemetry import RATE_LIMIT_DECISIONS, RATE_LIMIT_DEGRADED

log = get_logger(__name__)

KEY_PREFIX = "devmesh:ratelimit"
FALLBACK_LOCAL = "local"
FALLBACK_REFUSE = "refuse"

# KEYS[1]: the principal's TAT; ARGV: interval (µs per token), burst (tokens), cost (tokens the
# call needs), want (tokens to take, >= cost: the rest is a lease). Returns {tokens granted (0:
# refused), tokens left after, µs until `cost` tokens are available, µs until the bucket is full}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local capacity = interval * burst
local available = math.floor((now + capacity - tat) / interval)
if available < cost then
  return {0, available, tat + cost * interval - capacity - now, tat - now}
end
local grant = math.min(want, available)
local new_tat = tat + grant * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {grant, available - grant, 0, new_tat - now}
"""
_GCRA_SHA = hashlib.sha1(_GCRA.encode()).hexdigest()

LEASE_WINDOW = 0.05  # seconds of a limit's rate one lease may hold
MAX_LEASE = 100


def lease_size(limit: Limit) -> int:
    """Tokens one script call may take: a twentieth of a second's worth, a tenth of the burst at
    most, so that what a replica holds back from the others stays small."""
    return max(1, min(MAX_LEASE, limit.burst // 10, int(limit.per_second * LEASE_WINDOW)))


_ADMITTED_FROM_LEASE = RATE_LIMIT_DECISIONS.labels("admitted", "lease")
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
    """The Lua script's arithmetic (without leases), for the in-process fallback."""
    interval = limit.interval_us
    capacity = interval * limit.burst
    tat = max(tats.get(key, now), now)
    available = (now + capacity - tat) // interval
    if available < cost:
        return [0, available, tat + cost * interval - capacity - now, tat - now]
    tats[key] = tat + cost * interval
    return [cost, available - cost, 0, tats[key] - now]


@dataclass
class _Lease:
    tokens: int  # taken from the shared bucket, not yet spent
    until: float  # monotonic time after which they are dropped
    remaining: int  # what the bucket had left when they were taken
    reset_after: float


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
    def __init__(
        self, redis: MultiplexedRedis, *, fallback: str = FALLBACK_LOCAL, retry_interval: float = 1.0
    ) -> None:
        """`redis`: the script runs on a shared connection; through the pool it cost the calls
        that refill a lease several hundred microseconds each."""
        self._redis = redis
        self.fallback = fallback
        self._retry_interval = retry_interval
        self._degraded_until = 0.0  # monotonic time before which Redis is not tried again
        self.degraded = False
        self._local: dict[str, int] = {}
        self._leases: dict[str, _Lease] = {}

    async def check(self, principal: str, limit: Limit, cost: int) -> Decision:
        cost = max(1, min(cost, limit.burst))  # a call dearer than the burst could never pass
        key = f"{KEY_PREFIX}:{principal}"
        lease = self._leases.get(key)
        now = time.monotonic()
        if lease is not None and lease.tokens >= cost and now < lease.until:
            lease.tokens -= cost
            _ADMITTED_FROM_LEASE.inc()
            return Decision(
                True, limit.burst, lease.remaining + lease.tokens, 0.0, lease.reset_after, "lease"
            )
        backend = "redis"
        result = None
        if now >= self._degraded_until:
            want = max(cost, lease_size(limit))
            try:
                result = await self._gcra(key, limit.interval_us, limit.burst, cost, want)
                if self.degraded:
                    self._recovered()
            except _REDIS_DOWN as exc:
                self._degrade(exc)
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
        granted, remaining, retry_us, reset_us = (int(x) for x in result)
        admitted = granted >= cost
        if admitted and granted > cost:
            if len(self._leases) > 100_000:
                self._leases.clear()
            held = granted - cost
            self._leases[key] = _Lease(held, now + LEASE_WINDOW, remaining, reset_us / 1e6)
        RATE_LIMIT_DECISIONS.labels("admitted" if admitted else "limited", backend).inc()
        left = remaining + (granted - cost if admitted else 0)
        return Decision(admitted, limit.burst, left, retry_us / 1e6, reset_us / 1e6, backend)

    async def _gcra(self, key: str, *args: int) -> list[int]:
        """Run the script. Taking tokens twice (a retry after a lost reply) only admits less."""
        try:
            reply = await self._redis.execute_repeatable("EVALSHA", _GCRA_SHA, 1, key, *args)
        except redis_errors.NoScriptError:  # Redis restarted or flushed its scripts: send it whole
            reply = await self._redis.execute_repeatable("EVAL", _GCRA, 1, key, *args)
        return list(reply)

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

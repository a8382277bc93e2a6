"""Notifications a service sends about what happened: once per event key, into a Redis Stream
that callers follow (and replay), and as signed, retried webhook POSTs.

`emit(key, payload, webhooks)` records the event only if `key` was never emitted before (one
script: the dedup marker, the stream entry and the deliveries are written together, so a
crash never sends one without the other), and returns its stream id, or None for a repeat.

Deliveries wait in a Redis sorted set by due time; every replica runs `deliver_due` in the
background and claims a delivery with a lease, so each POST is made by one replica at a time.
A failed POST (a connection error, a timeout, a non-2xx answer) is retried with exponential
backoff (1 s, 2 s, 4 s... capped at 5 minutes) up to `max_attempts`; then it is kept in a
dead-letter list. Receivers may see a delivery twice (a replica that dies after the POST but
before recording it): the `X-Devmesh-Delivery` header is the idempotency key.

Signature: `X-Devmesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
the webhook's secret, so a receiver checks both who sent it and that it is fresh (as Stripe's
scheme). Secrets are never logged; URLs are logged without their query string.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.runtime.logging import get_logger
from services.runtime.redis_client import DurableWriter, Redis
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Devmesh-Signature"
DELIVERY_HEADER = "X-Devmesh-Delivery"
EVENT_HEADER = "X-Devmesh-Event"
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class Webhook:
    """Where to POST, and the secret that signs the POST (never logged)."""

    url: str
    secret: str = ""
    # A body of this webhook's own for the event (e.g. a chat's format); empty: the event's JSON.
    body: str = ""

    def __repr__(self) -> str:
        return f"Webhook({safe_url(self.url)!r})"


def safe_url(url: str) -> str:
    """A URL as it may be logged: no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_url(url: str) -> str | None:
    """Why `url` cannot be a webhook (None when it can)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a port out of range or not a number
    except ValueError as exc:  # `http://[::1` (an unclosed IPv6 address), `http://h:99999`
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if len(url) > 2048:
        return "must be at most 2048 characters"
    return None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """Whether `header` signs `body` with `secret` and is at most `tolerance_s` old."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


# How long an event's "sent" marker is kept: past the longest period an event is keyed by (a
# yearly budget's thresholds, once a year), so that the markers of the last year and some are
# all that Redis holds, not every event ever sent.
DEDUP_TTL_S = 400 * 86400

# KEYS: dedup marker, stream, due (zset), deliveries (hash)
# ARGV: payload, stream max length, now (ms), marker TTL (ms), then per delivery: id, JSON
_EMIT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) == false then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'payload', ARGV[1])
for i = 5, #ARGV, 2 do
  local delivery = cjson.decode(ARGV[i + 1])
  delivery['event_id'] = id
  redis.call('HSET', KEYS[4], ARGV[i], cjson.encode(delivery))
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[i])
end
return id
"""
# Claim one due delivery: move its due time past the claim lease so no other replica takes it.
# KEYS: due, deliveries; ARGV: now (ms), lease (ms)
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), due[1])
return {due[1], redis.call('HGET', KEYS[2], due[1])}
"""


class Notifier:
    """One service's notifications: `prefix` names its keys (`devmesh:<svc>:notify:`)."""

    def __init__(
        self,
        redis: Redis,
        durable: DurableWriter,
        prefix: str,
        *,
        retention: int = 10_000,
        max_attempts: int = 8,
        timeout: float = 5.0,
        poll_interval: float = 0.5,
        first_backoff: float = 1.0,
        dedup_ttl: float = DEDUP_TTL_S,
    ) -> None:
        self.redis = redis
        self.durable = durable
        self.stream = prefix + "events"
        self.due = prefix + "due"
        self.deliveries = prefix + "deliveries"
        self.dead = prefix + "dead"
        self.dedup_prefix = prefix + "sent:"
        self.dedup_ttl = dedup_ttl  # seconds an event key stays "sent"
        self.retention = retention
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.first_backoff = first_backoff
        self.closing = False
        self._loop: asyncio.Task[None] | None = None

    async def emit(
        self, key: str, event_type: str, payload: dict[str, Any], webhooks: Sequence[Webhook]
    ) -> str | None:
        """Record the event `key` names, once: its stream id, or None when it was emitted before."""
        body = json.dumps({"type": event_type, **payload}, separators=(",", ":"), sort_keys=True)
        args: list[Any] = [body, self.retention, int(time.time() * 1000), int(self.dedup_ttl * 1000)]
        for hook in webhooks:
            delivery = {
                "url": hook.url,
                "secret": hook.secret,
                "type": event_type,
                "body": hook.body or body,
                "attempts": 0,
            }
            args += [uuid.uuid4().hex, json.dumps(delivery)]
        keys = [self.dedup_prefix + key, self.stream, self.due, self.deliveries]
        found = await self.redis.eval(_EMIT, len(keys), *keys, *args)
        if found is None:
            return None
        await self.durable.confirm()
        return found.decode() if isinstance(found, bytes) else str(found)

    async def follow(
        self, after_id: str, block_ms: int = 1000
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Events after `after_id` ("" for only new ones, "0" for all kept), then live ones,
        until `closing` is set."""
        last = after_id or "$"
        while not self.closing:
            found = await self.redis.xread({self.stream: last}, count=100, block=block_ms)
            for _, entries in found or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    yield last, json.loads(fields[b"payload"])
            if last == "$" and not found:
                # Pin the position so that events between two reads are not missed.
                newest = await self.redis.xrevrange(self.stream, count=1)
                last = newest[0][0].decode() if newest else "0"

    async def deliver_due(self) -> int:
        """Make the deliveries that are due now; how many were attempted."""
        attempted = 0
        lease_ms = int((self.timeout + 5) * 1000)
        while True:
            claimed = await self.redis.eval(
                _CLAIM, 2, self.due, self.deliveries, int(time.time() * 1000), lease_ms
            )
            if not claimed:
                return attempted
            delivery_id = claimed[0].decode()
            if claimed[1] is None:
                await self.redis.zrem(self.due, delivery_id)
                continue
            delivery = json.loads(claimed[1])
            attempted += 1
            ok, why = await asyncio.to_thread(self._post, delivery_id, delivery)
            delivery["attempts"] += 1
            if ok:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.due, delivery_id)
                    pipe.hdel(self.deliveries, delivery_id)
                    await pipe.execute()
                log.info("notify.delivered", url=safe_url(delivery["url"]), attempts=delivery["attempts"])
            elif delivery["attempts"] >= self.max_attempts:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.due, delivery_id)
                    pipe.hdel(self.deliveries, delivery_id)
                    pipe.lpush(self.dead, json.dumps({**delivery, "secret": "", "error": why}))
                    pipe.ltrim(self.dead, 0, 999)
                    await pipe.execute()
                log.warning(
                    "notify.abandoned",
                    url=safe_url(delivery["url"]),
                    attempts=delivery["attempts"],
                    error=why,
                )
            else:
                backoff = min(MAX_BACKOFF_S, self.first_backoff * 2 ** (delivery["attempts"] - 1))
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(self.deliveries, delivery_id, json.dumps(delivery))
                    pipe.zadd(self.due, {delivery_id: int((time.time() + backoff) * 1000)})
                    await pipe.execute()
                log.info(
                    "notify.retrying", url=safe_url(delivery["url"]), attempts=delivery["attempts"], error=why
                )

    def _post(self, delivery_id: str, delivery: dict[str, Any]) -> tuple[bool, str]:
        body = delivery["body"].encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: delivery["type"],
        }
        if delivery["secret"]:
            headers[SIGNATURE_HEADER] = sign(delivery["secret"], int(time.time()), body)
        request = urllib.request.Request(delivery["url"], data=body, headers=headers, method="POST")
        # No proxies from the environment, no redirects followed: the POST goes where it was told.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        try:
            with opener.open(request, timeout=self.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            return False, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return False, type(exc).__name__
        return 200 <= status < 300, f"HTTP {status}"

    async def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.dead, 0, -1)]

    async def start(self) -> None:
        async def run() -> None:
            while True:
                try:
                    await self.deliver_due()
                except Exception as exc:  # Redis blips: the next round retries
                    log.warning("notify.round_failed", error=type(exc).__name__)
                await asyncio.sleep(self.poll_interval)

        self._loop = asyncio.create_task(run(), name="notifications")

    async def stop(self) -> None:
        self.closing = True
        await cancel_and_wait(self._loop)
        self._loop = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None

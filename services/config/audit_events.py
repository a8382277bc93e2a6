"""Reading the audit trail (AuditService's domain): newest first, filtered, paginated.

The stream is scanned backwards from the page token's entry id. A scan reads at most
SCAN_BUDGET entries per call, so a filter that matches rarely returns short pages (with a
token to continue) instead of reading the whole stream in one call. A page also ends once
its events hold PAGE_BYTES of text, so that it always fits in a response whatever the
page size asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime import pagination
from services.runtime.audit import DETAIL_PREFIX, STREAM, bounded_event
from services.runtime.errors import InvalidArgument
from services.runtime.identity import roles
from services.runtime.redis_client import Redis

SCAN_BUDGET = 5000
_BATCH = 500
CLOCK_SLACK_MS = 60_000  # entry ids are Redis time; event times are the writer's
PAGE_BYTES = 1 << 20  # well under the 4 MiB a response may carry


@dataclass(frozen=True)
class Filters:
    actor: str = ""
    resource_prefix: str = ""
    action: str = ""
    result: str = ""
    start_us: int = 0
    end_us: int = 0

    def accepts(self, event: dict[str, str]) -> bool:
        if self.actor and event.get("actor") != self.actor:
            return False
        if self.resource_prefix and not event.get("resource", "").startswith(self.resource_prefix):
            return False
        if self.result and event.get("result") != self.result:
            return False
        if self.action:
            action = event.get("action", "")
            if "*" in self.action:
                if not roles.matches(self.action, action):
                    return False
            elif action != self.action:
                return False
        time_us = int(event.get("time_us", "0") or 0)
        if self.start_us and time_us < self.start_us:
            return False
        return not (self.end_us and time_us >= self.end_us)


@dataclass(frozen=True)
class Event:
    id: str
    fields: dict[str, str]
    details: dict[str, str]


async def list_events(
    redis: Redis, filters: Filters, page_size: int, page_token: str
) -> tuple[list[Event], str]:
    for field, value in (("start_time", filters.start_us), ("end_time", filters.end_us)):
        if value < 0:  # the trail began with the epoch; a stream id cannot be negative
            raise InvalidArgument.for_field(field, "must not be before 1970-01-01T00:00:00Z")
    if filters.start_us and filters.end_us and filters.start_us >= filters.end_us:
        raise InvalidArgument.for_field("start_time", "must be before end_time")
    size = pagination.page_size(page_size)
    query = ("audit", filters)
    cursor = pagination.decode_token(page_token, query)
    upper = f"({cursor}" if cursor else "+"
    if filters.end_us and not cursor:
        upper = str(filters.end_us // 1000 + CLOCK_SLACK_MS)
    lower = str(max(0, filters.start_us // 1000 - CLOCK_SLACK_MS)) if filters.start_us else "-"
    found: list[Event] = []
    scanned = 0
    page_bytes = 0
    while scanned < SCAN_BUDGET:
        entries = await redis.xrevrange(STREAM, upper, lower, count=_BATCH)
        if not entries:
            return found, ""
        for entry_id, raw in entries:
            scanned += 1
            eid = entry_id.decode()
            upper = f"({eid}"
            fields = bounded_event({k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()})
            if filters.accepts(fields):
                details = {
                    k[len(DETAIL_PREFIX) :]: v for k, v in fields.items() if k.startswith(DETAIL_PREFIX)
                }
                found.append(Event(eid, fields, details))
                page_bytes += sum(len(k) + len(v) for k, v in fields.items())
                if len(found) == size or page_bytes >= PAGE_BYTES:
                    return found, pagination.encode_token(eid, query)
        if len(entries) < _BATCH:
            return found, ""
    return found, pagination.encode_token(upper[1:], query)

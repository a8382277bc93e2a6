"""Remediations in Redis, as JSON of our own, changed only by compare-and-set.

A remediation is one hash (`devmesh:debugger:remediation:{id}`: its `version` and its JSON
`body`) and entries in the indexes it is listed by: every remediation, its state's, each of
its targets' (sorted sets scored by creation time). A transition is one Lua script: it
checks the version the caller read, writes the new body, moves the remediation between state
indexes and appends the event to the remediations' stream, all or nothing; a writer that
lost the race is ABORTED and re-reads. Every transition is confirmed durable before it is
answered. Automatic remediations per target are counted in a sorted set per target.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from services.debugger.remediation import (
    Action,
    ActionKind,
    Approval,
    Remediation,
    Risk,
    State,
    Step,
    Transition,
)
from services.runtime.errors import Aborted, InvalidArgument, NotFound, OutOfRange, Unavailable
from services.runtime.leases import Lease
from services.runtime.redis_client import DurableWriter, Redis

PREFIX = "devmesh:debugger"
INDEX = f"{PREFIX}:remediations"
EVENTS = f"{PREFIX}:remediation-events"
EVENTS_KEPT = 10_000  # events the stream keeps (approximately): a watcher resumes within them
RESOURCE_TYPE = "debugger.devmesh.io/Remediation"

# KEYS: record, all-index, old state index, new state index, events, then target indexes.
# ARGV: expected version ('0': must not exist), new version, body, score, id, event body, maxlen.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'body', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
if KEYS[3] ~= KEYS[4] then redis.call('ZREM', KEYS[3], ARGV[5]) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
for i = 6, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5]) end
return redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'event', ARGV[6])
"""
# KEYS: the target's automatic set. ARGV: now (us), window start (us), member, limit, ttl (s).
# Counts the automatic remediations of the window and records one more if under the limit.
_COUNT_AUTOMATIC = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


_EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def _event_order(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def remediation_key(remediation_id: str) -> str:
    return f"{PREFIX}:remediation:{remediation_id}"


def _state_index(state: State) -> str:
    return f"{INDEX}:state:{state.value}"


def _target_index(target: str) -> str:
    return f"{INDEX}:target:{target}"


def _automatic_key(target: str) -> str:
    return f"{PREFIX}:remediation-automatic:{target}"


def to_json(r: Remediation) -> str:
    """A remediation as stored."""
    record = asdict(r)
    record["state"] = r.state.value
    record["plan"] = [{**asdict(a), "kind": a.kind.value} for a in r.plan]
    record["history"] = [
        {
            **asdict(t),
            "from_state": t.from_state.value if t.from_state else None,
            "to_state": t.to_state.value,
        }
        for t in r.history
    ]
    return json.dumps(record, separators=(",", ":"))


def from_json(raw: bytes | str) -> Remediation:
    """A stored remediation (JSON only)."""
    record: dict[str, Any] = json.loads(raw)
    record["state"] = State(record["state"])
    record["plan"] = tuple(Action(**{**a, "kind": ActionKind(a["kind"])}) for a in record["plan"])
    record["risk"] = Risk(**{**record["risk"], "reasons": tuple(record["risk"]["reasons"])})
    record["approvals"] = tuple(Approval(**a) for a in record["approvals"])
    record["history"] = tuple(
        Transition(
            **{
                **t,
                "from_state": State(t["from_state"]) if t["from_state"] else None,
                "to_state": State(t["to_state"]),
            }
        )
        for t in record["history"]
    )
    record["steps"] = tuple(Step(**step) for step in record.get("steps", ()))
    return Remediation(**record)


def not_found(remediation_id: str) -> NotFound:
    return NotFound(
        f"remediations/{remediation_id} does not exist",
        resource_type=RESOURCE_TYPE,
        resource_name=f"remediations/{remediation_id}",
    )


class RemediationStore:
    """Remediations of the debugger, and the events of their transitions."""

    def __init__(
        self,
        redis: Redis,
        durable: DurableWriter,
        announcers: Sequence[Callable[[Remediation, Remediation | None, str], Awaitable[None]]] = (),
    ) -> None:
        self._redis = redis
        self._durable = durable
        self._announcers = list(announcers)  # told of every change once it is durable
        self.closing = False  # set when the server drains: watchers end instead of holding it up

    async def write(self, after: Remediation, before: Remediation | None) -> str:
        """Write `after` if the stored remediation is still `before` (None: it must not exist);
        ABORTED otherwise. Returns the transition's event id."""
        old_state = before.state if before is not None else after.state
        keys = [
            remediation_key(after.id),
            INDEX,
            _state_index(old_state),
            _state_index(after.state),
            EVENTS,
            *(_target_index(t) for t in after.targets()),
        ]
        written = await self._redis.eval(
            _TRANSITION,
            len(keys),
            *keys,
            str(before.version) if before is not None else "0",
            str(after.version),
            to_json(after),
            str(after.create_time_us),
            after.id,
            to_json(after),  # the event is the remediation as this transition left it
            str(EVENTS_KEPT),
        )
        if not written:
            raise Aborted(
                f"remediations/{after.id} changed meanwhile; read it again and retry",
                reason="CONCURRENT_CHANGE",
            )
        await self._durable.confirm()
        event_id = written.decode() if isinstance(written, bytes) else str(written)
        for announce in self._announcers:
            await announce(after, before, event_id)
        return event_id

    def lease(self, remediation_id: str, ttl_s: float) -> Lease:
        """The lease a replica holds while it executes a remediation (one executor at a time)."""
        return Lease(self._redis, f"{PREFIX}:remediation-lease:{remediation_id}", ttl_s)

    async def get(self, remediation_id: str) -> Remediation:
        """A remediation, or NOT_FOUND."""
        raw = await self._redis.hget(remediation_key(remediation_id), "body")
        if raw is None:
            raise not_found(remediation_id)
        return from_json(raw)

    async def count_automatic(
        self, target: str, remediation_id: str, now_us: int, window_s: int, limit: int
    ) -> bool:
        """Record an automatic remediation of `target` if it had fewer than `limit` in the last
        `window_s` seconds; False when it had (the caller escalates to approval)."""
        allowed = await self._redis.eval(
            _COUNT_AUTOMATIC,
            1,
            _automatic_key(target),
            str(now_us),
            str(now_us - window_s * 1_000_000),
            remediation_id,
            str(limit),
            str(window_s),
        )
        return bool(allowed)

    async def page(
        self, *, state: State | None, target: str, before_us: int | None, size: int
    ) -> tuple[list[Remediation], int | None]:
        """Up to `size` remediations created before `before_us`, newest first, and where the next
        page starts (None on the last page)."""
        index = _target_index(target) if target else _state_index(state) if state is not None else INDEX
        top = f"({before_us}" if before_us is not None else "+inf"
        found: list[Remediation] = []
        while True:
            entries = await self._redis.zrevrangebyscore(
                index, top, "-inf", start=0, num=size + 1, withscores=True
            )
            if not entries:
                return found, None
            ids = [m.decode() if isinstance(m, bytes) else m for m, _ in entries]
            for remediation_id in ids:
                raw = await self._redis.hget(remediation_key(remediation_id), "body")
                if raw is None:
                    continue
                remediation = from_json(raw)
                if state is not None and remediation.state is not state:
                    continue  # a target's index holds every state; a state index can lag a moment
                if len(found) == size:
                    return found, found[-1].create_time_us
                found.append(remediation)
            if len(entries) <= size:
                return found, None
            top = f"({int(entries[-1][1])}"

    async def last_event_id(self) -> str:
        """The newest event's id ("0-0" when there is none)."""
        entries = await self._redis.xrevrange(EVENTS, count=1)
        return entries[0][0].decode() if entries else "0-0"

    async def check_resumable(self, after_id: str, field: str) -> None:
        """INVALID_ARGUMENT unless `after_id` is an event id; OUT_OF_RANGE when events after it
        were trimmed away (the watcher re-reads the remediations instead)."""
        if not _EVENT_ID.match(after_id):
            raise InvalidArgument.for_field(field, "is not an event id (`<milliseconds>-<sequence>`)")
        info = await self._redis.xinfo_stream(EVENTS) if await self._redis.exists(EVENTS) else {}
        trimmed = info.get("max-deleted-entry-id", b"0-0")
        trimmed = trimmed.decode() if isinstance(trimmed, bytes) else str(trimmed or "0-0")
        if _EVENT_ID.match(trimmed) and _event_order(after_id) < _event_order(trimmed):
            raise OutOfRange(
                f"events after {after_id} are no longer kept (up to {trimmed} were trimmed): "
                "list the remediations, then watch from the newest event",
                reason="EVENTS_TRIMMED",
                metadata={"trimmed_through": trimmed},
            )

    async def follow(self, after_id: str, block_ms: int) -> AsyncIterator[tuple[str, Remediation | None]]:
        """(event id, the remediation as the transition left it) after `after_id`, forever;
        (cursor, None) after each quiet `block_ms`. UNAVAILABLE once the server drains."""
        cursor = after_id
        while True:
            if self.closing:
                raise Unavailable(
                    f"the server is shutting down; resume with after_event_id={cursor}",
                    retry_after=0.1,
                    reason="SHUTTING_DOWN",
                    metadata={"after_event_id": cursor},
                )
            batches = await self._redis.xread({EVENTS: cursor}, count=100, block=block_ms)
            if not batches:
                yield cursor, None
                continue
            for entry_id, fields in batches[0][1]:
                cursor = entry_id.decode()
                yield cursor, from_json(fields[b"event"])

"""Rightsizing recommendations and their lifecycle (as GCP Recommender's): ACTIVE -> CLAIMED ->
SUCCEEDED or FAILED, or DISMISSED with a reason.

A recommendation is computed from the samples whenever it is listed; what people did with it
is kept in Redis per container, with the recommendation's fingerprint at the time. When the
evidence changes enough to change the recommendation, a dismissed or finished one is ACTIVE
again: it is a new recommendation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from decimal import Decimal

from services.cost import rightsizing
from services.cost.rightsizing import Sizing
from services.cost.utilization_store import UtilizationStore
from services.runtime import etags
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.redis_client import DurableWriter, Redis

ACTIVE, CLAIMED, SUCCEEDED, FAILED, DISMISSED = "ACTIVE", "CLAIMED", "SUCCEEDED", "FAILED", "DISMISSED"
# The states each mark may start from.
ALLOWED_FROM = {
    CLAIMED: (ACTIVE,),
    SUCCEEDED: (CLAIMED,),
    FAILED: (CLAIMED,),
    DISMISSED: (ACTIVE, CLAIMED),
}
MAX_REASON = 512


def _key(workload: str) -> str:
    return f"devmesh:cost:recommendation-states:{workload}"


def _revisions_key(workload: str) -> str:
    return f"devmesh:cost:recommendation-revisions:{workload}"


# The record is opaque to the script (Lua's JSON would round its microsecond times).
# KEYS: the workload's states, its revisions; ARGV: container, expected revision (-1: any), JSON
_MARK = """
local revision = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) >= 0 and tonumber(ARGV[2]) ~= revision then
  return {'stale', revision}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'ok', redis.call('HINCRBY', KEYS[2], ARGV[1], 1)}
"""


@dataclass(frozen=True)
class Item:
    workload: str
    sizing: Sizing
    state: str
    reason: str
    update_us: int
    revision: int
    currency: str

    @property
    def etag(self) -> str:
        return etags.of(self.revision)


class Recommendations:
    def __init__(
        self,
        store: UtilizationStore,
        redis: Redis,
        durable: DurableWriter,
        *,
        window_days: int,
        min_monthly_savings: Decimal,
    ) -> None:
        self.store = store
        self.redis = redis
        self.durable = durable
        self.window_days = window_days
        self.min_monthly_savings = min_monthly_savings

    async def _states(self, workload: str) -> dict[str, dict[str, object]]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(_key(workload))
            pipe.hgetall(_revisions_key(workload))
            found, revisions = await pipe.execute()
        return {k.decode(): {**json.loads(v), "revision": int(revisions.get(k, 0))} for k, v in found.items()}

    async def _items(self, workload: str, target: float) -> list[Item]:
        usages = await asyncio.to_thread(self.store.usage, workload, self.window_days)
        prices = await self.store.prices(workload)
        states = await self._states(workload)
        items = []
        for usage in usages:
            sizing = rightsizing.size(usage, target, prices)
            # The lifecycle follows the recommendation at the default target, whatever profile
            # a listing asks for: one container, one recommendation to act on.
            default = rightsizing.size(usage, rightsizing.DEFAULT_TARGET, prices)
            record = states.get(usage.container)
            state, reason, update_us, revision = ACTIVE, "", usage.window_end_us, 0
            if record is not None:
                revision = int(record["revision"])  # type: ignore[call-overload]
                if record["fingerprint"] == default.fingerprint() or record["state"] == CLAIMED:
                    state, reason = str(record["state"]), str(record["reason"])
                    update_us = int(record["update_us"])  # type: ignore[call-overload]
            if state == ACTIVE and not rightsizing.worth_it(sizing, self.min_monthly_savings):
                continue
            items.append(Item(workload, sizing, state, reason, update_us, revision, prices.currency))
        return items

    async def list(self, workload: str | None, profile: str) -> list[Item]:
        """Recommendations of one workload (None: of every workload), by workload and container."""
        if profile and profile not in rightsizing.PROFILES:
            raise InvalidArgument.for_field(
                "profile", f"unknown profile; use one of {', '.join(rightsizing.PROFILES)} (or empty)"
            )
        target = rightsizing.target_of(profile)
        workloads = [workload] if workload else await asyncio.to_thread(self.store.workloads)
        found: list[Item] = []
        for name in workloads:
            found.extend(await self._items(name, target))
        return found

    async def mark(self, workload: str, container: str, state: str, etag: str, reason: str) -> Item:
        """Move a recommendation to `state`; FAILED_PRECONDITION from a state that does not allow
        it, ABORTED for a stale etag."""
        if len(reason) > MAX_REASON:
            raise InvalidArgument.for_field("reason", f"at most {MAX_REASON} characters")
        if state == DISMISSED and not reason.strip():
            raise InvalidArgument.for_field("reason", "say why the recommendation is dismissed")
        items = {i.sizing.usage.container: i for i in await self._items(workload, rightsizing.DEFAULT_TARGET)}
        item = items.get(container)
        name = f"workloads/{workload}/recommendations/{container}"
        if item is None:
            raise NotFound(
                f"no recommendation for container {container!r} of workload {workload!r}",
                resource_type="cost.devmesh.io/Recommendation",
                resource_name=name,
            )
        etags.check(etag, item.etag, f"recommendation {name}")
        if item.state not in ALLOWED_FROM[state]:
            raise FailedPrecondition(
                f"the recommendation is {item.state}: it cannot be marked {state} (allowed from "
                f"{' or '.join(ALLOWED_FROM[state])})",
                reason="WRONG_STATE",
            )
        now = time.time_ns() // 1000
        record = {
            "state": state,
            "reason": reason,
            "fingerprint": item.sizing.fingerprint(),
            "update_us": now,
        }
        expected = item.revision if etag else -1
        answer = await self.redis.eval(
            _MARK, 2, _key(workload), _revisions_key(workload), container, expected, json.dumps(record)
        )
        if answer[0] == b"stale":
            raise etags.mismatch(etag, etags.of(int(answer[1])), f"recommendation {name}")
        await self.durable.confirm()
        return Item(workload, item.sizing, state, reason, now, int(answer[1]), item.currency)

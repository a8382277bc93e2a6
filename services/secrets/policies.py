"""Access policies: who may read, manage or administer the secrets whose id starts with a
prefix. Stored in Redis (they hold no secret); read on every decision, so a change applies at
once on every replica.

    devmesh:secrets:policy:{id}   hash: prefix, bindings (JSON), revision
    devmesh:secrets:policies      zset of policy ids (listing)

A principal holds the highest level any binding gives it on any policy whose prefix starts the
secret's id. The admin role holds every level everywhere. Decisions look at names only, never
at whether the secret exists: a refusal reveals nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from redis.exceptions import WatchError

from services.runtime import etags
from services.runtime.errors import Aborted, FieldViolation, InvalidArgument, NotFound, PermissionDenied
from services.runtime.identity import roles
from services.runtime.identity.principal import Principal
from services.runtime.redis_client import DurableWriter, Redis

PREFIX = "devmesh:secrets"
INDEX = f"{PREFIX}:policies"
REVISION = f"{PREFIX}:policies:revision"  # bumped by every change: replicas reload when it moves

READ, MANAGE, ADMIN = 1, 2, 3
LEVEL_NAMES = {READ: "READ", MANAGE: "MANAGE", ADMIN: "ADMIN"}


def policy_key(pid: str) -> str:
    return f"{PREFIX}:policy:{pid}"


@dataclass
class Policy:
    id: str
    prefix: str = ""
    bindings: list[tuple[str, int]] = field(default_factory=list)  # (member, level)
    revision: int = 0

    def level_of(self, principal: Principal) -> int:
        members = {"*", principal.name, f"role:{principal.role}"}
        return max((level for member, level in self.bindings if member in members), default=0)


def validate(policy: Policy) -> None:
    problems = []
    if len(policy.prefix) > 200:
        problems.append(FieldViolation("policy.prefix", "at most 200 characters"))
    if len(policy.bindings) > 100:
        problems.append(FieldViolation("policy.bindings", "at most 100 bindings"))
    for i, (member, level) in enumerate(policy.bindings):
        if not member or len(member) > 300 or not member.isprintable():
            problems.append(FieldViolation(f"policy.bindings[{i}].member", "a principal, role:<role> or *"))
        elif member.startswith("role:") and member[5:] not in roles.ROLES:
            problems.append(FieldViolation(f"policy.bindings[{i}].member", f"unknown role {member[5:]!r}"))
        if level not in LEVEL_NAMES:
            problems.append(FieldViolation(f"policy.bindings[{i}].level", "must be READ, MANAGE or ADMIN"))
    if problems:
        raise InvalidArgument("the access policy is invalid", problems)


class Policies:
    def __init__(self, redis: Redis, durable: DurableWriter) -> None:
        self._redis = redis
        self._durable = durable
        self._cached: tuple[int, list[Policy]] | None = None  # (revision, policies)

    async def _load(self, pid: str) -> Policy | None:
        raw = await self._redis.hgetall(policy_key(pid))
        if not raw:
            return None
        text = {k.decode(): v.decode() for k, v in raw.items()}
        bindings = [(m, int(lv)) for m, lv in json.loads(text["bindings"])]
        return Policy(pid, text["prefix"], bindings, int(text["revision"]))

    async def get(self, pid: str) -> Policy:
        policy = await self._load(pid)
        if policy is None:
            raise NotFound(f"access policy {pid!r} does not exist", resource_type="AccessPolicy",
                           resource_name=f"accessPolicies/{pid}")  # fmt: skip
        return policy

    async def all(self) -> list[Policy]:
        """Every policy; one GET when nothing changed since the last call (on any replica)."""
        revision = int(await self._redis.get(REVISION) or 0)
        if self._cached is not None and self._cached[0] == revision:
            return self._cached[1]
        ids = [i.decode() for i in await self._redis.zrange(INDEX, 0, -1)]
        loaded = [p for p in [await self._load(pid) for pid in ids] if p is not None]
        self._cached = (revision, loaded)
        return loaded

    async def set(self, policy: Policy, etag: str) -> Policy:
        validate(policy)
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(policy_key(policy.id))
                raw = await pipe.hget(policy_key(policy.id), "revision")
                current = int(raw or 0)
                etags.check(etag, etags.of(current) if raw else "", f"access policy {policy.id!r}")
                policy.revision = current + 1
                pipe.multi()
                pipe.hset(
                    policy_key(policy.id),
                    mapping={
                        "prefix": policy.prefix,
                        "bindings": json.dumps(policy.bindings),
                        "revision": policy.revision,
                    },
                )
                pipe.zadd(INDEX, {policy.id: 0})
                pipe.incr(REVISION)
                await pipe.execute()
            except WatchError:
                raise Aborted(
                    f"access policy {policy.id!r} changed meanwhile; retry", reason="ETAG_MISMATCH"
                ) from None
        await self._durable.confirm()
        return policy

    async def delete(self, pid: str) -> None:
        await self.get(pid)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(policy_key(pid))
            pipe.zrem(INDEX, pid)
            pipe.incr(REVISION)
            await pipe.execute()
        await self._durable.confirm()

    async def level(self, principal: Principal, sid: str) -> int:
        if principal.role == roles.ADMIN and not principal.permissions:
            return ADMIN
        return max((p.level_of(principal) for p in await self.all() if sid.startswith(p.prefix)), default=0)

    async def readable(self, principal: Principal, sids: list[str]) -> list[str]:
        """The ids among `sids` that `principal` may read, in order (one policy read for all)."""
        if principal.role == roles.ADMIN and not principal.permissions:
            return sids
        held = [(p.prefix, p.level_of(principal)) for p in await self.all()]
        return [
            sid for sid in sids if any(sid.startswith(prefix) and level >= READ for prefix, level in held)
        ]

    async def require(self, principal: Principal, sid: str, needed: int) -> None:
        """PERMISSION_DENIED unless `principal` holds `needed` on `sid`; decided by name only."""
        if await self.level(principal, sid) < needed:
            raise PermissionDenied(
                f"{principal.name} holds no {LEVEL_NAMES[needed]} access to secrets/{sid} (see the access policies)",
                reason="SECRET_ACCESS_DENIED",
                metadata={"needed": LEVEL_NAMES[needed]},
            )

"""API key management (ApiKeyService's domain): create, read, list, revoke, rotate.

Records live in Redis (`services.runtime.identity.keystore`), every change in one WATCH/MULTI
transaction on the key's record, published on the invalidation channel so that every
replica's authenticator drops its cached copy at once. The full key exists only in the
response that returns it. Every write also sets when Redis deletes the record: `retention_us`
after the key expires or is revoked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import WatchError

from services.runtime import etags, pagination, request_context
from services.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.identity import keys, keystore, roles
from services.runtime.identity.keystore import ApiKeyRecord
from services.runtime.identity.principal import Principal
from services.runtime.redis_client import DurableWriter, Redis
from services.runtime.resource_names import IdRule, ResourceName

DAY_US = 86_400 * 1_000_000
DEFAULT_LIFETIME_US = 90 * DAY_US
MAX_LIFETIME_US = 366 * DAY_US
DEFAULT_GRACE_US = DAY_US
MAX_GRACE_US = 30 * DAY_US
DEFAULT_RETENTION_US = 30 * DAY_US
API_KEY = ResourceName(
    "apiKeys/{api_key}", {"api_key": IdRule(keys.KEY_ID_RE.pattern, "12 characters of [0-9a-z]")}
)


@dataclass(frozen=True)
class NewKey:
    display_name: str
    owner: str
    role: str
    permissions: tuple[str, ...]
    expire_us: int  # 0: the default lifetime
    rate_per_second: float
    rate_burst: int


def key_id_of(name: str, field: str = "name") -> str:
    (key_id,) = API_KEY.parse(name, field)
    return key_id


def _index_member(record: ApiKeyRecord) -> str:
    """Index members sort by creation time, then id: listing pages by member is stable."""
    return f"{record.create_us:020d}:{record.key_id}"


def _validate(new: NewKey, now: int) -> list[FieldViolation]:
    problems = []
    if new.role not in roles.ROLES:
        problems.append(FieldViolation("api_key.role", f"must be one of {', '.join(roles.ROLES)}"))
    for i, pattern in enumerate(new.permissions):
        if not roles.valid_pattern(pattern):
            problems.append(
                FieldViolation(f"api_key.permissions[{i}]", "is not a permission pattern such as config.*")
            )
    if len(new.permissions) > 64:
        problems.append(FieldViolation("api_key.permissions", "at most 64 patterns"))
    if len(new.display_name) > 128:
        problems.append(FieldViolation("api_key.display_name", "at most 128 characters"))
    if len(new.owner) > 256:
        problems.append(FieldViolation("api_key.owner", "at most 256 characters"))
    if new.expire_us and not now < new.expire_us <= now + MAX_LIFETIME_US:
        problems.append(
            FieldViolation("api_key.expire_time", "must be in the future and at most a year away")
        )
    if not 0 <= new.rate_per_second <= 1_000_000:
        problems.append(FieldViolation("api_key.rate_limit_per_second", "must be between 0 and 1000000"))
    if not 0 <= new.rate_burst <= 10_000_000:
        problems.append(FieldViolation("api_key.rate_limit_burst", "must be between 0 and 10000000"))
    return problems


def etag_of(record: ApiKeyRecord) -> str:
    """A key's etag: every change to its record bumps its version."""
    return etags.of(record.version)


class ApiKeys:
    def __init__(
        self,
        redis: Redis,
        durable: DurableWriter,
        pepper: Callable[[], bytes],
        *,
        retention_us: int = DEFAULT_RETENTION_US,
    ) -> None:
        self._redis = redis
        self._durable = durable
        self._pepper = pepper
        self._retention_us = retention_us

    def _purge_ms(self, record: ApiKeyRecord) -> int:
        """When Redis deletes the record (ms since the epoch, for PEXPIREAT)."""
        return (record.end_us + self._retention_us) // 1000

    async def create(self, creator: Principal, new: NewKey) -> tuple[ApiKeyRecord, str]:
        now = keystore.now_us()
        problems = _validate(new, now)
        if problems:
            raise InvalidArgument("the API key is invalid", problems)
        if not roles.role_covered_by(new.role, creator.role, creator.permissions):
            raise PermissionDenied(
                f"{creator.name} may not create a key with role {new.role}: it holds less than that role grants",
                reason="ROLE_NOT_HELD",
            )
        while True:
            key_id = keys.new_key_id()
            key = keys.new_key(key_id)
            record = ApiKeyRecord(
                key_id=key_id,
                role=new.role,
                digest=keys.digest(self._pepper(), key).hex(),
                expire_us=new.expire_us or now + DEFAULT_LIFETIME_US,
                create_us=now,
                creator=creator.name,
                display_name=new.display_name,
                owner=new.owner or creator.name,
                permissions=list(new.permissions),
                rate_per_second=new.rate_per_second,
                rate_burst=new.rate_burst,
            )
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keystore.record_key(key_id))
                    if await pipe.exists(keystore.record_key(key_id)):
                        continue  # 62 bits of id collided; draw again
                    pipe.multi()
                    pipe.hset(keystore.record_key(key_id), mapping=record.to_hash())
                    pipe.pexpireat(keystore.record_key(key_id), self._purge_ms(record))
                    pipe.zadd(keystore.INDEX, {_index_member(record): 0})
                    pipe.publish(keystore.INVALIDATE_CHANNEL, key_id)  # replicas may cache "no such key"
                    await pipe.execute()
                except WatchError:
                    continue
            break
        await self._durable.confirm()
        request_context.note_audit(resource=API_KEY.format(key_id), role=new.role)
        return record, key

    async def get(self, key_id: str) -> ApiKeyRecord:
        record = await keystore.load(self._redis, key_id)
        if record is None:
            name = API_KEY.format(key_id)
            raise NotFound(f"API key {name} does not exist", resource_type="ApiKey", resource_name=name)
        return record

    async def list(
        self, *, page_size: int, page_token: str, owner: str, show_inactive: bool
    ) -> tuple[list[ApiKeyRecord], str]:
        size = pagination.page_size(page_size)
        query = ("api_keys", owner, show_inactive)
        cursor = pagination.decode_token(page_token, query)
        found: list[ApiKeyRecord] = []
        now = keystore.now_us()
        upper = f"({cursor}" if cursor else "+"
        while len(found) < size:
            members = await self._redis.zrevrangebylex(keystore.INDEX, upper, "-", start=0, num=size)
            if not members:
                return found, ""
            for member in members:
                upper = f"({member.decode()}"
                record = await keystore.load(self._redis, member.decode().rpartition(":")[2])
                if record is None:  # past its retention: Redis deleted it
                    await self._redis.zrem(keystore.INDEX, member)
                    continue
                if owner and record.owner != owner:
                    continue
                if not show_inactive and record.effective_state(now) != keystore.ACTIVE:
                    continue
                found.append(record)
                if len(found) == size:
                    return found, pagination.encode_token(member.decode(), query)
        return found, ""

    async def _change(
        self, key_id: str, etag: str, apply: Callable[[ApiKeyRecord, int], str | None]
    ) -> tuple[ApiKeyRecord, str | None]:
        """Load, check the etag, let `apply` change the record (it may return a new key), commit."""
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keystore.record_key(key_id))
                    raw = await pipe.hgetall(keystore.record_key(key_id))
                    if not raw:
                        await self.get(key_id)  # raises NotFound
                    record = ApiKeyRecord.from_hash(raw)
                    etags.check(etag, etag_of(record), f"API key {API_KEY.format(key_id)}")
                    now = keystore.now_us()
                    key = apply(record, now)
                    record.version += 1
                    pipe.multi()
                    pipe.hset(keystore.record_key(key_id), mapping=record.to_hash())
                    pipe.pexpireat(keystore.record_key(key_id), self._purge_ms(record))
                    pipe.publish(keystore.INVALIDATE_CHANNEL, key_id)
                    await pipe.execute()
                except WatchError:
                    await asyncio.sleep(0)
                    continue
            await self._durable.confirm()
            request_context.note_audit(resource=API_KEY.format(key_id))
            return record, key

    async def revoke(self, key_id: str, etag: str) -> ApiKeyRecord:
        def apply(record: ApiKeyRecord, now: int) -> None:
            if record.state != keystore.REVOKED:
                record.state = keystore.REVOKED
                record.revoke_us = now

        record, _ = await self._change(key_id, etag, apply)
        return record

    async def rotate(self, key_id: str, etag: str, grace_us: int | None) -> tuple[ApiKeyRecord, str]:
        grace = DEFAULT_GRACE_US if grace_us is None else grace_us
        if not 0 <= grace <= MAX_GRACE_US:
            raise InvalidArgument.for_field("grace_period", "must be between 0 and 30 days")

        def apply(record: ApiKeyRecord, now: int) -> str:
            state = record.effective_state(now)
            if state != keystore.ACTIVE:
                raise FailedPrecondition(
                    f"API key {API_KEY.format(key_id)} is {state.lower()}; create a new key instead",
                    reason="API_KEY_NOT_ACTIVE",
                )
            key = keys.new_key(key_id)
            record.previous_digest, record.digest = record.digest, keys.digest(self._pepper(), key).hex()
            record.previous_expire_us = now + grace
            record.rotate_us = now
            return key

        record, key = await self._change(key_id, etag, apply)
        assert key is not None
        return record, key

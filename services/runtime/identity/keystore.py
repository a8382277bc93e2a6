"""API key records in Redis, shared by the service that manages keys (which writes them) and
every service's authenticator (which reads them).

Keys:

    devmesh:identity:apikey:{id}     hash: one key's metadata and the HMAC of its secret(s)
    devmesh:identity:apikeys         zset: key ids by creation time (listing, newest first)
    devmesh:identity:invalidate      pub/sub: "key <id> changed", so replicas drop their cache

A record never holds a key, only `keys.digest(pepper, key)`. After a rotation it holds the
previous digest too, accepted until `previous_expire_us`. A record carries a Redis expiry: a
retention period after the key stops working (`end_us`), Redis deletes it; the index entry
goes when a listing finds it dangling.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from services.runtime.redis_client import Redis

PREFIX = "devmesh:identity"
INDEX = f"{PREFIX}:apikeys"
INVALIDATE_CHANNEL = f"{PREFIX}:invalidate"

ACTIVE = "ACTIVE"
REVOKED = "REVOKED"


def record_key(key_id: str) -> str:
    return f"{PREFIX}:apikey:{key_id}"


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass
class ApiKeyRecord:
    key_id: str
    role: str
    digest: str  # hex HMAC-SHA256 of the current secret
    expire_us: int
    create_us: int
    creator: str
    display_name: str = ""
    owner: str = ""
    permissions: list[str] = field(default_factory=list)
    state: str = ACTIVE
    rate_per_second: float = 0.0
    rate_burst: int = 0
    last_use_us: int = 0
    rotate_us: int = 0
    revoke_us: int = 0
    previous_digest: str = ""
    previous_expire_us: int = 0
    version: int = 1  # bumped by every change; the etag

    @property
    def principal(self) -> str:
        return f"apikey:{self.key_id}"

    @property
    def end_us(self) -> int:
        """When the key stopped (or will stop) working: its expiry, or its revocation if sooner."""
        return min(self.expire_us, self.revoke_us) if self.revoke_us else self.expire_us

    def effective_state(self, at_us: int) -> str:
        """ACTIVE, REVOKED, or EXPIRED once past expire_us."""
        if self.state == ACTIVE and at_us >= self.expire_us:
            return "EXPIRED"
        return self.state

    def to_hash(self) -> dict[str, str]:
        out = {}
        for name, value in asdict(self).items():
            out[name] = json.dumps(value) if isinstance(value, list) else str(value)
        return out

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> ApiKeyRecord:
        values: dict[str, Any] = {}
        text = {k.decode(): v.decode() for k, v in raw.items()}
        for f in fields(cls):
            if f.name not in text:
                continue
            value = text[f.name]
            if f.name == "permissions":
                values[f.name] = json.loads(value)
            elif f.type in ("int",):
                values[f.name] = int(value)
            elif f.type in ("float",):
                values[f.name] = float(value)
            else:
                values[f.name] = value
        return cls(**values)


async def load(redis: Redis, key_id: str) -> ApiKeyRecord | None:
    raw = await redis.hgetall(record_key(key_id))
    return ApiKeyRecord.from_hash(raw) if raw else None

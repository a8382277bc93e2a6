"""Turns an RPC's credentials into a Principal, or refuses with UNAUTHENTICATED and a reason.

Credentials, first found wins:
1. `authorization: Bearer <jwt>`: verified locally against the JWKS (Vault transit public
   keys), cached until it expires; refetched when a token names an unknown kid.
2. `x-api-key: <key>`: shape and checksum first (no lookup), then the key's record (cached
   briefly, dropped at once on a pub/sub invalidation), then a constant-time comparison of
   HMAC-SHA256(pepper, key) with the stored digest(s).
3. The mesh identity: the SPIFFE id of the peer's certificate, for service-to-service calls
   (and an operator calling a service directly). Through the edge the peer is the edge, which
   is never a principal: it forwards the caller's `authorization` or `x-api-key`, and a client
   certificate there only admits the connection.

Nothing here logs or returns a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio
from redis import exceptions as redis_errors

from services.runtime.errors import Unauthenticated
from services.runtime.identity import keys, keystore, tokens
from services.runtime.identity.principal import API_KEY, MESH, TOKEN, Principal
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.runtime.tasks import cancel_and_wait
from services.runtime.vault import API_KEY_PEPPER_PATH, JWT_KEY, KV_MOUNT, TRANSIT_MOUNT, Vault

log = get_logger(__name__)

ISSUER = "devmesh"
LAST_USE_INTERVAL_US = 60_000_000
_CACHE_SIZE = 10_000  # entries per in-process cache (keys, verified keys, verified tokens)


@dataclass(frozen=True)
class AuthSettings:
    audience: str
    edge_identities: frozenset[str]
    mesh_roles: tuple[tuple[str, str], ...]  # (SPIFFE id glob, role), first match wins
    cache_ttl: float
    jwks_refresh: float
    leeway: float = 30.0


def refuse(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


def _credentials(metadata: Sequence[tuple[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in metadata:
        if key in ("authorization", "x-api-key") and key not in found:
            found[key] = value if isinstance(value, str) else ""
    return found


Credential = tuple[tuple[str, str], ...]  # gRPC metadata: the header a caller authenticated with


def peer_spiffe_id(context: aio.ServicerContext) -> str:
    """The SPIFFE id of the peer's verified certificate; "" on plaintext or without one."""
    auth = context.auth_context() or {}
    for value in auth.get("peer_spiffe_id", ()):
        return bytes(value).decode()
    for value in auth.get("x509_subject_alternative_name", ()):
        text = bytes(value).decode()
        if text.startswith("spiffe://"):
            return text
    return ""


class JwksCache:
    """kid -> public key, read from Vault's transit key; refreshed periodically and on demand."""

    MIN_REFETCH_INTERVAL = 1.0  # an unknown kid triggers a refetch at most this often

    def __init__(self, vault: Vault, refresh: float) -> None:
        self._vault = vault
        self._refresh = refresh
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self.on_change: Callable[[], None] = lambda: None

    async def fetch(self) -> None:
        async with self._lock:
            response = await self._vault.call(
                self._vault.client.secrets.transit.read_key, JWT_KEY, mount_point=TRANSIT_MOUNT
            )
            pems = {str(v): k["public_key"] for v, k in response["data"]["keys"].items()}
            fresh = tokens.public_keys(pems)
            changed = fresh.keys() != self._keys.keys()
            self._keys, self._fetched_at = fresh, time.monotonic()
            if changed:
                log.info("auth.jwks_changed", kids=sorted(fresh))
                self.on_change()

    async def key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        found = self._keys.get(kid)
        if found is None and time.monotonic() - self._fetched_at >= self.MIN_REFETCH_INTERVAL:
            await self.fetch()
            found = self._keys.get(kid)
        return found

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.fetch()
            except Exception as exc:  # keep the keys we have; tokens keep verifying
                log.warning("auth.jwks_refresh_failed", error=type(exc).__name__)


class KeyCache:
    """key id -> record (or None: no such key), kept `ttl` seconds, dropped on invalidation."""

    def __init__(self, redis: Redis, ttl: float) -> None:
        self._redis = redis
        self._ttl = ttl
        self._entries: dict[str, tuple[keystore.ApiKeyRecord | None, float]] = {}

    async def get(self, key_id: str) -> keystore.ApiKeyRecord | None:
        entry = self._entries.get(key_id)
        if entry is not None and time.monotonic() - entry[1] < self._ttl:
            return entry[0]
        try:
            record = await keystore.load(self._redis, key_id)
        except redis_errors.RedisError:
            # Stale-if-error: nobody can revoke a key while Redis is down (revoking writes to
            # it), so the last record seen stays the truth until Redis answers again.
            if entry is not None:
                return entry[0]
            raise
        if len(self._entries) >= _CACHE_SIZE:
            self._entries.clear()
        self._entries[key_id] = (record, time.monotonic())
        return record

    def holds(self, record: keystore.ApiKeyRecord) -> bool:
        """Whether `record` is still the fresh cached entry of its key (not reloaded, dropped or
        stale): what was verified against it then still stands."""
        entry = self._entries.get(record.key_id)
        return entry is not None and entry[0] is record and time.monotonic() - entry[1] < self._ttl

    def drop(self, key_id: str | None = None) -> None:
        if key_id is None:
            self._entries.clear()
        else:
            self._entries.pop(key_id, None)

    async def follow_invalidations(self) -> None:
        """Drop entries named on the invalidation channel; everything after a reconnect."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(keystore.INVALIDATE_CHANNEL)
                self.drop()  # whatever changed while we were not subscribed is reloaded
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self.drop(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Entries stay (see `get`); the next subscription drops them all.
                log.warning("auth.invalidation_feed_lost", error=type(exc).__name__)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


class Authenticator:
    def __init__(self, settings: AuthSettings, redis: Redis, vault: Vault) -> None:
        self.settings = settings
        self._redis = redis
        self._vault = vault
        self._pepper = b""
        self.jwks = JwksCache(vault, settings.jwks_refresh)
        self.jwks.on_change = self._verified_clear
        self.keys = KeyCache(redis, settings.cache_ttl)
        self._verified: dict[str, tokens.Claims] = {}
        # presented API key -> (the record it was verified against, until when (µs), principal):
        # a key seen again skips parsing and hashing while that record is still the cached one.
        self._verified_keys: dict[str, tuple[keystore.ApiKeyRecord, int, Principal]] = {}
        self._last_use_written: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _verified_clear(self) -> None:
        self._verified.clear()

    async def start(self) -> None:
        secret = await self._vault.call(
            self._vault.client.secrets.kv.v2.read_secret_version,
            API_KEY_PEPPER_PATH,
            mount_point=KV_MOUNT,
            raise_on_deleted_version=True,
        )
        self._pepper = bytes.fromhex(secret["data"]["data"]["pepper"])
        await self.jwks.fetch()
        self._tasks = [
            asyncio.create_task(self.keys.follow_invalidations(), name="auth-invalidations"),
            asyncio.create_task(self.jwks.keep_fresh(), name="auth-jwks"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    @property
    def pepper(self) -> bytes:
        return self._pepper

    # -- the decision -----------------------------------------------------------------------

    async def authenticate(
        self, context: aio.ServicerContext, metadata: Sequence[tuple[str, Any]]
    ) -> tuple[Principal, Credential]:
        """The caller (from the call's `metadata`, or its peer), and the credential header it
        proved itself with (empty for a mesh identity), which a service may present again when
        it calls another on its behalf."""
        credentials = _credentials(metadata)
        authorization = credentials.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise refuse("CREDENTIALS_MALFORMED", "authorization must be `Bearer <token>`")
            return await self.from_token(token.strip()), (("authorization", authorization),)
        api_key = credentials.get("x-api-key")
        if api_key is not None:
            return await self.from_api_key(api_key.strip()), (("x-api-key", api_key),)
        identity = peer_spiffe_id(context)
        if identity and identity not in self.settings.edge_identities:
            return self.from_mesh(identity), ()
        raise refuse(
            "CREDENTIALS_MISSING",
            "no credentials: send `authorization: Bearer <token>` or `x-api-key: <key>`",
        )

    def from_mesh(self, spiffe_id: str) -> Principal:
        role = next((r for glob, r in self.settings.mesh_roles if fnmatch.fnmatchcase(spiffe_id, glob)), "")
        return Principal(name=spiffe_id, role=role, kind=MESH)

    async def from_api_key(self, presented: str) -> Principal:
        hit = self._verified_keys.get(presented)
        if hit is not None:
            seen, until, known = hit
            now = keystore.now_us()
            if self.keys.holds(seen) and now < until and seen.state == keystore.ACTIVE:
                self._note_use(seen, now)
                return known
        try:
            parsed = keys.parse(presented)
        except keys.MalformedKey:
            raise refuse("API_KEY_MALFORMED", "the x-api-key value is not a devmesh API key") from None
        except keys.BadChecksum:
            raise refuse(
                "API_KEY_BAD_CHECKSUM", "the API key's checksum does not match; was it mistyped?"
            ) from None
        record = await self.keys.get(parsed.key_id)
        now = keystore.now_us()
        valid_until = self._valid_until(record, parsed.key, now) if record is not None else None
        if record is None or valid_until is None:
            raise refuse("API_KEY_UNKNOWN", "unknown API key")
        state = record.effective_state(now)
        if state == keystore.REVOKED:
            raise refuse("API_KEY_REVOKED", f"API key {parsed.key_id} has been revoked")
        if state != keystore.ACTIVE:
            raise refuse("API_KEY_EXPIRED", f"API key {parsed.key_id} has expired")
        self._note_use(record, now)
        principal = Principal(
            name=record.principal,
            role=record.role,
            permissions=tuple(record.permissions),
            kind=API_KEY,
            key_id=record.key_id,
            rate_per_second=record.rate_per_second,
            rate_burst=record.rate_burst,
        )
        if len(self._verified_keys) >= _CACHE_SIZE:
            self._verified_keys.clear()
        self._verified_keys[presented] = (record, valid_until, principal)
        return principal

    def _valid_until(self, record: keystore.ApiKeyRecord, key: str, now: int) -> int | None:
        """Until when (µs) `key` is a secret of `record`, compared in constant time; None if it
        is not one (or is the previous secret past its grace period)."""
        presented = keys.digest(self._pepper, key)
        if hmac.compare_digest(presented, bytes.fromhex(record.digest)):
            return record.expire_us
        previous = bool(record.previous_digest) and hmac.compare_digest(
            presented, bytes.fromhex(record.previous_digest)
        )
        if previous and now < record.previous_expire_us:
            return min(record.expire_us, record.previous_expire_us)
        return None

    def _note_use(self, record: keystore.ApiKeyRecord, now: int) -> None:
        """Record last use at most once a minute per key and replica, off the call path."""
        if now - max(record.last_use_us, self._last_use_written.get(record.key_id, 0)) < LAST_USE_INTERVAL_US:
            return
        self._last_use_written[record.key_id] = now
        task = asyncio.create_task(self._write_last_use(record.key_id, now))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _write_last_use(self, key_id: str, now: int) -> None:
        try:
            await self._redis.hset(keystore.record_key(key_id), "last_use_us", now)
        except Exception as exc:
            log.warning("auth.last_use_not_recorded", key_id=key_id, error=type(exc).__name__)

    async def from_token(self, token: str) -> Principal:
        claims = self._verified.get(token)
        now = time.time()
        if claims is None or now > claims.expires_at + self.settings.leeway:
            try:
                kid = tokens.unverified_kid(token) if claims is None else claims.kid
                claims = tokens.verify(
                    token,
                    await self.jwks.key(kid),
                    issuer=ISSUER,
                    audience=self.settings.audience,
                    now=now,
                    leeway=self.settings.leeway,
                )
            except tokens.TokenError as exc:
                raise refuse(exc.reason, str(exc)) from None
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        rate_per_second, rate_burst = 0.0, 0
        if claims.key_id:  # a token lives no longer than the key it was exchanged for
            record = await self.keys.get(claims.key_id)
            state = record.effective_state(keystore.now_us()) if record is not None else keystore.REVOKED
            if state != keystore.ACTIVE:
                raise refuse("TOKEN_REVOKED", "the API key this token was exchanged for is no longer valid")
            assert record is not None
            rate_per_second, rate_burst = record.rate_per_second, record.rate_burst
        return Principal(
            name=claims.subject,
            role=claims.role,
            permissions=claims.permissions,
            kind=TOKEN,
            key_id=claims.key_id,
            rate_per_second=rate_per_second,
            rate_burst=rate_burst,
        )


__all__ = ["AuthSettings", "Authenticator", "refuse"]

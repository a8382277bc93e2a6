"""The secrets service's domain: every rule, no gRPC. Values and metadata live in Vault
(`vault_store`), access policies and events in Redis.

Every operation checks the caller's access to the secret's name first (`policies.require`),
then looks at the secret, so a refusal reveals nothing about existence.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets as random_source
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.runtime import etags, request_context
from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.runtime.identity.principal import Principal
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis
from services.secrets import events as ev
from services.secrets.events import Events
from services.secrets.policies import ADMIN, MANAGE, READ, Policies
from services.secrets.vault_store import (
    DESTROYED,
    DISABLED,
    ENABLED,
    MetadataConflict,
    SecretMeta,
    SecretStore,
    now_us,
)

log = get_logger(__name__)

DUE = "devmesh:secrets:due"  # zset: secret id -> when the scheduler next has work for it (µs)
LABEL_KEY = string.ascii_lowercase + string.digits + "_.-"
DEFAULT_ALPHABET = string.ascii_letters + string.digits
TEN_YEARS_S = 10 * 365 * 86400
MAX_ATTEMPTS = 8  # writes retried on top of a concurrent one before CONTENTION


@dataclass(frozen=True)
class Rotation:
    interval_s: float
    promotion_delay_s: float = 0.0
    generator: str = "random"  # or "manual"
    length: int = 32
    alphabet: str = DEFAULT_ALPHABET

    def to_json(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "promotion_delay_s": self.promotion_delay_s,
                "generator": self.generator, "length": self.length, "alphabet": self.alphabet}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rotation:
        return cls(**data)

    def problems(self, field: str) -> list[FieldViolation]:
        found = []
        if not 1 <= self.interval_s <= TEN_YEARS_S:
            found.append(FieldViolation(f"{field}.interval", "must be between 1 second and 10 years"))
        if not 0 <= self.promotion_delay_s <= self.interval_s:
            found.append(FieldViolation(f"{field}.promotion_delay", "must be between 0 and the interval"))
        if self.generator == "random":
            if not 8 <= self.length <= 4096:
                found.append(FieldViolation(f"{field}.random.length", "must be between 8 and 4096"))
            distinct = set(self.alphabet)
            if (
                not 2 <= len(distinct) <= 256
                or len(distinct) != len(self.alphabet)
                or not all(c.isascii() and c.isprintable() for c in self.alphabet)
            ):
                found.append(
                    FieldViolation(f"{field}.random.alphabet", "2 to 256 distinct printable ASCII characters")
                )
        return found

    def generate(self) -> bytes:
        return "".join(random_source.choice(self.alphabet) for _ in range(self.length)).encode()


def validate_labels(labels: dict[str, str], field: str = "secret.labels") -> list[FieldViolation]:
    found = []
    if len(labels) > 16:
        found.append(FieldViolation(field, "at most 16 labels"))
    for key, value in labels.items():
        if not (1 <= len(key) <= 63 and key[0].isalpha() and key[0].islower() and set(key) <= set(LABEL_KEY)):
            found.append(FieldViolation(f"{field}[{key!r}]", "keys match [a-z][a-z0-9_.-]{0,62}"))
        if len(value) > 128:
            found.append(FieldViolation(f"{field}[{key!r}]", "values are at most 128 characters"))
    return found


class SecretsDomain:
    def __init__(
        self, store: SecretStore, policies: Policies, events: Events, redis: Redis, *, max_payload: int
    ) -> None:
        self.store = store
        self.policies = policies
        self.events = events
        self._redis = redis
        self._max_payload = max_payload

    # -- secrets ------------------------------------------------------------------------------

    async def create(
        self, caller: Principal, sid: str, labels: dict[str, str], rotation: Rotation | None
    ) -> SecretMeta:
        await self.policies.require(caller, sid, ADMIN)
        problems = validate_labels(labels) + (rotation.problems("secret.rotation") if rotation else [])
        if problems:
            raise InvalidArgument("the secret is invalid", problems)
        now = now_us()
        new = SecretMeta(sid, labels=labels, create_us=now)
        self._set_rotation(new, rotation, now)
        for attempt in range(2):
            try:
                meta = await self.store.write_meta(new)  # metadata_version 0: only if it does not exist
                break
            except MetadataConflict:
                # The id of a secret whose delete died halfway is free once that delete is done.
                if attempt or not await self._finish_interrupted_delete(sid):
                    raise AlreadyExists(f"secret {sid!r} already exists", resource_type="Secret",
                                        resource_name=f"secrets/{sid}") from None  # fmt: skip
        await self.schedule(meta)
        return meta

    @staticmethod
    def _set_rotation(meta: SecretMeta, rotation: Rotation | None, now: int) -> None:
        meta.rotation = rotation.to_json() if rotation else None
        meta.next_rotation_us = now + int(rotation.interval_s * 1_000_000) if rotation else 0

    async def get(self, caller: Principal, sid: str) -> SecretMeta:
        await self.policies.require(caller, sid, READ)
        return await self.store.read(sid)

    async def list(
        self, caller: Principal, prefix: str, after: str | None, limit: int
    ) -> tuple[list[SecretMeta], str | None]:
        """Secrets the caller may read, by id after `after`; and the id the next page starts
        after (None: this is the last page). A secret deleted while the page is read is left
        out of it, and may leave the page short."""
        candidates = [
            sid
            for sid in await self.store.list_ids()
            if sid.startswith(prefix) and (after is None or sid > after)
        ]
        readable = await self.policies.readable(caller, candidates)
        page = readable[:limit]
        found = await asyncio.gather(*(self._read_if_present(sid) for sid in page))
        return [meta for meta in found if meta is not None], page[-1] if len(readable) > limit else None

    async def _read_if_present(self, sid: str) -> SecretMeta | None:
        try:
            return await self.store.read(sid)
        except NotFound:
            return None

    async def update(
        self, caller: Principal, sid: str, labels: dict[str, str] | None, rotation: Rotation | None,
        set_rotation: bool, etag: str,
    ) -> SecretMeta:  # fmt: skip
        await self.policies.require(caller, sid, ADMIN)
        problems = (validate_labels(labels) if labels is not None else []) + (
            rotation.problems("secret.rotation") if rotation else []
        )
        if problems:
            raise InvalidArgument("the secret is invalid", problems)

        def change(meta: SecretMeta) -> None:
            if labels is not None:
                meta.labels = labels
            if set_rotation:
                self._set_rotation(meta, rotation, now_us())

        meta = await self._modify(sid, change, etag)
        await self.schedule(meta)
        return meta

    async def _modify(self, sid: str, change: Callable[[SecretMeta], None], etag: str = "") -> SecretMeta:
        """Read the metadata, `change` it and write it back, as one check-and-set: when another
        write lands in between, read again and apply `change` on top of it. With an `etag`, a
        secret changed since (its metadata or its versions) is ABORTED instead."""
        for _ in range(MAX_ATTEMPTS):
            meta = await self.store.read(sid)
            etags.check(etag, meta.etag, f"secret {sid!r}")
            change(meta)
            try:
                return await self.store.write_meta(meta)
            except MetadataConflict:
                continue
        raise _contention(sid)

    async def delete(self, caller: Principal, sid: str, etag: str) -> None:
        """Mark the secret deleted, then remove it. The mark is a check-and-set: the etag holds
        until the moment nobody can change the secret any more, which Vault's own delete (no
        check-and-set) cannot promise."""
        await self.policies.require(caller, sid, ADMIN)

        def mark(meta: SecretMeta) -> None:
            meta.deleting_us = now_us()

        try:
            await self._modify(sid, mark, etag)
        except NotFound:  # no secret, or another delete has begun: to everyone else it is gone
            with contextlib.suppress(Aborted):  # that delete is still at work and will finish
                await self._finish_interrupted_delete(sid)
            raise
        await self._remove(sid)

    async def _remove(self, sid: str) -> None:
        await self.store.delete(sid)
        await self._redis.zrem(DUE, sid)
        await self.events.publish(ev.DELETED, sid)

    async def _finish_interrupted_delete(self, sid: str) -> bool:
        """Remove `sid` if a delete marked it and died before removing it; whether it is gone.
        ABORTED while its delete is still at work: removing it now, then creating the id anew,
        would let that delete's removal take the new secret with it."""
        try:
            meta = await self.store.read(sid, deleting=True)
        except NotFound:
            return True
        if not meta.deleting_us:
            return False
        if not meta.delete_interrupted:
            raise Aborted(f"secret {sid!r} is being deleted; retry", reason="SECRET_BEING_DELETED")
        await self._remove(sid)
        return True

    # -- versions -----------------------------------------------------------------------------

    async def add_version(
        self, caller: Principal, sid: str, data: bytes, expected: int | None
    ) -> tuple[SecretMeta, int]:
        """Add `data` as a version; returns the secret (with that version) and its number."""
        await self.policies.require(caller, sid, MANAGE)
        self._check_payload(data, "payload.data")
        for _ in range(MAX_ATTEMPTS):
            meta = await self.store.read(sid)
            try:
                version = await self.store.add_version(
                    sid, data, meta.newest if expected is None else expected
                )
                break
            except Aborted:
                # Without an expectation the writer only wants its value added: try again on top.
                if expected is not None:
                    raise
        else:
            raise _contention(sid)
        meta.versions[version.number] = version
        if meta.pending == version.number:  # a rotation recorded this number and never added it
            meta = await self._settle(sid, version.number)
        request_context.note_audit(version=version.number)
        await self.events.publish(ev.VERSION_ADDED, sid, version.number)
        return meta, version.number

    def _check_payload(self, data: bytes, field: str) -> None:
        if not data:
            raise InvalidArgument.for_field(field, "must not be empty")
        if len(data) > self._max_payload:
            raise InvalidArgument.for_field(field, f"at most {self._max_payload} bytes")

    async def access(self, caller: Principal, sid: str, version: int | None) -> tuple[int, bytes]:
        await self.policies.require(caller, sid, READ)
        if version is None:
            # One Vault call when Vault's newest version is the latest (no rotation pending).
            newest = await self.store.read_latest(sid)
            if newest is not None and str(newest[0]) != newest[2].get("pending"):
                request_context.note_audit(version=newest[0])
                return newest[0], newest[1]
        meta = await self.store.read(sid)
        number = meta.latest if version is None else version
        request_context.note_audit(version=number or "latest")
        if number == 0:
            raise NotFound(f"secret {sid!r} has no enabled version", resource_type="SecretVersion",
                           resource_name=f"secrets/{sid}/versions/latest")  # fmt: skip
        found = meta.versions.get(number)
        if found is None:
            raise NotFound(f"secret {sid!r} has no version {number}", resource_type="SecretVersion",
                           resource_name=f"secrets/{sid}/versions/{number}")  # fmt: skip
        if found.state != ENABLED:
            raise FailedPrecondition(
                f"version {number} of {sid!r} is {found.state.lower()}", reason=f"VERSION_{found.state}"
            )
        return number, await self.store.read_version(sid, number)

    async def versions(self, caller: Principal, sid: str) -> SecretMeta:
        await self.policies.require(caller, sid, READ)
        return await self.store.read(sid)

    async def change_version(self, caller: Principal, sid: str, number: int, state: str) -> SecretMeta:
        """Move a version to ENABLED, DISABLED or DESTROYED."""
        await self.policies.require(caller, sid, MANAGE)
        meta = await self.store.read(sid)
        found = meta.versions.get(number)
        if found is None:
            raise NotFound(f"secret {sid!r} has no version {number}", resource_type="SecretVersion",
                           resource_name=f"secrets/{sid}/versions/{number}")  # fmt: skip
        if found.state == DESTROYED and state != DESTROYED:
            raise FailedPrecondition(f"version {number} of {sid!r} is destroyed", reason="VERSION_DESTROYED")
        if state != found.state:
            action = {
                ENABLED: self.store.enable,
                DISABLED: self.store.disable,
                DESTROYED: self.store.destroy,
            }[state]
            await action(sid, number)
            await self.events.publish(ev.VERSION_CHANGED, sid, number)
        request_context.note_audit(version=number, state=state)
        meta.versions[number].state = state
        return meta

    # -- rotation -----------------------------------------------------------------------------

    async def rotate(self, caller: Principal, sid: str, promote: bool, payload: bytes) -> SecretMeta:
        await self.policies.require(caller, sid, MANAGE)
        meta = await self.store.read(sid)
        if meta.rotation is None:
            raise FailedPrecondition(f"secret {sid!r} has no rotation policy", reason="NO_ROTATION_POLICY")
        if meta.pending:
            raise FailedPrecondition(
                f"version {meta.pending} of {sid!r} is still pending; it is promoted at its promote_time",
                reason="ROTATION_PENDING",
            )
        rotation = Rotation.from_json(meta.rotation)
        if rotation.generator == "manual":
            if not payload:
                raise FailedPrecondition(f"secret {sid!r} rotates by hand: send the new value as payload",
                                         reason="PAYLOAD_REQUIRED")  # fmt: skip
            self._check_payload(payload, "payload.data")
            value = payload
        else:
            value = rotation.generate()
        return await self._rotate(meta, rotation, value, promote)

    async def _rotate(self, meta: SecretMeta, rotation: Rotation, value: bytes, promote: bool) -> SecretMeta:
        """Rotate in an order that no crash can make unsafe: first record the version about to
        be added as pending (a check-and-set on `meta`: of two rotations decided on the same
        state, one goes ahead), then add it, then promote it at once unless it waits for its
        promotion delay. A version is never the latest before its time; if it is never added
        (a crash, Vault failing), the scheduler starts the rotation over (`run_due`)."""
        number, now = meta.newest + 1, now_us()
        delay = 0 if promote else int(rotation.promotion_delay_s * 1_000_000)
        meta.next_rotation_us = now + int(rotation.interval_s * 1_000_000)
        meta.pending, meta.promote_us = number, now + delay
        meta = await self.store.write_meta(meta)
        try:
            meta.versions[number] = await self.store.add_version(meta.id, value, number - 1)
        except Aborted:  # a caller added version `number` first: theirs, so not pending
            await self._settle(meta.id, number)
            raise
        request_context.note_audit(version=number)
        if delay:
            await self.events.publish(ev.ROTATION_STARTED, meta.id, number)
        else:
            meta = await self._settle(meta.id, number)
            await self.events.publish(ev.ROTATED, meta.id, number)
        await self.schedule(meta)
        return meta

    async def _settle(self, sid: str, number: int) -> SecretMeta:
        """Version `number` is no longer pending (promoted, or not a rotation's after all)."""

        def settle(meta: SecretMeta) -> None:
            if meta.pending == number:
                meta.pending, meta.promote_us = 0, 0

        return await self._modify(sid, settle)

    async def run_due(self, sid: str, due_us: int) -> str:
        """The scheduler's work for one secret whose time `due_us` came; returns what it did."""
        try:
            meta = await self.store.read(sid)
        except NotFound:
            await self._redis.zrem(DUE, sid)
            return "gone"
        now = now_us()
        if meta.due_us != due_us or not due_us or due_us > now:
            await self.schedule(meta)  # another replica already acted, or the policy changed
            return "stale"
        # The writes below check-and-set the metadata read above: if another replica or a caller
        # changed it meanwhile, what was decided here no longer holds; reschedule from the new state.
        if meta.rotation_failed:
            log.warning("secrets.rotation_restarted", secret=sid, version=meta.pending)
            meta.pending, meta.promote_us = 0, 0  # and rotate below, whatever next_rotation_us says
        elif meta.pending and meta.promote_us <= now:
            version, meta.pending, meta.promote_us = meta.pending, 0, 0
            try:
                meta = await self.store.write_meta(meta)
            except MetadataConflict:
                return await self._reschedule(sid)
            await self.events.publish(ev.ROTATED, sid, version)
            await self.schedule(meta)
            return "promoted"
        assert meta.rotation is not None
        rotation = Rotation.from_json(meta.rotation)
        if rotation.generator == "manual":
            meta.next_rotation_us = now + int(rotation.interval_s * 1_000_000)
            try:
                meta = await self.store.write_meta(meta)
            except MetadataConflict:
                return await self._reschedule(sid)
            await self.events.publish(ev.ROTATION_DUE, sid)
            await self.schedule(meta)
            return "reminded"
        if meta.pending:  # a rotation is still pending: the next one waits for its promotion
            return "waiting"
        try:
            await self._rotate(meta, rotation, rotation.generate(), promote=False)
        except MetadataConflict:
            return await self._reschedule(sid)
        return "rotated"

    async def _reschedule(self, sid: str) -> str:
        try:
            meta = await self.store.read(sid)
        except NotFound:
            await self._redis.zrem(DUE, sid)
            return "gone"
        await self.schedule(meta)
        return "stale"

    async def schedule(self, meta: SecretMeta) -> None:
        if meta.due_us:
            await self._redis.zadd(DUE, {meta.id: meta.due_us})
        else:
            await self._redis.zrem(DUE, meta.id)


def _contention(sid: str) -> Aborted:
    return Aborted(f"secret {sid!r} is changing too fast; retry", reason="CONTENTION")

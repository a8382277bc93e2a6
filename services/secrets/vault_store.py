"""Secrets in Vault KV v2 under `devmesh-kv/secrets/<id>`: values in versions, everything else
in the secret's custom metadata. Vault is the only store: there is no second store to
disagree with, so nothing is ever written halfway.

Custom metadata (strings, as KV v2 requires):
    labels         JSON object
    rotation       JSON of the rotation policy, or absent
    pending        the version a rotation added and has not promoted, or absent
    promote_us     when that pending version becomes the latest
    next_rotation_us  when the next rotation is due
    create_us      creation time
    revision       bumped on every metadata change (the etag derives from it and the versions)
    deleting_us    set by a delete that has checked its etag: from then on the secret is gone
                   for every reader and writer, though Vault still holds it until the delete ends

Every metadata write is a check-and-set on OpenBao's `current_metadata_version` (its
`metadata_cas`), so two writers that read the same metadata cannot both write it: the second
gets `MetadataConflict` and nothing it read goes back over the first one's change. (Metadata
check-and-set is OpenBao's: HashiCorp Vault lacks it.)

Version states map onto KV v2's: enabled, disabled (soft-deleted), destroyed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hvac import exceptions as hvac_errors

from services.runtime import etags
from services.runtime.errors import Aborted, NotFound
from services.runtime.vault import KV_MOUNT, Vault

PATH = "secrets"
# Rotations and deletes take two Vault writes: a mark in the metadata, then the act. A mark
# this old was left by one that died between the two (its Vault calls time out in seconds);
# younger, it belongs to one still at work, which nobody else may finish or undo.
INTERRUPTED_AFTER_US = 60 * 1_000_000
ENABLED, DISABLED, DESTROYED = "ENABLED", "DISABLED", "DESTROYED"


def now_us() -> int:
    return int(time.time() * 1_000_000)


def _time_us(text: str) -> int:
    if not text:
        return 0
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


@dataclass
class Version:
    number: int
    state: str
    create_us: int


@dataclass
class SecretMeta:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    rotation: dict[str, Any] | None = None
    pending: int = 0
    promote_us: int = 0
    next_rotation_us: int = 0
    create_us: int = 0
    revision: int = 0
    versions: dict[int, Version] = field(default_factory=dict)  # from Vault; not custom metadata
    metadata_version: int = 0  # Vault's, as read: what the next write checks; 0 creates
    deleting_us: int = 0

    @property
    def etag(self) -> str:
        """Changes with every metadata write (the revision) and with every version added,
        disabled, enabled or destroyed, which leave the revision as it is."""
        states = ",".join(f"{n}:{v.state}" for n, v in sorted(self.versions.items()))
        digest = hashlib.blake2s(states.encode(), digest_size=5).hexdigest()
        return etags.of(self.revision, f"v{self.newest}", digest)

    @property
    def newest(self) -> int:
        return max(self.versions, default=0)

    @property
    def latest(self) -> int:
        """The newest enabled version that is not pending rotation; 0 when none."""
        enabled = [n for n, v in self.versions.items() if v.state == ENABLED and n != self.pending]
        return max(enabled, default=0)

    @property
    def rotating(self) -> bool:
        """A rotation recorded its version as pending and has not added it yet."""
        return bool(self.pending) and self.pending not in self.versions

    @property
    def rotation_failed(self) -> bool:
        """The version a rotation recorded was still not added a grace period after it was due."""
        return self.rotating and now_us() >= self.promote_us + INTERRUPTED_AFTER_US

    @property
    def delete_interrupted(self) -> bool:
        """A delete marked the secret and died before removing it."""
        return bool(self.deleting_us) and now_us() >= self.deleting_us + INTERRUPTED_AFTER_US

    @property
    def due_us(self) -> int:
        """When the scheduler has something to do for this secret; 0: never. A version still
        being added by its rotation gets a grace period before the rotation counts as failed."""
        pending = 0
        if self.pending:
            pending = self.promote_us + (INTERRUPTED_AFTER_US if self.rotating else 0)
        times = [t for t in (pending, self.next_rotation_us) if t]
        return min(times, default=0)

    def custom(self) -> dict[str, str]:
        out = {"labels": json.dumps(self.labels, sort_keys=True), "create_us": str(self.create_us),
               "revision": str(self.revision)}  # fmt: skip
        if self.rotation is not None:
            out["rotation"] = json.dumps(self.rotation, sort_keys=True)
        for name in ("pending", "promote_us", "next_rotation_us", "deleting_us"):
            if getattr(self, name):
                out[name] = str(getattr(self, name))
        return out

    @classmethod
    def from_vault(cls, sid: str, data: dict[str, Any]) -> SecretMeta:
        custom = data.get("custom_metadata") or {}
        versions = {}
        for number, info in (data.get("versions") or {}).items():
            state = DESTROYED if info.get("destroyed") else DISABLED if info.get("deletion_time") else ENABLED
            versions[int(number)] = Version(int(number), state, _time_us(info.get("created_time", "")))
        return cls(
            id=sid,
            labels=json.loads(custom.get("labels", "{}")),
            rotation=json.loads(custom["rotation"]) if custom.get("rotation") else None,
            pending=int(custom.get("pending", 0)),
            promote_us=int(custom.get("promote_us", 0)),
            next_rotation_us=int(custom.get("next_rotation_us", 0)),
            create_us=int(custom.get("create_us", 0)),
            revision=int(custom.get("revision", 0)),
            versions=versions,
            metadata_version=int(data.get("current_metadata_version", 0)),
            deleting_us=int(custom.get("deleting_us", 0)),
        )


class MetadataConflict(Aborted):
    """The metadata changed (or was created or deleted) since it was read; nothing was written."""

    def __init__(self, sid: str) -> None:
        super().__init__(f"secret {sid!r} changed meanwhile; read it again", reason="ETAG_MISMATCH")


def _not_found(sid: str) -> NotFound:
    return NotFound(f"secret {sid!r} does not exist", resource_type="Secret", resource_name=f"secrets/{sid}")


class SecretStore:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._kv = vault.client.secrets.kv.v2

    def _path(self, sid: str) -> str:
        return f"{PATH}/{sid}"

    async def read(self, sid: str, *, deleting: bool = False) -> SecretMeta:
        """The secret's metadata; NOT_FOUND if there is none, or if a delete has begun (unless
        `deleting`: what a delete reads to finish one)."""
        try:
            response = await self._vault.call(
                self._kv.read_secret_metadata, self._path(sid), mount_point=KV_MOUNT
            )
        except hvac_errors.InvalidPath:
            raise _not_found(sid) from None
        meta = SecretMeta.from_vault(sid, response["data"])
        if meta.deleting_us and not deleting:
            raise _not_found(sid)
        return meta

    async def write_meta(self, meta: SecretMeta) -> SecretMeta:
        """Write `meta`'s custom metadata as revision+1, provided nobody wrote it since `meta` was
        read (a new secret's `metadata_version` is 0: then only if it does not exist). Returns
        what was written; raises `MetadataConflict` otherwise."""
        written = replace(meta, revision=meta.revision + 1, metadata_version=meta.metadata_version + 1)
        body = {"custom_metadata": written.custom(), "metadata_cas": meta.metadata_version}
        url = f"/v1/{KV_MOUNT}/metadata/{self._path(meta.id)}"
        try:
            await self._vault.call(self._vault.client.adapter.post, url, json=body)
        except hvac_errors.InvalidRequest as exc:
            # "metadata check-and-set parameter does not match", or "metadata_cas must be 0 when
            # creating new metadata" when the secret was deleted meanwhile.
            if "check-and-set" in str(exc) or "metadata_cas" in str(exc):
                raise MetadataConflict(meta.id) from None
            raise
        return written

    async def list_ids(self) -> list[str]:
        try:
            response = await self._vault.call(self._kv.list_secrets, PATH, mount_point=KV_MOUNT)
        except hvac_errors.InvalidPath:
            return []
        return sorted(k for k in response["data"]["keys"] if not k.endswith("/"))

    async def add_version(self, sid: str, data: bytes, cas: int) -> Version:
        """Write a version with check-and-set `cas` (the version Vault must have as newest; 0
        for none); ABORTED when another writer got there first. Returns the new version, as
        Vault's answer describes it."""
        try:
            response = await self._vault.call(
                self._kv.create_or_update_secret,
                self._path(sid),
                {"data": base64.b64encode(data).decode()},
                cas=cas,
                mount_point=KV_MOUNT,
            )
        except hvac_errors.InvalidRequest as exc:
            if "check-and-set" in str(exc):
                raise Aborted(
                    f"another version of {sid!r} was added since version {cas}; nothing was written",
                    reason="VERSION_CONFLICT",
                ) from None
            raise
        written = response["data"]
        return Version(int(written["version"]), ENABLED, _time_us(written.get("created_time", "")))

    async def read_latest(self, sid: str) -> tuple[int, bytes, dict[str, str]] | None:
        """Vault's newest version in one call: (number, value, custom metadata); None when there
        is none to read (no such secret, no version, or the newest is disabled or destroyed)."""
        try:
            response = await self._vault.call(
                self._kv.read_secret_version,
                self._path(sid),
                mount_point=KV_MOUNT,
                raise_on_deleted_version=True,
            )
        except hvac_errors.InvalidPath:
            return None
        data = response["data"]
        if not data.get("data") or "data" not in data["data"]:
            return None
        meta = data["metadata"]
        custom = meta.get("custom_metadata") or {}
        if custom.get("deleting_us"):
            return None
        return int(meta["version"]), base64.b64decode(data["data"]["data"]), custom

    async def read_version(self, sid: str, version: int) -> bytes:
        response = await self._vault.call(
            self._kv.read_secret_version,
            self._path(sid),
            version=version,
            mount_point=KV_MOUNT,
            raise_on_deleted_version=True,
        )
        return base64.b64decode(response["data"]["data"]["data"])

    async def disable(self, sid: str, version: int) -> None:
        await self._vault.call(
            self._kv.delete_secret_versions, self._path(sid), [version], mount_point=KV_MOUNT
        )

    async def enable(self, sid: str, version: int) -> None:
        await self._vault.call(
            self._kv.undelete_secret_versions, self._path(sid), [version], mount_point=KV_MOUNT
        )

    async def destroy(self, sid: str, version: int) -> None:
        await self._vault.call(
            self._kv.destroy_secret_versions, self._path(sid), [version], mount_point=KV_MOUNT
        )

    async def delete(self, sid: str) -> None:
        await self._vault.call(
            self._kv.delete_metadata_and_all_versions, self._path(sid), mount_point=KV_MOUNT
        )

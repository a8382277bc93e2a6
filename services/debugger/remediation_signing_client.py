"""Webhook signing keys, read from the secrets service as the debugger itself.

The debugger's mesh identity needs READ on each subscription's signing secret (an access
policy). A key is kept in memory for `ttl_s` seconds, then read again, so a rotated key is
used within a minute; through a secrets outage the last key keeps signing, but a refusal
(access revoked, secret gone) stops it at once. A key is never logged, returned or written
anywhere but into the queued delivery that it signs.
"""

from __future__ import annotations

import time

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

TIMEOUT_S = 3.0
# After a failed read, announcements do not ask again for this long: a secrets outage must not
# add a timeout to every remediation transition.
FAILURE_PAUSE_S = 15.0
# Errors that say the secrets service is away, not that the debugger may no longer read the key.
_OUTAGES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class SigningKeysFromSecrets:
    """The latest version of a `secrets/{secret}`, cached for a short while."""

    def __init__(self, secrets: PeerChannel, *, ttl_s: float = 60.0) -> None:
        self._secrets = secrets
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[str, float]] = {}
        self._failed: dict[str, float] = {}

    async def key(self, secret: str, *, fresh: bool = False) -> str:
        """The key; FAILED_PRECONDITION (naming the secret, never its value) when unreadable.
        `fresh` reads it now (a subscription being created); otherwise a key read in the last
        `ttl_s` is used, and one that was just refused is not asked for again for a while (a
        key read before is used meanwhile)."""
        now = time.monotonic()
        cached = self._cache.get(secret)
        if not fresh:
            if cached is not None and now - cached[1] < self._ttl_s:
                return cached[0]
            if now - self._failed.get(secret, -FAILURE_PAUSE_S) < FAILURE_PAUSE_S:
                if cached is not None:  # kept only through an outage
                    return cached[0]
                raise FailedPrecondition(
                    f"the signing secret {secret} could not be read moments ago",
                    reason="SIGNING_SECRET_UNREADABLE",
                )
        try:
            return await self._read(secret)
        except FailedPrecondition as error:
            self._failed[secret] = time.monotonic()
            if cached is not None and not fresh and error.metadata.get("code") in _OUTAGES:
                return cached[0]  # the last key keeps signing while the secrets service is away
            if error.metadata.get("code") not in _OUTAGES:
                self._cache.pop(secret, None)  # refused (access revoked, secret gone): stop signing
            raise

    async def _read(self, secret: str) -> str:
        stub = secrets_pb2_grpc.SecretsServiceStub(self._secrets.channel())
        try:
            response = await stub.AccessSecretVersion(
                secrets_pb2.AccessSecretVersionRequest(name=f"{secret}/versions/latest"), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise FailedPrecondition(
                f"the debugger cannot read the signing secret {secret}: {error.code().name} "
                "(grant the debugger's identity READ on it)",
                reason="SIGNING_SECRET_UNREADABLE",
                metadata={"secret": secret, "code": error.code().name},
            ) from None
        value: str = response.payload.data.decode(errors="replace").strip()
        if not value:
            raise FailedPrecondition(
                f"the signing secret {secret} is empty", reason="SIGNING_SECRET_UNREADABLE"
            )
        self._cache[secret] = (value, time.monotonic())
        return value

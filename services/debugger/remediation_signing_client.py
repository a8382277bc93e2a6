"""Webhook signing keys, read from the secrets service as the debugger itself.

The debugger's mesh identity needs READ on each subscription's signing secret (an access
policy). A key is kept in memory for `ttl_s` seconds, then read again, so a rotated key is
used within a minute; it is never logged, returned or written anywhere but into the queued
delivery that it signs.
"""

from __future__ import annotations

import time

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

TIMEOUT_S = 5.0


class SigningKeysFromSecrets:
    """The latest version of a `secrets/{secret}`, cached for a short while."""

    def __init__(self, secrets: PeerChannel, *, ttl_s: float = 60.0) -> None:
        self._secrets = secrets
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[str, float]] = {}

    async def key(self, secret: str) -> str:
        """The key; FAILED_PRECONDITION (naming the secret, never its value) when unreadable."""
        cached = self._cache.get(secret)
        if cached is not None and time.monotonic() - cached[1] < self._ttl_s:
            return cached[0]
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

"""The model provider's API key, read from the secrets service as the debugger itself.

The debugger's mesh identity (its certificate) needs READ on the secret in an access policy.
The key is kept in memory for `ttl` seconds, then read again (a rotated key is picked up);
it is never logged, stored or cached in Redis.
"""

from __future__ import annotations

import time

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.errors import Unavailable
from services.runtime.peers import PeerChannel

TIMEOUT_S = 5.0


class ApiKeyFromSecrets:
    """Reads `secrets/{secret}`'s latest version on demand."""

    def __init__(self, secrets: PeerChannel, secret: str, *, ttl_s: float = 300.0) -> None:
        self._secrets = secrets
        self._name = f"{secret}/versions/latest"
        self._ttl_s = ttl_s
        self._value = ""
        self._read_at = 0.0

    async def __call__(self) -> str:
        if self._value and time.monotonic() - self._read_at < self._ttl_s:
            return self._value
        stub = secrets_pb2_grpc.SecretsServiceStub(self._secrets.channel())
        try:
            response = await stub.AccessSecretVersion(
                secrets_pb2.AccessSecretVersionRequest(name=self._name), timeout=TIMEOUT_S
            )
        except Exception:
            raise Unavailable(
                "the model provider's API key could not be read from the secrets service"
            ) from None
        self._value, self._read_at = response.payload.data.decode().strip(), time.monotonic()
        return self._value

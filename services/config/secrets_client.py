"""Reading secret references' values from the secrets service, over gRPC, *as the caller*.

ResolveConfig with `resolve_secrets` replaces each reference with the secret's latest value,
read with the caller's own API key or token presented again, so a caller sees only the
secrets its access policies allow. A reference that cannot be read stays, with the reason:
`{"$secret": "...", "redacted": "SECRET_ACCESS_DENIED"}`. Resolved values are never cached
here: they depend on who asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.config import secret_refs
from services.runtime.errors import reason_of
from services.runtime.peers import PeerChannel

TIMEOUT_S = 5.0


def _reason(error: grpc.aio.AioRpcError) -> str:
    code = error.code()
    unavailable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return reason_of(error.trailing_metadata()) or (
        "SECRETS_UNAVAILABLE" if code in unavailable else code.name
    )


class SecretResolver:
    def __init__(self, secrets: PeerChannel) -> None:
        self._secrets = secrets

    async def resolve(
        self, document: Any, credentials: Sequence[tuple[str, str]]
    ) -> tuple[Any, list[secret_refs.Resolution]]:
        references = secret_refs.find(document)
        if not references:
            return document, []
        if not credentials:  # a mesh identity cannot be presented on someone else's behalf
            return self._redact_all(document, references, "CREDENTIALS_NOT_FORWARDABLE")
        stub = secrets_pb2_grpc.SecretsServiceStub(self._secrets.channel())
        results = await asyncio.gather(*(self._read(stub, ref, credentials) for _, ref in references))
        resolutions = []
        for (path, ref), (value, version, reason) in zip(references, results, strict=True):
            if reason:
                document = secret_refs.redacted(document, path, ref, reason)
            else:
                document = secret_refs.replace(document, path, value)
            resolutions.append(secret_refs.Resolution(path, ref, version, reason))
        return document, resolutions

    def _redact_all(
        self, document: Any, references: list[tuple[str, str]], reason: str
    ) -> tuple[Any, list[secret_refs.Resolution]]:
        for path, ref in references:
            document = secret_refs.redacted(document, path, ref, reason)
        return document, [secret_refs.Resolution(path, ref, "", reason) for path, ref in references]

    async def _read(
        self,
        stub: secrets_pb2_grpc.SecretsServiceStub,
        reference: str,
        credentials: Sequence[tuple[str, str]],
    ) -> tuple[Any, str, str]:
        """(value, version name, "") or (None, "", reason)."""
        secret, _, field = reference.partition("#")
        try:
            response = await stub.AccessSecretVersion(
                secrets_pb2.AccessSecretVersionRequest(name=f"secrets/{secret}/versions/latest"),
                metadata=tuple(credentials),
                timeout=TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            return None, "", _reason(error)
        data = response.payload.data
        if not field:
            try:
                return data.decode(), response.name, ""
            except UnicodeDecodeError:
                return None, "", "NOT_TEXT"
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None, "", "NOT_JSON"
        if not isinstance(value, dict) or field not in value:
            return None, "", "FIELD_NOT_FOUND"
        return value[field], response.name, ""

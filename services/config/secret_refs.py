"""Secret references in configuration: `{"$secret": "<secret id>[#<field>]"}`.

ResolveConfig with `resolve_secrets` replaces each reference with the secret's latest value,
read from the secrets service over gRPC *as the caller* (its API key or token is presented
again), so a caller sees only the secrets its access policies allow. A reference that cannot
be read stays, with the reason: `{"$secret": "...", "redacted": "SECRET_ACCESS_DENIED"}`.
Resolved values are never cached here: they depend on who asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.peers import PeerChannel

REF_KEY = "$secret"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resolution:
    path: str
    reference: str
    version: str = ""
    redacted_reason: str = ""


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def find(document: Any, path: str = "") -> list[tuple[str, str]]:
    """(JSON pointer, reference) of every `{"$secret": "..."}` object, in pointer order."""
    if isinstance(document, dict):
        if set(document) == {REF_KEY} and isinstance(document[REF_KEY], str):
            return [(path, document[REF_KEY])]
        return [r for k in sorted(document) for r in find(document[k], f"{path}/{_escape(k)}")]
    if isinstance(document, list):
        return [r for i, item in enumerate(document) for r in find(item, f"{path}/{i}")]
    return []


def _replace(document: Any, path: str, value: Any) -> Any:
    if not path:
        return value
    head, _, rest = path[1:].partition("/")
    key = head.replace("~1", "/").replace("~0", "~")
    if isinstance(document, list):
        copy = list(document)
        copy[int(key)] = _replace(copy[int(key)], "/" + rest if rest else "", value)
        return copy
    return {**document, key: _replace(document[key], "/" + rest if rest else "", value)}


def _reason(error: grpc.aio.AioRpcError) -> str:
    for key, raw in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(raw, bytes):
            for packed in status_pb2.Status.FromString(raw).details:
                info = error_details_pb2.ErrorInfo()
                if packed.Unpack(info):
                    return str(info.reason)
    code = error.code()
    return (
        "SECRETS_UNAVAILABLE"
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        else code.name
    )


class SecretResolver:
    def __init__(self, secrets: PeerChannel) -> None:
        self._secrets = secrets

    async def resolve(
        self, document: Any, credentials: Sequence[tuple[str, str]]
    ) -> tuple[Any, list[Resolution]]:
        references = find(document)
        if not references:
            return document, []
        if not credentials:  # a mesh identity cannot be presented on someone else's behalf
            return self._redact_all(document, references, "CREDENTIALS_NOT_FORWARDABLE")
        stub = secrets_pb2_grpc.SecretsServiceStub(self._secrets.channel())
        results = await asyncio.gather(*(self._read(stub, ref, credentials) for _, ref in references))
        resolutions = []
        for (path, ref), (value, version, reason) in zip(references, results, strict=True):
            if reason:
                document = _replace(document, path, {REF_KEY: ref, "redacted": reason})
            else:
                document = _replace(document, path, value)
            resolutions.append(Resolution(path, ref, version, reason))
        return document, resolutions

    def _redact_all(
        self, document: Any, references: list[tuple[str, str]], reason: str
    ) -> tuple[Any, list[Resolution]]:
        for path, ref in references:
            document = _replace(document, path, {REF_KEY: ref, "redacted": reason})
        return document, [Resolution(path, ref, "", reason) for path, ref in references]

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

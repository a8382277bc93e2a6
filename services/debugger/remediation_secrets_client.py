"""Secret actions through the secrets service's stubs, as the caller who executes them.

Rotate: RotateSecret with `promote` (the previous version stays enabled); verify: the secret's
latest version is the new one; undo: disable the new version, so the previous one, still
enabled, is the latest again. Disable a version: DisableSecretVersion; verify: it is no
longer the latest; undo: enable it again. Promoting a version has no executor: the secrets service has
no call that makes an older version the latest.
"""

from __future__ import annotations

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_actions import Applied
from services.runtime import request_context
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

CALL_TIMEOUT_S = 10.0


class SecretActions:
    """Executes SECRET_ROTATE and SECRET_DISABLE_VERSION on the secrets service."""

    kinds = frozenset({ActionKind.SECRET_ROTATE, ActionKind.SECRET_DISABLE_VERSION})

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer

    async def _call(self, method: str, request: object) -> object:
        stub = secrets_pb2_grpc.SecretsServiceStub(self._peer.channel())
        try:
            return await getattr(stub, method)(
                request, metadata=request_context.forwardable.get(), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise FailedPrecondition(
                f"secrets {method} refused: {error.code().name}: {(error.details() or '')[:300]}",
                reason="PEER_REFUSED",
                metadata={"peer": "secrets", "code": error.code().name},
            ) from None

    async def _secret(self, name: str) -> secrets_pb2.Secret:
        found = await self._call("GetSecret", secrets_pb2.GetSecretRequest(name=name))
        assert isinstance(found, secrets_pb2.Secret)
        return found

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        if action.kind is ActionKind.SECRET_ROTATE:
            before = await self._secret(action.target)
            after = await self._call(
                "RotateSecret", secrets_pb2.RotateSecretRequest(name=action.target, promote=True)
            )
            assert isinstance(after, secrets_pb2.Secret)
            return Applied(
                undo={"previous": str(before.latest_version), "rotated": str(after.latest_version)},
                detail=f"rotated {action.target}: version {after.latest_version} replaces {before.latest_version}",
            )
        version = f"{action.target}/versions/{action.parameters['version']}"
        await self._call("DisableSecretVersion", secrets_pb2.DisableSecretVersionRequest(name=version))
        return Applied(undo={"version": version}, detail=f"disabled {version}")

    async def verify(self, action: Action, applied: Applied) -> str | None:
        secret = await self._secret(action.target)
        if action.kind is ActionKind.SECRET_ROTATE:
            wanted = applied.undo["rotated"]
            ok = str(secret.latest_version) == wanted
            return (
                None if ok else f"{action.target}'s latest version is {secret.latest_version}, not {wanted}"
            )
        disabled = applied.undo["version"].rsplit("/", 1)[1]
        ok = str(secret.latest_version) != disabled
        return None if ok else f"{applied.undo['version']} is still the latest version"

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        if action.kind is ActionKind.SECRET_ROTATE:
            rotated = f"{action.target}/versions/{applied.undo['rotated']}"
            await self._call("DisableSecretVersion", secrets_pb2.DisableSecretVersionRequest(name=rotated))
            return
        await self._call(
            "EnableSecretVersion", secrets_pb2.EnableSecretVersionRequest(name=applied.undo["version"])
        )

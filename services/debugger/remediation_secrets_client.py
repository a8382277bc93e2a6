"""Secret actions through the secrets service's stubs, as the caller who executes them.

Rotate: RotateSecret with `promote` (the previous version stays enabled); verify: the secret's
latest version is the new one; undo: disable the new version, so the previous one, still
enabled, is the latest again. Disable a version: DisableSecretVersion; verify: it is no
longer the latest; undo: enable it again. Promote a version (`SecretPromotion`): its value is
added again as the newest version; verify: the latest holds that value; undo: disable the
added version. No value, nor a digest of one, is ever kept in a remediation, logged or put in
an error.
"""

from __future__ import annotations

import hashlib
import hmac

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.debugger.remediation import Action, ActionKind
from services.debugger.remediation_actions import Applied
from services.runtime import request_context
from services.runtime.errors import FailedPrecondition
from services.runtime.peers import PeerChannel

CALL_TIMEOUT_S = 10.0


async def _call(peer: PeerChannel, method: str, request: object) -> object:
    stub = secrets_pb2_grpc.SecretsServiceStub(peer.channel())
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


async def _secret(peer: PeerChannel, name: str) -> secrets_pb2.Secret:
    found = await _call(peer, "GetSecret", secrets_pb2.GetSecretRequest(name=name))
    assert isinstance(found, secrets_pb2.Secret)
    return found


class SecretActions:
    """Executes SECRET_ROTATE and SECRET_DISABLE_VERSION on the secrets service."""

    kinds = frozenset({ActionKind.SECRET_ROTATE, ActionKind.SECRET_DISABLE_VERSION})

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer

    async def _call(self, method: str, request: object) -> object:
        return await _call(self._peer, method, request)

    async def _secret(self, name: str) -> secrets_pb2.Secret:
        return await _secret(self._peer, name)

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


def _number(version_name: str) -> int:
    return int(version_name.rsplit("/", 1)[1])


def _digest(payload: secrets_pb2.SecretPayload) -> bytes:
    # Values are compared by digest in memory only: neither a value nor its digest is kept,
    # logged or put in an error (a digest of a short password can be guessed back).
    return hashlib.sha256(payload.data).digest()


class SecretPromotion:
    """Executes SECRET_PROMOTE_VERSION with the secrets service's own calls: the chosen version's
    value is read (AccessSecretVersion) and added again as a new version (AddSecretVersion,
    check-and-set on the newest version), which makes it the latest. Verify: the latest
    version's value equals the chosen one's (by digest). Undo: disable the version it added,
    so the one that was the latest before is again.

    Not idempotent by key (the secrets service takes none), but recoverable: `prepare` records
    the newest version number before the add; after a replica died inside the execute,
    `recover` looks at the versions added since for one holding the chosen value (the add
    landed: it is recorded as applied) and otherwise lets it execute again. The add's
    `expected_version` makes two adds from one execute impossible."""

    kinds = frozenset({ActionKind.SECRET_PROMOTE_VERSION})

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer

    async def _payload(self, version_name: str) -> secrets_pb2.SecretPayload:
        found = await _call(
            self._peer, "AccessSecretVersion", secrets_pb2.AccessSecretVersionRequest(name=version_name)
        )
        assert isinstance(found, secrets_pb2.AccessSecretVersionResponse)
        return found.payload

    async def _versions(self, secret: str) -> list[secrets_pb2.SecretVersion]:
        found = await _call(
            self._peer, "ListSecretVersions", secrets_pb2.ListSecretVersionsRequest(parent=secret)
        )
        assert isinstance(found, secrets_pb2.ListSecretVersionsResponse)
        return list(found.versions)  # newest first

    @staticmethod
    def _chosen(action: Action) -> str:
        return f"{action.target}/versions/{action.parameters['version']}"

    def _applied(self, action: Action, added: int) -> Applied:
        chosen = self._chosen(action)
        return Applied(
            undo={"added": str(added)},
            detail=f"promoted {chosen}: its value is version {added}, the latest",
        )

    async def prepare(self, action: Action) -> dict[str, str]:
        versions = await self._versions(action.target)
        return {"newest": str(_number(versions[0].name)) if versions else "0"}

    async def recover(self, action: Action, prepared: dict[str, str], idempotency_key: str) -> Applied | None:
        wanted = _digest(await self._payload(self._chosen(action)))
        since = [v for v in await self._versions(action.target) if _number(v.name) > int(prepared["newest"])]
        for version in reversed(since):  # oldest first: the add that landed came first
            if version.state != secrets_pb2.SecretVersion.STATE_ENABLED:
                continue
            if hmac.compare_digest(_digest(await self._payload(version.name)), wanted):
                return self._applied(action, _number(version.name))
        return None  # the add did not land: executing again adds it once

    async def execute(self, action: Action, idempotency_key: str) -> Applied:
        payload = await self._payload(self._chosen(action))
        versions = await self._versions(action.target)
        newest = _number(versions[0].name) if versions else 0
        added = await _call(
            self._peer,
            "AddSecretVersion",
            secrets_pb2.AddSecretVersionRequest(
                parent=action.target, payload=payload, expected_version=newest
            ),
        )
        assert isinstance(added, secrets_pb2.SecretVersion)
        return self._applied(action, _number(added.name))

    async def verify(self, action: Action, applied: Applied) -> str | None:
        secret = await _secret(self._peer, action.target)
        chosen = self._chosen(action)
        if secret.latest_version == 0:
            return f"{action.target} has no latest version"
        latest = _digest(await self._payload(f"{action.target}/versions/{secret.latest_version}"))
        if not hmac.compare_digest(latest, _digest(await self._payload(chosen))):
            return f"{action.target}'s latest version ({secret.latest_version}) does not hold the value of {chosen}"
        return None

    async def undo(self, action: Action, applied: Applied, idempotency_key: str) -> None:
        added = f"{action.target}/versions/{applied.undo['added']}"
        # Disabling a disabled version changes nothing: an undo resumed after a crash is harmless.
        await _call(self._peer, "DisableSecretVersion", secrets_pb2.DisableSecretVersionRequest(name=added))

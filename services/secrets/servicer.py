"""SecretsService over gRPC: protos in, domain calls, protos out. Values never reach a log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf import duration_pb2, empty_pb2
from grpc import aio

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.runtime import etags, pagination, protos
from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.identity import on_behalf
from services.runtime.request_context import current_caller, note_audit
from services.secrets import names
from services.secrets.domain import DEFAULT_ALPHABET, Rotation, SecretsDomain
from services.secrets.envelope import Envelope
from services.secrets.events import Event, Events
from services.secrets.policies import Policies, Policy
from services.secrets.vault_store import DESTROYED, DISABLED, ENABLED, SecretMeta, now_us

_EMPTY = empty_pb2.Empty()
_STATES = {ENABLED: pb.SecretVersion.STATE_ENABLED, DISABLED: pb.SecretVersion.STATE_DISABLED,
           DESTROYED: pb.SecretVersion.STATE_DESTROYED}  # fmt: skip


def _seconds(duration: duration_pb2.Duration) -> float:
    return float(duration.seconds) + duration.nanos / 1e9


def rotation_from_proto(policy: pb.RotationPolicy) -> Rotation:
    generator = policy.WhichOneof("generator")
    if generator is None:
        raise InvalidArgument.for_field("secret.rotation", "needs a generator: random or manual")
    random = policy.random
    return Rotation(
        interval_s=_seconds(policy.interval),
        promotion_delay_s=_seconds(policy.promotion_delay),
        generator=generator,
        length=random.length or 32,
        alphabet=random.alphabet or DEFAULT_ALPHABET,
    )


def rotation_proto(data: dict[str, object] | None) -> pb.RotationPolicy | None:
    if data is None:
        return None
    rotation = Rotation.from_json(data)
    message = pb.RotationPolicy()
    message.interval.FromNanoseconds(int(rotation.interval_s * 1e9))
    message.promotion_delay.FromNanoseconds(int(rotation.promotion_delay_s * 1e9))
    if rotation.generator == "manual":
        message.manual.SetInParent()
    else:
        message.random.length, message.random.alphabet = rotation.length, rotation.alphabet
    return message


def secret_proto(meta: SecretMeta) -> pb.Secret:
    return pb.Secret(
        name=names.secret_name(meta.id),
        labels=meta.labels,
        rotation=rotation_proto(meta.rotation),
        create_time=protos.optional_timestamp(meta.create_us),
        latest_version=meta.latest,
        pending_version=meta.pending,
        promote_time=protos.optional_timestamp(meta.promote_us if meta.pending else 0),
        next_rotation_time=protos.optional_timestamp(meta.next_rotation_us),
        etag=meta.etag,
    )


def version_proto(meta: SecretMeta, number: int) -> pb.SecretVersion:
    version = meta.versions[number]
    return pb.SecretVersion(
        name=names.version_resource(meta.id, number),
        state=_STATES[version.state],
        pending=number == meta.pending,
        create_time=protos.optional_timestamp(version.create_us),
    )


def policy_proto(policy: Policy) -> pb.AccessPolicy:
    return pb.AccessPolicy(
        name=f"accessPolicies/{policy.id}",
        prefix=policy.prefix,
        bindings=[
            pb.Binding(member=m, level=pb.Binding.Level.ValueType(level)) for m, level in policy.bindings
        ],
        etag=etags.of(policy.revision),
    )


class SecretsServicer(secrets_pb2_grpc.SecretsServiceServicer):
    def __init__(
        self,
        domain: SecretsDomain,
        policies: Policies,
        events: Events,
        envelope: Envelope,
        *,
        progress_interval: float,
        delegates: on_behalf.Delegates = (),
    ) -> None:
        self._delegates = delegates  # who may read on behalf of a principal of its own
        self._domain = domain
        self._policies = policies
        self._events = events
        self._envelope = envelope
        self._progress_interval = progress_interval  # seconds of silence before a progress event

    async def CreateSecret(self, request: pb.CreateSecretRequest, context: aio.ServicerContext) -> pb.Secret:
        sid = names.check_id(request.secret_id, "secret_id")
        secret = request.secret
        rotation = rotation_from_proto(secret.rotation) if secret.HasField("rotation") else None
        meta = await self._domain.create(current_caller(), sid, dict(secret.labels), rotation)
        return secret_proto(meta)

    async def GetSecret(self, request: pb.GetSecretRequest, context: aio.ServicerContext) -> pb.Secret:
        return secret_proto(await self._domain.get(current_caller(), names.secret_id(request.name)))

    async def ListSecrets(
        self, request: pb.ListSecretsRequest, context: aio.ServicerContext
    ) -> pb.ListSecretsResponse:
        size = pagination.page_size(request.page_size)
        prefix = names.check_prefix(request.prefix, "prefix")
        query = ("secrets", prefix)
        after = pagination.decode_token(request.page_token, query)
        page, next_after = await self._domain.list(current_caller(), prefix, after, size)
        token = pagination.encode_token(next_after, query) if next_after else ""
        return pb.ListSecretsResponse(secrets=[secret_proto(m) for m in page], next_page_token=token)

    async def UpdateSecret(self, request: pb.UpdateSecretRequest, context: aio.ServicerContext) -> pb.Secret:
        secret = request.secret
        sid = names.secret_id(secret.name, "secret.name")
        paths = list(request.update_mask.paths) or ["labels", "rotation"]
        unknown = [p for p in paths if p not in ("labels", "rotation")]
        if unknown:
            raise InvalidArgument(
                "unknown update_mask paths",
                [FieldViolation("update_mask", f"{p!r} cannot be updated") for p in unknown],
            )
        rotation = (
            rotation_from_proto(secret.rotation)
            if "rotation" in paths and secret.HasField("rotation")
            else None
        )
        meta = await self._domain.update(
            current_caller(), sid, dict(secret.labels) if "labels" in paths else None, rotation,
            "rotation" in paths, secret.etag,
        )  # fmt: skip
        return secret_proto(meta)

    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._domain.delete(current_caller(), names.secret_id(request.name), request.etag)
        return _EMPTY

    async def AddSecretVersion(
        self, request: pb.AddSecretVersionRequest, context: aio.ServicerContext
    ) -> pb.SecretVersion:
        sid = names.secret_id(request.parent, "parent")
        expected = request.expected_version if request.HasField("expected_version") else None
        meta, version = await self._domain.add_version(current_caller(), sid, request.payload.data, expected)
        return version_proto(meta, version)

    async def AccessSecretVersion(
        self, request: pb.AccessSecretVersionRequest, context: aio.ServicerContext
    ) -> pb.AccessSecretVersionResponse:
        sid, version = names.version_name(request.name)
        reader = on_behalf.acting(current_caller(), context.invocation_metadata(), self._delegates)
        if reader is not current_caller():
            note_audit(on_behalf_of=reader.name)
        number, data = await self._domain.access(reader, sid, version)
        return pb.AccessSecretVersionResponse(
            name=names.version_resource(sid, number), payload=pb.SecretPayload(data=data)
        )

    async def ListSecretVersions(
        self, request: pb.ListSecretVersionsRequest, context: aio.ServicerContext
    ) -> pb.ListSecretVersionsResponse:
        meta = await self._domain.versions(current_caller(), names.secret_id(request.parent, "parent"))
        return pb.ListSecretVersionsResponse(
            versions=[version_proto(meta, n) for n in sorted(meta.versions, reverse=True)]
        )

    async def _change(self, name: str, state: str) -> pb.SecretVersion:
        sid, number = names.version_name(name)
        if number is None:
            raise InvalidArgument.for_field("name", "name a version by number, not `latest`")
        meta = await self._domain.change_version(current_caller(), sid, number, state)
        return version_proto(meta, number)

    async def DisableSecretVersion(
        self, request: pb.DisableSecretVersionRequest, context: aio.ServicerContext
    ) -> pb.SecretVersion:
        return await self._change(request.name, DISABLED)

    async def EnableSecretVersion(
        self, request: pb.EnableSecretVersionRequest, context: aio.ServicerContext
    ) -> pb.SecretVersion:
        return await self._change(request.name, ENABLED)

    async def DestroySecretVersion(
        self, request: pb.DestroySecretVersionRequest, context: aio.ServicerContext
    ) -> pb.SecretVersion:
        return await self._change(request.name, DESTROYED)

    async def RotateSecret(self, request: pb.RotateSecretRequest, context: aio.ServicerContext) -> pb.Secret:
        sid = names.secret_id(request.name)
        meta = await self._domain.rotate(current_caller(), sid, request.promote, request.payload.data)
        return secret_proto(meta)

    async def WatchSecretEvents(
        self, request: pb.WatchSecretEventsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.SecretEvent]:
        prefix = names.check_prefix(request.prefix, "prefix")
        after = request.after_id or await self._events.last_id()
        parts = after.split("-")
        if len(parts) != 2 or not all(p.isdigit() and len(p) <= 20 for p in parts):
            raise InvalidArgument.for_field("after_id", "is not an event id (`<milliseconds>-<sequence>`)")
        caller = current_caller()
        loop = asyncio.get_running_loop()
        told = loop.time()  # when the watcher last heard from us
        block_ms = max(1, min(1000, int(self._progress_interval * 1000)))
        async for item in self._events.follow(after, block_ms):
            if (
                isinstance(item, Event)
                and item.secret.startswith(prefix)
                and await self._policies.level(caller, item.secret) >= 1
            ):
                told = loop.time()
                yield pb.SecretEvent(
                    id=item.id,
                    type=pb.SecretEvent.Type.Value(f"TYPE_{item.type}"),
                    secret=names.secret_name(item.secret),
                    version=item.version,
                    time=protos.optional_timestamp(item.time_us),
                )
            elif loop.time() - told >= self._progress_interval:
                told = loop.time()
                yield pb.SecretEvent(
                    id=item.id, type=pb.SecretEvent.TYPE_PROGRESS, time=protos.timestamp(now_us())
                )

    async def Encrypt(self, request: pb.EncryptRequest, context: aio.ServicerContext) -> pb.EncryptResponse:
        ciphertext, version = await self._envelope.encrypt(names.tenant_id(request.tenant), request.plaintext)
        return pb.EncryptResponse(ciphertext=ciphertext, key_version=version)

    async def Decrypt(self, request: pb.DecryptRequest, context: aio.ServicerContext) -> pb.DecryptResponse:
        plaintext = await self._envelope.decrypt(names.tenant_id(request.tenant), request.ciphertext)
        return pb.DecryptResponse(plaintext=plaintext)

    async def Rewrap(self, request: pb.RewrapRequest, context: aio.ServicerContext) -> pb.EncryptResponse:
        ciphertext, version = await self._envelope.rewrap(names.tenant_id(request.tenant), request.ciphertext)
        return pb.EncryptResponse(ciphertext=ciphertext, key_version=version)

    async def SetAccessPolicy(
        self, request: pb.SetAccessPolicyRequest, context: aio.ServicerContext
    ) -> pb.AccessPolicy:
        message = request.policy
        pid = names.policy_id(message.name, "policy.name")
        policy = Policy(pid, message.prefix, [(b.member, int(b.level)) for b in message.bindings])
        return policy_proto(await self._policies.set(policy, message.etag))

    async def GetAccessPolicy(
        self, request: pb.GetAccessPolicyRequest, context: aio.ServicerContext
    ) -> pb.AccessPolicy:
        return policy_proto(await self._policies.get(names.policy_id(request.name)))

    async def ListAccessPolicies(
        self, request: pb.ListAccessPoliciesRequest, context: aio.ServicerContext
    ) -> pb.ListAccessPoliciesResponse:
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token, ("policies",))
        remaining = [p for p in await self._policies.all() if after is None or p.id > after]
        page = remaining[:size]
        token = pagination.encode_token(page[-1].id, ("policies",)) if len(remaining) > size else ""
        return pb.ListAccessPoliciesResponse(policies=[policy_proto(p) for p in page], next_page_token=token)

    async def DeleteAccessPolicy(
        self, request: pb.DeleteAccessPolicyRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._policies.delete(names.policy_id(request.name))
        return _EMPTY

"""ApiKeyService over gRPC: protos in, API-key domain calls, protos out."""

from __future__ import annotations

from grpc import aio

from devmesh.config.v1 import api_keys_pb2, api_keys_pb2_grpc
from services.config.api_keys import API_KEY, ApiKeys, NewKey, etag_of, key_id_of
from services.runtime import protos
from services.runtime.identity import keys, keystore
from services.runtime.request_context import current_caller


def api_key_proto(record: keystore.ApiKeyRecord) -> api_keys_pb2.ApiKey:
    return api_keys_pb2.ApiKey(
        name=API_KEY.format(record.key_id),
        display_name=record.display_name,
        owner=record.owner,
        role=record.role,
        permissions=record.permissions,
        expire_time=protos.optional_timestamp(record.expire_us),
        rate_limit_per_second=record.rate_per_second,
        rate_limit_burst=record.rate_burst,
        create_time=protos.optional_timestamp(record.create_us),
        creator=record.creator,
        last_use_time=protos.optional_timestamp(record.last_use_us),
        state=api_keys_pb2.ApiKey.State.Value("STATE_" + record.effective_state(keystore.now_us())),
        rotate_time=protos.optional_timestamp(record.rotate_us),
        previous_secret_expire_time=protos.optional_timestamp(record.previous_expire_us),
        revoke_time=protos.optional_timestamp(record.revoke_us),
        key_prefix=keys.key_prefix(record.key_id),
        etag=etag_of(record),
    )


class ApiKeyServicer(api_keys_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, api_keys: ApiKeys) -> None:
        self._keys = api_keys

    async def CreateApiKey(
        self, request: api_keys_pb2.CreateApiKeyRequest, context: aio.ServicerContext
    ) -> api_keys_pb2.CreateApiKeyResponse:
        message = request.api_key
        new = NewKey(
            display_name=message.display_name,
            owner=message.owner,
            role=message.role,
            permissions=tuple(message.permissions),
            expire_us=protos.microseconds(message.expire_time, "api_key.expire_time")
            if message.HasField("expire_time")
            else 0,
            rate_per_second=message.rate_limit_per_second,
            rate_burst=message.rate_limit_burst,
        )
        record, key = await self._keys.create(current_caller(), new)
        return api_keys_pb2.CreateApiKeyResponse(api_key=api_key_proto(record), key=key)

    async def GetApiKey(
        self, request: api_keys_pb2.GetApiKeyRequest, context: aio.ServicerContext
    ) -> api_keys_pb2.ApiKey:
        return api_key_proto(await self._keys.get(key_id_of(request.name)))

    async def ListApiKeys(
        self, request: api_keys_pb2.ListApiKeysRequest, context: aio.ServicerContext
    ) -> api_keys_pb2.ListApiKeysResponse:
        records, token = await self._keys.list(
            page_size=request.page_size,
            page_token=request.page_token,
            owner=request.owner,
            show_inactive=request.show_inactive,
        )
        return api_keys_pb2.ListApiKeysResponse(
            api_keys=[api_key_proto(r) for r in records], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: api_keys_pb2.RevokeApiKeyRequest, context: aio.ServicerContext
    ) -> api_keys_pb2.ApiKey:
        return api_key_proto(await self._keys.revoke(key_id_of(request.name), request.etag))

    async def RotateApiKey(
        self, request: api_keys_pb2.RotateApiKeyRequest, context: aio.ServicerContext
    ) -> api_keys_pb2.RotateApiKeyResponse:
        grace = None
        if request.HasField("grace_period"):
            grace = request.grace_period.seconds * 1_000_000 + request.grace_period.nanos // 1000
        record, key = await self._keys.rotate(key_id_of(request.name), request.etag, grace)
        return api_keys_pb2.RotateApiKeyResponse(api_key=api_key_proto(record), key=key)

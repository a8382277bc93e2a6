"""ApiKeyService, TokenService and AuditService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from grpc import aio

from devmesh.config.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from services.config import audit_events
from services.config.api_keys import API_KEY, ApiKeys, NewKey, etag_of, key_id_of
from services.config.tokens import TokenIssuer
from services.runtime import protos
from services.runtime.identity import keys, keystore
from services.runtime.redis_client import Redis
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


class TokenServicer(tokens_pb2_grpc.TokenServiceServicer):
    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    async def ExchangeToken(
        self, request: tokens_pb2.ExchangeTokenRequest, context: aio.ServicerContext
    ) -> tokens_pb2.ExchangeTokenResponse:
        ttl = request.ttl.seconds if request.HasField("ttl") else None
        issued = await self._issuer.exchange(current_caller(), ttl, tuple(request.permissions))
        return tokens_pb2.ExchangeTokenResponse(
            access_token=issued.token,
            token_type="Bearer",
            expires_in=issued.lifetime_s,
            expire_time=timestamp_pb2.Timestamp(seconds=issued.expires_at),
        )

    async def GetJwks(
        self, request: tokens_pb2.GetJwksRequest, context: aio.ServicerContext
    ) -> tokens_pb2.Jwks:
        return tokens_pb2.Jwks(keys=[tokens_pb2.Jwk(**jwk) for jwk in await self._issuer.jwks()])


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: aio.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        filters = audit_events.Filters(
            actor=request.actor,
            resource_prefix=request.resource_prefix,
            action=request.action,
            result=request.result,
            start_us=protos.microseconds(request.start_time, "start_time")
            if request.HasField("start_time")
            else 0,
            end_us=protos.microseconds(request.end_time, "end_time") if request.HasField("end_time") else 0,
        )
        events, token = await audit_events.list_events(
            self._redis, filters, request.page_size, request.page_token
        )
        return audit_pb2.ListAuditEventsResponse(
            audit_events=[
                audit_pb2.AuditEvent(
                    id=event.id,
                    time=protos.optional_timestamp(int(event.fields.get("time_us", "0") or 0)),
                    actor=event.fields.get("actor", ""),
                    action=event.fields.get("action", ""),
                    resource=event.fields.get("resource", ""),
                    result=event.fields.get("result", ""),
                    reason=event.fields.get("reason", ""),
                    request_id=event.fields.get("request_id", ""),
                    peer=event.fields.get("peer", ""),
                    method=event.fields.get("method", ""),
                    service=event.fields.get("service", ""),
                    details=event.details,
                )
                for event in events
            ],
            next_page_token=token,
        )

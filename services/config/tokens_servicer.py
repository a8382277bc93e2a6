"""TokenService over gRPC: exchanging a credential for a token, and the JWKS that verifies it."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from grpc import aio

from devmesh.config.v1 import tokens_pb2, tokens_pb2_grpc
from services.config.tokens import TokenIssuer
from services.runtime.request_context import current_caller


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

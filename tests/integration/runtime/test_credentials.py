"""Each reason a credential is refused, on a real config server with auth on (real Valkey and
OpenBao, plaintext loopback; mesh identities are covered in tests/e2e), and fuzzed credentials
that never get anything but UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import grpc
import pytest

from devmesh.config.v1 import api_keys_pb2 as kpb
from devmesh.config.v1 import tokens_pb2
from services.runtime.identity import keys, keystore
from services.runtime.identity.tokens import b64url
from tests.helpers import Metadata, bearer, error_info, key_metadata, refused
from tests.integration.conftest import Mesh, resolve_request


async def claims_token(mesh: Mesh, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": "devmesh", "aud": "devmesh", "sub": "test", "iat": now, "nbf": now, "exp": now + 600,
              "jti": "j", "role": "admin", "permissions": []}  # fmt: skip
    claims.update(overrides)
    kid = str((await mesh.issuer().jwks())[0]["kid"])
    return await mesh.issuer().sign(kid, claims)


async def _bad_checksum(mesh: Mesh) -> Metadata:
    key = await mesh.mint("viewer")
    last = key[-1]
    return key_metadata(key[:-1] + ("A" if last != "A" else "B"))


async def _unknown_key(mesh: Mesh) -> Metadata:
    return key_metadata(keys.new_key(keys.new_key_id()))


async def _wrong_secret(mesh: Mesh) -> Metadata:
    real = keys.parse(await mesh.mint("viewer"))
    return key_metadata(keys.new_key(real.key_id))  # right id, valid checksum, another secret


async def _revoked_key(mesh: Mesh) -> Metadata:
    admin = await mesh.mint("admin")
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=key_metadata(admin)
    )
    await mesh.keys().RevokeApiKey(
        kpb.RevokeApiKeyRequest(name=created.api_key.name), metadata=key_metadata(admin)
    )
    return key_metadata(created.key)


async def _expired_key(mesh: Mesh) -> Metadata:
    key = await mesh.mint("viewer")
    key_id = keys.parse(key).key_id
    redis = mesh.server.runtime.redis  # time travel: move the expiry into the past
    await redis.hset(keystore.record_key(key_id), "expire_us", keystore.now_us() - 1)
    await redis.publish(keystore.INVALIDATE_CHANNEL, key_id)
    return key_metadata(key)


async def _alg_none(mesh: Mesh) -> Metadata:
    head = b64url(json.dumps({"alg": "none", "kid": "1"}).encode())
    body = b64url(json.dumps({"sub": "x", "role": "admin", "aud": "devmesh", "iss": "devmesh"}).encode())
    return bearer(f"{head}.{body}.")


async def _alg_hs256(mesh: Mesh) -> Metadata:
    # The classic confusion attack: HMAC-sign with the public key as the secret.
    jwk = (await mesh.issuer().jwks())[0]
    head = b64url(json.dumps({"alg": "HS256", "kid": jwk["kid"]}).encode())
    now = int(time.time())
    body = b64url(
        json.dumps(
            {"sub": "x", "role": "admin", "aud": "devmesh", "iss": "devmesh", "exp": now + 60, "nbf": now}
        ).encode()
    )
    mac = hmac.new(json.dumps(jwk).encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return bearer(f"{head}.{body}.{b64url(mac)}")


async def _bad_signature(mesh: Mesh) -> Metadata:
    token = await claims_token(mesh)
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[5] ^= 0x01
    return bearer(f"{head}.{body}.{b64url(bytes(raw))}")


async def _tampered_claims(mesh: Mesh) -> Metadata:
    token = await claims_token(mesh, role="viewer")
    head, _, sig = token.split(".")
    now = int(time.time())
    forged = {
        "iss": "devmesh",
        "aud": "devmesh",
        "sub": "x",
        "nbf": now,
        "exp": now + 60,
        "jti": "j",
        "role": "admin",
    }
    return bearer(f"{head}.{b64url(json.dumps(forged).encode())}.{sig}")


async def _expired_token(mesh: Mesh) -> Metadata:
    past = int(time.time()) - 3600
    return bearer(await claims_token(mesh, iat=past - 60, nbf=past - 60, exp=past))


async def _future_token(mesh: Mesh) -> Metadata:
    future = int(time.time()) + 3600
    return bearer(await claims_token(mesh, nbf=future, exp=future + 60))


async def _wrong_audience(mesh: Mesh) -> Metadata:
    return bearer(await claims_token(mesh, aud="someone-else"))


async def _wrong_issuer(mesh: Mesh) -> Metadata:
    return bearer(await claims_token(mesh, iss="evil"))


async def _unknown_kid(mesh: Mesh) -> Metadata:
    _, body, sig = (await claims_token(mesh)).split(".")
    return bearer(f"{b64url(json.dumps({'alg': 'ES256', 'kid': '999'}).encode())}.{body}.{sig}")


async def _token_of_revoked_key(mesh: Mesh) -> Metadata:
    admin = await mesh.mint("admin")
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=key_metadata(admin)
    )
    token = await mesh.tokens().ExchangeToken(
        tokens_pb2.ExchangeTokenRequest(), metadata=key_metadata(created.key)
    )
    await mesh.keys().RevokeApiKey(
        kpb.RevokeApiKeyRequest(name=created.api_key.name), metadata=key_metadata(admin)
    )
    return bearer(token.access_token)


async def _none(mesh: Mesh) -> Metadata:
    return ()


async def _basic_auth(mesh: Mesh) -> Metadata:
    return (("authorization", "Basic dXNlcjpwYXNz"),)


async def _not_a_key(mesh: Mesh) -> Metadata:
    return key_metadata("hunter2")


async def _not_a_token(mesh: Mesh) -> Metadata:
    return bearer("not-a-jwt")


CASES = {
    "CREDENTIALS_MISSING": _none,
    "CREDENTIALS_MALFORMED": _basic_auth,
    "API_KEY_MALFORMED": _not_a_key,
    "API_KEY_BAD_CHECKSUM": _bad_checksum,
    "API_KEY_UNKNOWN": _unknown_key,
    "API_KEY_UNKNOWN/wrong-secret": _wrong_secret,
    "API_KEY_REVOKED": _revoked_key,
    "API_KEY_EXPIRED": _expired_key,
    "TOKEN_MALFORMED": _not_a_token,
    "TOKEN_ALGORITHM_NOT_ALLOWED/none": _alg_none,
    "TOKEN_ALGORITHM_NOT_ALLOWED/HS256": _alg_hs256,
    "TOKEN_BAD_SIGNATURE": _bad_signature,
    "TOKEN_BAD_SIGNATURE/tampered": _tampered_claims,
    "TOKEN_EXPIRED": _expired_token,
    "TOKEN_NOT_YET_VALID": _future_token,
    "TOKEN_WRONG_AUDIENCE": _wrong_audience,
    "TOKEN_WRONG_ISSUER": _wrong_issuer,
    "TOKEN_UNKNOWN_KEY": _unknown_kid,
    "TOKEN_REVOKED": _token_of_revoked_key,
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_refused_credential_has_its_own_reason(mesh: Mesh, case: str) -> None:
    metadata = await CASES[case](mesh)
    error = await refused(mesh.config().ResolveConfig, resolve_request(), metadata=metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(error).reason == case.split("/")[0]
    for _, value in metadata:  # the credential is never echoed back
        credential = value.split(" ")[-1]
        assert credential not in (error.details() or "")
        trailers = b"".join(
            v if isinstance(v, bytes) else v.encode() for _, v in error.trailing_metadata() or ()
        )
        assert credential.encode() not in trailers


async def test_fuzzed_keys_and_tokens_never_crash_the_server(mesh: Mesh) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    printable = st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
    )
    b64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=120)
    json_header = st.fixed_dictionaries(
        {
            "alg": st.sampled_from(["ES256", "none", "HS256", "RS256", "es256", ""]),
            "kid": st.one_of(st.text(max_size=5), st.integers()),
        }
    ).map(lambda h: b64url(json.dumps(h).encode()))
    credentials = st.one_of(
        printable.map(key_metadata),
        st.builds(lambda s: key_metadata("dmk_" + s), printable),
        st.builds(
            lambda i, s: key_metadata(f"dmk_{i}_{s}"),
            st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=12, max_size=12),
            b64,
        ),
        printable.map(bearer),
        st.builds(lambda h, b, s: bearer(f"{h}.{b}.{s}"), st.one_of(b64, json_header), b64, b64),
    )
    loop = asyncio.get_running_loop()
    outcomes: list[grpc.StatusCode] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(credentials)
    def check(metadata: Metadata) -> None:
        outcomes.append(asyncio.run_coroutine_threadsafe(_code(mesh, metadata), loop).result(10))

    await asyncio.to_thread(check)
    assert outcomes and set(outcomes) <= {grpc.StatusCode.UNAUTHENTICATED}


async def _code(mesh: Mesh, metadata: Metadata) -> grpc.StatusCode:
    try:
        await mesh.config().ResolveConfig(resolve_request(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK

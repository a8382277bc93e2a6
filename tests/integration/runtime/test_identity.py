"""Authentication, authorization, rate limits and audit on a real config server, real Valkey
and real OpenBao (auth on, plaintext loopback; mesh identities are covered in tests/e2e)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import aio

from devmesh.config.v1 import api_keys_pb2 as kpb
from devmesh.config.v1 import (
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    config_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from devmesh.config.v1 import config_pb2 as pb
from services.config.tokens import TokenIssuer
from services.runtime.identity import keys, keystore
from services.runtime.identity.tokens import b64url
from services.runtime.server import Server
from services.runtime.vault import JWT_KEY, TRANSIT_MOUNT
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import (
    Metadata,
    bearer,
    detail,
    error_info,
    eventually,
    key_metadata,
    mint_key,
    refused,
    violated_fields,
)
from tools.stack.valkey import Valkey

FAST_JWKS = {"auth_jwks_refresh": 1.0}


@dataclass
class Mesh:
    """One auth-on config server and ways to call it as different principals."""

    server: Server
    addr: str
    channel: aio.Channel

    def config(self) -> config_pb2_grpc.ConfigServiceStub:
        return config_pb2_grpc.ConfigServiceStub(self.channel)

    def keys(self) -> api_keys_pb2_grpc.ApiKeyServiceStub:
        return api_keys_pb2_grpc.ApiKeyServiceStub(self.channel)

    def tokens(self) -> tokens_pb2_grpc.TokenServiceStub:
        return tokens_pb2_grpc.TokenServiceStub(self.channel)

    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    async def mint(self, role: str, **fields: Any) -> str:
        """An API key of `role` on this server (`mint_key`)."""
        return await mint_key(self.server, role, **fields)

    def issuer(self) -> TokenIssuer:
        assert self.server.runtime.vault is not None
        return TokenIssuer(self.server.runtime.vault, "devmesh")


async def _serve(
    start_config_server: ServerFactory, valkey: Valkey, openbao: BootstrappedVault, **settings: Any
) -> tuple[Server, str]:
    return await start_config_server(valkey.url, **{**openbao.settings(), **settings})


@pytest.fixture(scope="module")
async def mesh(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Mesh]:
    server, addr = await _serve(start_config_server, valkey, openbao, **FAST_JWKS)
    async with aio.insecure_channel(addr) as channel:
        yield Mesh(server, addr, channel)


def resolve_request(ns: str = "nowhere") -> pb.ResolveConfigRequest:
    return pb.ResolveConfigRequest(name=f"namespaces/{ns}/environments/default")


async def claims_token(mesh: Mesh, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": "devmesh", "aud": "devmesh", "sub": "test", "iat": now, "nbf": now, "exp": now + 600,
              "jti": "j", "role": "admin", "permissions": []}  # fmt: skip
    claims.update(overrides)
    kid = str((await mesh.issuer().jwks())[0]["kid"])
    return await mesh.issuer().sign(kid, claims)


# -- each reason a credential is refused ------------------------------------------------------


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


# -- who may do what --------------------------------------------------------------------------

ALLOWED = {  # role -> (read config, write config, manage keys, read audit)
    "admin": (True, True, True, True),
    "operator": (True, True, False, True),
    "viewer": (True, False, False, False),
    "service": (True, False, False, False),
}


@pytest.mark.parametrize("role", list(ALLOWED))
async def test_each_role_against_each_permission_class(mesh: Mesh, role: str, ns: str) -> None:
    admin = await mesh.mint("admin")
    await mesh.config().CreateNamespace(
        pb.CreateNamespaceRequest(namespace_id=ns, namespace=pb.Namespace()), metadata=key_metadata(admin)
    )
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    await mesh.config().UpdateEnvironment(
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True), metadata=key_metadata(admin)
    )
    md = key_metadata(await mesh.mint(role))
    calls = (
        mesh.config().ResolveConfig(resolve_request(ns), metadata=md),
        mesh.config().UpdateEnvironment(
            pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True), metadata=md
        ),
        mesh.keys().ListApiKeys(kpb.ListApiKeysRequest(page_size=1), metadata=md),
        mesh.audit().ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=1), metadata=md),
    )
    outcomes = []
    for call in calls:
        try:
            await call
            outcomes.append(True)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            outcomes.append(False)
    assert tuple(outcomes) == ALLOWED[role]


async def test_permission_is_decided_before_existence(mesh: Mesh) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    missing = pb.Environment(name="namespaces/no-such-namespace/environments/default")
    error = await refused(
        mesh.config().UpdateEnvironment, pb.UpdateEnvironmentRequest(environment=missing), metadata=viewer
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).metadata["permission"] == "config.environments.update"


async def test_a_key_narrowed_to_some_permissions_holds_only_those(mesh: Mesh, ns: str) -> None:
    narrowed = key_metadata(await mesh.mint("admin", permissions=["config.environments.resolve"]))
    error = await refused(mesh.config().ListNamespaces, pb.ListNamespacesRequest(), metadata=narrowed)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=narrowed)
    assert error.code() == grpc.StatusCode.NOT_FOUND  # allowed through; the namespace is missing


async def test_a_key_cannot_grant_more_than_its_creator_holds(mesh: Mesh) -> None:
    keymaster = key_metadata(await mesh.mint("admin", permissions=["config.apikeys.*"]))
    error = await refused(
        mesh.keys().CreateApiKey,
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="operator")),
        metadata=keymaster,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).reason == "ROLE_NOT_HELD"


async def test_public_methods_need_no_credentials(mesh: Mesh) -> None:
    jwks = await mesh.tokens().GetJwks(tokens_pb2.GetJwksRequest())
    assert jwks.keys and all(k.kty == "EC" and k.crv == "P-256" and k.alg == "ES256" for k in jwks.keys)


# -- keys: lifecycle, rotation, revocation ------------------------------------------------------


async def test_a_created_key_is_shown_once_and_stored_only_as_a_digest(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer", display_name="ci")), metadata=admin
    )
    assert created.key.startswith(created.api_key.key_prefix) and created.api_key.key_prefix.startswith(
        "dmk_"
    )
    fetched = await mesh.keys().GetApiKey(kpb.GetApiKeyRequest(name=created.api_key.name), metadata=admin)
    assert fetched.state == kpb.ApiKey.STATE_ACTIVE and fetched.display_name == "ci"
    assert created.key not in str(fetched)
    raw = await mesh.server.runtime.redis.hgetall(keystore.record_key(keys.parse(created.key).key_id))
    assert all(
        created.key.encode() not in v and keys.parse(created.key).key.encode() not in v for v in raw.values()
    )
    expiry = fetched.expire_time.seconds - fetched.create_time.seconds
    assert 89 * 86400 < expiry <= 90 * 86400


@pytest.mark.parametrize(
    ("field", "api_key"),
    [
        ("api_key.role", kpb.ApiKey(role="root")),
        ("api_key.permissions[0]", kpb.ApiKey(role="viewer", permissions=["config..x"])),
        (
            "api_key.expire_time",
            kpb.ApiKey(role="viewer", expire_time={"seconds": int(time.time()) + 400 * 86400}),
        ),
        ("api_key.expire_time", kpb.ApiKey(role="viewer", expire_time={"seconds": 1})),
    ],
)
async def test_bad_keys_are_refused_field_by_field(mesh: Mesh, field: str, api_key: kpb.ApiKey) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    error = await refused(mesh.keys().CreateApiKey, kpb.CreateApiKeyRequest(api_key=api_key), metadata=admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]


async def _status_of(mesh: Mesh, key: str) -> str:
    try:
        await mesh.config().ResolveConfig(resolve_request(), metadata=key_metadata(key))
    except grpc.aio.AioRpcError as error:
        return error_info(error).reason if error.code() == grpc.StatusCode.UNAUTHENTICATED else "ACCEPTED"
    return "ACCEPTED"


async def test_rotation_keeps_the_old_secret_for_the_grace_period(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=admin
    )
    rotated = await mesh.keys().RotateApiKey(
        kpb.RotateApiKeyRequest(name=created.api_key.name, grace_period=duration_pb2.Duration(seconds=2)),
        metadata=admin,
    )
    assert rotated.key != created.key and rotated.api_key.name == created.api_key.name
    assert await _status_of(mesh, created.key) == "ACCEPTED"
    assert await _status_of(mesh, rotated.key) == "ACCEPTED"

    async def old_secret_refused() -> bool:
        return await _status_of(mesh, created.key) != "ACCEPTED"

    await eventually(old_secret_refused, "the old secret to stop at the end of its grace period")
    assert await _status_of(mesh, created.key) == "API_KEY_UNKNOWN"
    assert await _status_of(mesh, rotated.key) == "ACCEPTED"


async def test_rotation_without_grace_stops_the_old_secret_at_once(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=admin
    )
    assert await _status_of(mesh, created.key) == "ACCEPTED"
    rotated = await mesh.keys().RotateApiKey(
        kpb.RotateApiKeyRequest(name=created.api_key.name, grace_period=duration_pb2.Duration()),
        metadata=admin,
    )
    assert await _status_of(mesh, created.key) == "API_KEY_UNKNOWN"
    assert await _status_of(mesh, rotated.key) == "ACCEPTED"


async def test_a_stale_etag_aborts_and_changes_nothing(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=admin
    )
    await mesh.keys().RotateApiKey(kpb.RotateApiKeyRequest(name=created.api_key.name), metadata=admin)
    error = await refused(
        mesh.keys().RevokeApiKey,
        kpb.RevokeApiKeyRequest(name=created.api_key.name, etag=created.api_key.etag),
        metadata=admin,
    )
    assert error.code() == grpc.StatusCode.ABORTED
    fetched = await mesh.keys().GetApiKey(kpb.GetApiKeyRequest(name=created.api_key.name), metadata=admin)
    assert fetched.state == kpb.ApiKey.STATE_ACTIVE


async def test_revocation_reaches_another_replica_within_a_second(
    mesh: Mesh, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> None:
    # A long cache TTL: only the pub/sub invalidation can make the replica notice in time.
    _, replica_addr = await _serve(start_config_server, valkey, openbao, auth_cache_ttl=300.0)
    admin = key_metadata(await mesh.mint("admin"))
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer")), metadata=admin
    )
    async with aio.insecure_channel(replica_addr) as channel:
        replica = config_pb2_grpc.ConfigServiceStub(channel)
        error = await refused(replica.ResolveConfig, resolve_request(), metadata=key_metadata(created.key))
        assert error.code() == grpc.StatusCode.NOT_FOUND  # authenticated, and now cached there
        await mesh.keys().RevokeApiKey(kpb.RevokeApiKeyRequest(name=created.api_key.name), metadata=admin)

        async def unauthenticated() -> grpc.aio.AioRpcError | None:
            error = await refused(
                replica.ResolveConfig, resolve_request(), metadata=key_metadata(created.key)
            )
            return error if error.code() == grpc.StatusCode.UNAUTHENTICATED else None

        error = await eventually(unauthenticated, "the replica to hear of the revocation", within=1.0)
        assert error_info(error).reason == "API_KEY_REVOKED"


async def test_list_pages_newest_first_and_hides_revoked_keys(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    owner = f"team-{time.time_ns()}"
    names = []
    for _ in range(3):
        created = await mesh.keys().CreateApiKey(
            kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer", owner=owner)), metadata=admin
        )
        names.append(created.api_key.name)
    await mesh.keys().RevokeApiKey(kpb.RevokeApiKeyRequest(name=names[1]), metadata=admin)
    seen, token = [], ""
    while True:
        page = await mesh.keys().ListApiKeys(
            kpb.ListApiKeysRequest(owner=owner, page_size=1, page_token=token), metadata=admin
        )
        seen += [k.name for k in page.api_keys]
        token = page.next_page_token
        if not token:
            break
    assert seen == [names[2], names[0]]
    everything = await mesh.keys().ListApiKeys(
        kpb.ListApiKeysRequest(owner=owner, show_inactive=True), metadata=admin
    )
    assert [k.name for k in everything.api_keys] == names[::-1]


async def test_a_dead_key_is_kept_for_the_retention_period_then_purged(mesh: Mesh) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    owner = f"team-{time.time_ns()}"
    created = await mesh.keys().CreateApiKey(
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="viewer", owner=owner)), metadata=admin
    )
    redis = mesh.server.runtime.redis
    record = keystore.record_key(keys.parse(created.key).key_id)
    retention_ms = 30 * 86_400_000  # DEVMESH_CONFIG_API_KEY_RETENTION_DAYS' default
    expire = created.api_key.expire_time
    assert await redis.pexpiretime(record) == expire.seconds * 1000 + expire.nanos // 1_000_000 + retention_ms

    revoked = await mesh.keys().RevokeApiKey(
        kpb.RevokeApiKeyRequest(name=created.api_key.name), metadata=admin
    )
    revoke = revoked.revoke_time
    assert await redis.pexpiretime(record) == revoke.seconds * 1000 + revoke.nanos // 1_000_000 + retention_ms

    await redis.delete(record)  # what Redis does when that time comes
    listed = await mesh.keys().ListApiKeys(
        kpb.ListApiKeysRequest(owner=owner, show_inactive=True), metadata=admin
    )
    assert list(listed.api_keys) == []
    index = [
        m for m in await redis.zrange(keystore.INDEX, 0, -1) if m.endswith(record.rpartition(":")[2].encode())
    ]
    assert index == []  # the listing dropped the dangling index entry
    error = await refused(
        mesh.keys().GetApiKey, kpb.GetApiKeyRequest(name=created.api_key.name), metadata=admin
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


# -- tokens -----------------------------------------------------------------------------------


async def test_an_api_key_exchanges_for_a_token_with_its_role(mesh: Mesh, ns: str) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    issued = await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)
    assert issued.token_type == "Bearer" and issued.expires_in == 900
    header = json.loads(base64.urlsafe_b64decode(issued.access_token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"].isdigit()
    error = await refused(
        mesh.config().ResolveConfig, resolve_request(ns), metadata=bearer(issued.access_token)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND  # authenticated as the viewer
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    error = await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=bearer(issued.access_token),
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    again = await refused(
        mesh.tokens().ExchangeToken, tokens_pb2.ExchangeTokenRequest(), metadata=bearer(issued.access_token)
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_token_may_be_narrowed_but_not_widened(mesh: Mesh) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    error = await refused(
        mesh.tokens().ExchangeToken,
        tokens_pb2.ExchangeTokenRequest(permissions=["config.environments.update"]),
        metadata=viewer,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    narrowed = await mesh.tokens().ExchangeToken(
        tokens_pb2.ExchangeTokenRequest(permissions=["config.environments.resolve"]), metadata=viewer
    )
    error = await refused(
        mesh.config().ListNamespaces, pb.ListNamespacesRequest(), metadata=bearer(narrowed.access_token)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_transit_key_rotation_keeps_live_tokens_until_old_versions_are_retired(
    mesh: Mesh, openbao: BootstrappedVault, ns: str
) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    old = (await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)).access_token
    root = openbao.client().secrets.transit
    root.rotate_key(JWT_KEY, mount_point=TRANSIT_MOUNT)
    latest = str(root.read_key(JWT_KEY, mount_point=TRANSIT_MOUNT)["data"]["latest_version"])

    async def signed_with_the_latest_version() -> str | None:
        token = (
            await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)
        ).access_token
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        return token if kid == latest else None

    # The issuer re-reads the key every few seconds.
    new = await eventually(signed_with_the_latest_version, "a token signed by the new key version", within=15)

    async def outcome(token: str) -> str:
        try:
            await mesh.config().ResolveConfig(resolve_request(ns), metadata=bearer(token))
        except grpc.aio.AioRpcError as error:
            return error_info(error).reason
        return "OK"

    assert await outcome(old) == "NOT_FOUND"  # still verifies: rotation broke no live token
    assert await outcome(new) == "NOT_FOUND"
    root.update_key_configuration(JWT_KEY, min_decryption_version=int(latest), mount_point=TRANSIT_MOUNT)

    async def old_token_refused() -> bool:
        return await outcome(old) == "TOKEN_UNKNOWN_KEY"

    async def only_the_latest_published() -> bool:
        jwks = await mesh.tokens().GetJwks(tokens_pb2.GetJwksRequest())
        return [k.kid for k in jwks.keys] == [latest]

    # The JWKS refreshes every second here.
    await eventually(old_token_refused, "the retired key version to stop verifying tokens")
    assert await outcome(new) == "NOT_FOUND"
    await eventually(only_the_latest_published, "the JWKS to drop the retired key version")


# -- rate limits ------------------------------------------------------------------------------


async def test_a_limit_holds_under_concurrent_load_from_many_clients(mesh: Mesh, ns: str) -> None:
    key = key_metadata(await mesh.mint("viewer", rate_per_second=5.0, rate_burst=10))
    admitted = limited = 0
    started = time.monotonic()
    channels = [aio.insecure_channel(mesh.addr) for _ in range(8)]
    try:

        async def client(channel: aio.Channel) -> None:
            nonlocal admitted, limited
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            for _ in range(15):
                try:
                    await stub.ResolveConfig(resolve_request(ns), metadata=key)
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        limited += 1
                        continue
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                admitted += 1

        await asyncio.gather(*(client(c) for c in channels))
    finally:
        for c in channels:
            await c.close()
    elapsed = time.monotonic() - started
    assert admitted + limited == 120
    assert 10 <= admitted <= 10 + 5 * elapsed + 1, (admitted, elapsed)


async def test_over_the_limit_the_answer_says_when_to_retry(mesh: Mesh, ns: str) -> None:
    key = key_metadata(await mesh.mint("viewer", rate_per_second=1.0, rate_burst=2))
    call = mesh.config().ResolveConfig(resolve_request(ns), metadata=key)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    headers = dict(await call.trailing_metadata())
    assert headers["x-ratelimit-limit"] == "2" and headers["x-ratelimit-remaining"] == "1"
    await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=key)
    error = await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=key)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(error).reason == "RATE_LIMITED"
    retry = detail(error, error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.ToNanoseconds() <= 1_000_000_000  # type: ignore[attr-defined]
    quota = detail(error, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject.startswith("apikey:")  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())
    assert trailers["x-ratelimit-remaining"] == "0" and int(trailers["x-ratelimit-reset"]) >= 1


# -- fuzzed credentials -----------------------------------------------------------------------


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


# -- audit ------------------------------------------------------------------------------------


async def test_mutations_refusals_and_denials_reach_the_audit_trail(mesh: Mesh, ns: str) -> None:
    admin_key = await mesh.mint("admin")
    viewer_key = await mesh.mint("viewer")
    admin, viewer = key_metadata(admin_key), key_metadata(viewer_key)
    await mesh.config().CreateNamespace(
        pb.CreateNamespaceRequest(namespace_id=ns, namespace=pb.Namespace()), metadata=admin
    )
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=viewer,
    )
    await refused(
        mesh.config().ResolveConfig,
        resolve_request(ns),
        metadata=key_metadata(keys.new_key(keys.new_key_id())),
    )
    page = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_prefix=f"namespaces/{ns}", page_size=10), metadata=admin
    )
    seen = [(e.action, e.result, e.reason) for e in page.audit_events]
    assert seen == [
        ("config.environments.resolve", "UNAUTHENTICATED", "API_KEY_UNKNOWN"),
        ("config.environments.update", "PERMISSION_DENIED", "PERMISSION_DENIED"),
        ("config.namespaces.create", "OK", ""),
    ]
    denial = page.audit_events[1]
    assert denial.actor == f"apikey:{keys.parse(viewer_key).key_id}" and denial.request_id and denial.peer
    assert page.audit_events[2].details["change"] == "NAMESPACE_CREATED"
    events = str(page)
    assert admin_key not in events and viewer_key not in events
    by_actor = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(actor=denial.actor, action="config.*"), metadata=admin
    )
    assert [e.id for e in by_actor.audit_events] == [denial.id]


async def test_a_refusal_is_in_the_audit_trail_by_the_time_the_caller_hears_of_it(
    mesh: Mesh, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.runtime.interceptors.audit import Audit

    record = Audit.record

    async def slow_record(self: Audit, *args: Any) -> None:
        await asyncio.sleep(0.3)  # real time on purpose: a slow audit write delays the answer, not the trail
        await record(self, *args)

    monkeypatch.setattr(Audit, "record", slow_record)
    admin = key_metadata(await mesh.mint("admin"))
    viewer = key_metadata(await mesh.mint("viewer"))
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    denied = await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=viewer,
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    page = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_prefix=f"namespaces/{ns}", page_size=10), metadata=admin
    )
    assert [(e.action, e.result) for e in page.audit_events] == [
        ("config.environments.update", "PERMISSION_DENIED")
    ]


async def test_audit_pages_follow_each_other_without_gaps(mesh: Mesh, ns: str) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    for i in range(5):
        await mesh.config().CreateNamespace(
            pb.CreateNamespaceRequest(namespace_id=f"{ns}-{i}", namespace=pb.Namespace()), metadata=admin
        )
    ids, token = [], ""
    while True:
        page = await mesh.audit().ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                resource_prefix=f"namespaces/{ns}-", page_size=2, page_token=token
            ),
            metadata=admin,
        )
        ids += [e.resource for e in page.audit_events]
        token = page.next_page_token
        if not token:
            break
    assert ids == [f"namespaces/{ns}-{i}" for i in reversed(range(5))]


# -- Redis down -------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["local", "refuse"])
async def test_when_redis_dies_the_limiter_falls_back_and_recovers(
    tmp_path: Any, openbao: BootstrappedVault, start_config_server: ServerFactory, fallback: str
) -> None:
    from prometheus_client import REGISTRY

    from tools.stack.valkey import start_valkey

    valkey = start_valkey(tmp_path / "valkey")
    port = int(valkey.url.rpartition(":")[2].split("/")[0])
    try:
        server, addr = await start_config_server(
            valkey.url, **openbao.settings(), rate_limit_fallback=fallback, redis_timeout=0.5
        )
        async with aio.insecure_channel(addr) as channel:
            mesh = Mesh(server, addr, channel)
            key = key_metadata(await mesh.mint("viewer", rate_per_second=0.2, rate_burst=3))
            assert (await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)).code() == (
                grpc.StatusCode.NOT_FOUND  # authenticated: the key's record is now cached
            )
            valkey.process.kill()
            outcomes = []
            for _ in range(6):
                error = await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)
                outcomes.append(error_info(error).reason)
            if fallback == "local":
                # Three admitted by the in-process limiter (then failing in the handler, which
                # needs Redis), the rest refused by it.
                assert outcomes == ["REDIS_UNAVAILABLE"] * 3 + ["RATE_LIMITED"] * 3
            else:
                assert outcomes == ["RATE_LIMITER_UNAVAILABLE"] * 6
            assert REGISTRY.get_sample_value("devmesh_ratelimit_degraded") == 1
            valkey = start_valkey(tmp_path / "valkey", port)

            async def admitted_by_redis() -> bool:
                error = await refused(mesh.config().ResolveConfig, resolve_request(), metadata=key)
                return error_info(error).reason == "NOT_FOUND"  # its bucket still had tokens left

            await eventually(admitted_by_redis, "the limiter to recover with Redis", within=20)
            assert REGISTRY.get_sample_value("devmesh_ratelimit_degraded") == 0
    finally:
        valkey.process.stop()

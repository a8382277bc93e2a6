"""ApiKeyService on a real config server with auth on: a key's life (creation, rotation,
revocation, listing, retention), and how soon another replica hears of a revocation."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc import aio

from devmesh.config.v1 import api_keys_pb2 as kpb
from devmesh.config.v1 import config_pb2_grpc
from services.runtime.identity import keys, keystore
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import error_info, eventually, key_metadata, refused, violated_fields
from tests.integration.conftest import Mesh, resolve_request
from tools.stack.valkey import Valkey


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
    _, replica_addr = await start_config_server(valkey.url, **openbao.settings(), auth_cache_ttl=300.0)
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

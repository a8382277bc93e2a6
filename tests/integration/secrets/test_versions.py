"""A secret's versions: added, read, disabled, enabled, destroyed; writers that expect a version
conflict with ABORTED, and none loses what it wrote."""

from __future__ import annotations

import asyncio

import grpc

from devmesh.secrets.v1 import secrets_pb2 as pb
from tests.helpers import error_info, refused
from tests.integration.secrets.conftest import Secrets, access, add, revision_of, version


async def test_the_version_lifecycle(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    assert (await add(secrets, admin, sid, b"one")).name == version(sid, 1)
    assert (await add(secrets, admin, sid, b"two")).name == version(sid, 2)
    latest = await access(secrets, admin, version(sid, "latest"))
    assert (latest.name, latest.payload.data) == (version(sid, 2), b"two")

    await secrets.stub.DisableSecretVersion(
        pb.DisableSecretVersionRequest(name=version(sid, 2)), metadata=admin
    )
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == b"one"
    error = await refused(access, secrets, admin, version(sid, 2))
    assert (
        error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "VERSION_DISABLED"
    )

    await secrets.stub.EnableSecretVersion(
        pb.EnableSecretVersionRequest(name=version(sid, 2)), metadata=admin
    )
    await secrets.stub.DestroySecretVersion(
        pb.DestroySecretVersionRequest(name=version(sid, 1)), metadata=admin
    )
    error = await refused(access, secrets, admin, version(sid, 1))
    assert error_info(error).reason == "VERSION_DESTROYED"
    error = await refused(
        secrets.stub.EnableSecretVersion, pb.EnableSecretVersionRequest(name=version(sid, 1)), metadata=admin
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    listed = await secrets.stub.ListSecretVersions(
        pb.ListSecretVersionsRequest(parent=f"secrets/{sid}"), metadata=admin
    )
    assert [(v.name, v.state) for v in listed.versions] == [
        (version(sid, 2), pb.SecretVersion.STATE_ENABLED),
        (version(sid, 1), pb.SecretVersion.STATE_DESTROYED),
    ]
    error = await refused(access, secrets, admin, version(sid, 9))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await secrets.stub.DeleteSecret(pb.DeleteSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    error = await refused(secrets.stub.GetSecret, pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # The id is free again, with nothing of the old secret left.
    again = await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin
    )
    assert (revision_of(again.etag), again.latest_version) == (1, 0)


async def test_concurrent_writers_conflict_with_aborted_and_lose_nothing(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, b"base")
    outcomes = await asyncio.gather(
        *(add(secrets, admin, sid, f"expecting-1-{i}".encode(), expected_version=1) for i in range(6)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, pb.SecretVersion)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 5
    assert all(
        e.code() == grpc.StatusCode.ABORTED and error_info(e).reason == "VERSION_CONFLICT" for e in lost
    )
    # Writers without an expectation only want their value added: all of them land.
    values = [f"any-{i}".encode() for i in range(6)]
    added = await asyncio.gather(*(add(secrets, admin, sid, v) for v in values))
    numbers = sorted(int(v.name.rpartition("/")[2]) for v in added)
    assert numbers == list(range(3, 9))
    stored = {(await access(secrets, admin, version(sid, n))).payload.data for n in numbers}
    assert stored == set(values)

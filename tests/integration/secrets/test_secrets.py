"""The secrets service on real OpenBao and Valkey, auth on: versions, check-and-set, access
policies, rotation across replicas, events, envelope encryption, audit, Vault failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.runtime.audit import STREAM as AUDIT_STREAM
from services.runtime.errors import NotFound
from services.runtime.identity import keys
from services.runtime.server import Server
from services.runtime.vault import TRANSIT_MOUNT
from services.secrets import app as secrets_app
from services.secrets import domain as secrets_domain
from services.secrets.envelope import DATA_KEY
from services.secrets.vault_store import INTERRUPTED_AFTER_US, MetadataConflict, SecretStore, now_us
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import (
    Metadata,
    detail,
    error_info,
    eventually,
    health_becomes,
    key_metadata,
    mint_key,
    refused,
    violated_fields,
)
from tools.stack import vault_bootstrap
from tools.stack.openbao import OpenBao, start_openbao
from tools.stack.valkey import Valkey

# Short intervals: the scheduler looks for due rotations, a quiet watch hears progress, soon.
FAST = {"DEVMESH_SECRETS_ROTATION_CHECK_INTERVAL": "0.1", "DEVMESH_SECRETS_WATCH_PROGRESS_INTERVAL": "0.2"}
READ, MANAGE, ADMIN = pb.Binding.LEVEL_READ, pb.Binding.LEVEL_MANAGE, pb.Binding.LEVEL_ADMIN


@dataclass
class Secrets:
    server: Server
    addr: str
    channel: aio.Channel

    @property
    def stub(self) -> secrets_pb2_grpc.SecretsServiceStub:
        return secrets_pb2_grpc.SecretsServiceStub(self.channel)

    async def key(self, role: str) -> Metadata:
        """Call metadata with a new API key of `role` on this server (`mint_key`)."""
        return key_metadata(await mint_key(self.server, role))


async def _start(
    start_config_server: ServerFactory, valkey: Valkey, openbao: BootstrappedVault, **settings: Any
) -> tuple[Server, str]:
    return await start_config_server(
        valkey.url, env=FAST, specs=[secrets_app.SPEC], **{**openbao.settings("secrets"), **settings}
    )


@pytest.fixture(scope="module")
async def secrets(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Secrets]:
    server, addr = await _start(start_config_server, valkey, openbao)
    async with aio.insecure_channel(addr) as channel:
        yield Secrets(server, addr, channel)


@pytest.fixture
def sid() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


def revision_of(etag: str) -> int:
    """The metadata revision an etag (`"r3-v2-..."`) names: how many writes the secret has had."""
    match = re.match(r'^"r(\d+)-', etag)
    assert match, etag
    return int(match[1])


def version(sid: str, n: int | str) -> str:
    return f"secrets/{sid}/versions/{n}"


async def add(s: Secrets, md: Any, sid: str, value: bytes, **kwargs: Any) -> pb.SecretVersion:
    return await s.stub.AddSecretVersion(
        pb.AddSecretVersionRequest(parent=f"secrets/{sid}", payload=pb.SecretPayload(data=value), **kwargs),
        metadata=md,
    )


async def access(s: Secrets, md: Any, name: str) -> pb.AccessSecretVersionResponse:
    return await s.stub.AccessSecretVersion(pb.AccessSecretVersionRequest(name=name), metadata=md)


async def following(stream: Any) -> None:
    """Return once `stream` follows the event log: its first message, a progress event on a
    quiet stream, says where it starts, and every event after that reaches it."""
    assert (await asyncio.wait_for(stream.read(), 10)).type == pb.SecretEvent.TYPE_PROGRESS


async def next_event(stream: Any) -> pb.SecretEvent:
    """The stream's next event that is not a progress event."""
    while (event := await asyncio.wait_for(stream.read(), 10)).type == pb.SecretEvent.TYPE_PROGRESS:
        pass
    return event


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


async def test_concurrent_metadata_updates_lose_nothing(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    creates = await asyncio.gather(
        *(
            secrets.stub.CreateSecret(
                pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin
            )
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    created = [c for c in creates if isinstance(c, pb.Secret)]
    assert len(created) == 1
    assert all(
        isinstance(c, grpc.aio.AioRpcError) and c.code() == grpc.StatusCode.ALREADY_EXISTS
        for c in creates
        if c not in created
    )

    # Updates without an etag read, change and write back at the same time: each lands on top
    # of the others (the etag counts every one of them) instead of overwriting what it read.
    name, labels_only = f"secrets/{sid}", field_mask_pb2.FieldMask(paths=["labels"])

    def relabel(writer: str, etag: str = "") -> pb.UpdateSecretRequest:
        secret = pb.Secret(name=name, labels={"writer": writer}, etag=etag)
        return pb.UpdateSecretRequest(secret=secret, update_mask=labels_only)

    await asyncio.gather(*(secrets.stub.UpdateSecret(relabel(str(i)), metadata=admin) for i in range(6)))
    final = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    assert revision_of(final.etag) == revision_of(created[0].etag) + 6
    assert final.labels["writer"] in {str(i) for i in range(6)}

    # With the etag it read, a writer that lost the race is ABORTED and writes nothing.
    error = await refused(secrets.stub.UpdateSecret, relabel("stale", created[0].etag), metadata=admin)
    assert error.code() == grpc.StatusCode.ABORTED and error_info(error).reason == "ETAG_MISMATCH"
    again = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    assert (again.etag, again.labels["writer"]) == (final.etag, final.labels["writer"])


async def test_a_metadata_write_based_on_a_stale_read_is_refused(secrets: Secrets, sid: str) -> None:
    """What the rotation scheduler and a caller both do (read, decide, write): the write that
    comes second would put back what it read over the first one's change; it fails instead."""
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    assert secrets.server.runtime.vault is not None
    store = SecretStore(secrets.server.runtime.vault)
    first, second = await store.read(sid), await store.read(sid)
    first.pending, first.promote_us = 7, 123
    await store.write_meta(first)
    second.labels = {"late": "yes"}
    with pytest.raises(MetadataConflict):
        await store.write_meta(second)
    stored = await store.read(sid)
    assert (stored.pending, stored.promote_us, stored.labels) == (7, 123, {})


async def test_listing_while_secrets_are_deleted_pages_through_what_is_left(
    secrets: Secrets, sid: str
) -> None:
    admin = await secrets.key("admin")
    ids = [f"{sid}-{i:02d}" for i in range(24)]
    await asyncio.gather(
        *(
            secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=s, secret=pb.Secret()), metadata=admin)
            for s in ids
        )
    )

    async def list_all() -> list[str]:
        seen, token = [], ""
        while True:
            page = await secrets.stub.ListSecrets(
                pb.ListSecretsRequest(prefix=sid, page_size=5, page_token=token), metadata=admin
            )
            seen += [m.name.removeprefix("secrets/") for m in page.secrets]
            if not (token := page.next_page_token):
                return seen

    # Every other secret goes while listings read pages of them: a listing never fails on a
    # secret that vanished between its LIST and its read, and never ends before the last page.
    doomed = ids[1::2]
    deletions = [
        secrets.stub.DeleteSecret(pb.DeleteSecretRequest(name=f"secrets/{s}"), metadata=admin) for s in doomed
    ]
    *listings, deleted = await asyncio.gather(
        *(list_all() for _ in range(4)), asyncio.gather(*deletions), return_exceptions=True
    )
    assert not isinstance(deleted, BaseException)
    kept = ids[0::2]
    for seen in listings:
        assert isinstance(seen, list), seen
        assert seen == sorted(seen) and set(kept) <= set(seen) <= set(ids)
    assert await list_all() == kept


async def test_access_policies_decide_before_existence(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    reader, manager, stranger = [await secrets.key("service") for _ in range(3)]
    who = {
        name: f"apikey:{keys.parse(md[0][1]).key_id}"
        for name, md in (("reader", reader), ("manager", manager))
    }
    name = f"db-{sid}"
    await secrets.stub.SetAccessPolicy(
        pb.SetAccessPolicyRequest(
            policy=pb.AccessPolicy(
                name=f"accessPolicies/p-{sid}", prefix=name,
                bindings=[pb.Binding(member=who["reader"], level=READ), pb.Binding(member=who["manager"], level=MANAGE)],
            )
        ),
        metadata=admin,
    )  # fmt: skip
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=name, secret=pb.Secret()), metadata=admin
    )
    await add(secrets, admin, name, b"s3cret")
    assert (await access(secrets, reader, version(name, "latest"))).payload.data == b"s3cret"

    def denied(error: grpc.aio.AioRpcError) -> bool:
        return error.code() == grpc.StatusCode.PERMISSION_DENIED

    # The stranger learns nothing: an existing and a missing secret are refused alike.
    assert denied(await refused(access, secrets, stranger, version(name, "latest")))
    assert denied(await refused(access, secrets, stranger, version(f"{name}-missing", "latest")))
    assert denied(await refused(access, secrets, reader, version(f"other-{sid}", "latest")))
    # READ is not MANAGE; MANAGE is not ADMIN; the service role may not add versions at all.
    assert denied(await refused(add, secrets, reader, name, b"x"))
    assert denied(await refused(
        secrets.stub.DisableSecretVersion, pb.DisableSecretVersionRequest(name=version(name, 1)), metadata=reader
    ))  # fmt: skip
    error = await refused(
        secrets.stub.DeleteSecret, pb.DeleteSecretRequest(name=f"secrets/{name}"), metadata=manager
    )
    assert denied(error)
    listed = await secrets.stub.ListSecrets(pb.ListSecretsRequest(prefix="db-"), metadata=reader)
    assert [s.name for s in listed.secrets] == [f"secrets/{name}"]
    assert (
        await secrets.stub.ListSecrets(pb.ListSecretsRequest(prefix="db-"), metadata=stranger)
    ).secrets == []


async def test_values_never_reach_logs_or_the_audit_trail(secrets: Secrets, sid: str, capfd: Any) -> None:
    admin = await secrets.key("admin")
    value = f"hunter2-{uuid.uuid4().hex}".encode()
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, value)
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == value
    await refused(access, secrets, await secrets.key("viewer"), version(sid, 1))
    entries = await secrets.server.runtime.redis.xrevrange(AUDIT_STREAM, count=20)
    mine = [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in entries
        if f[b"resource"].decode().endswith(sid) or sid in f[b"resource"].decode()
    ]
    actions = [(e["action"], e["result"], e.get("detail.version", "")) for e in mine]
    assert ("secrets.versions.access", "OK", "1") in actions
    assert ("secrets.versions.access", "PERMISSION_DENIED", "") in actions
    assert ("secrets.versions.add", "OK", "1") in actions
    captured = capfd.readouterr()
    assert value.decode() not in captured.out + captured.err
    assert all(value not in v for _, f in entries for v in f.values())


async def test_a_rotation_is_seen_by_a_watcher(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(
        interval=duration_pb2.Duration(seconds=3600), random=pb.RandomGenerator(length=24)
    )
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    await add(secrets, admin, sid, b"first")
    watch = secrets.stub.WatchSecretEvents(pb.WatchSecretEventsRequest(prefix=sid), metadata=admin)
    await following(watch)  # it starts at the newest event: what comes after, it hears
    rotated = await secrets.stub.RotateSecret(
        pb.RotateSecretRequest(name=f"secrets/{sid}", promote=True), metadata=admin
    )
    assert rotated.latest_version == 2 and rotated.pending_version == 0
    event = await next_event(watch)
    assert (event.type, event.secret, event.version) == (pb.SecretEvent.TYPE_ROTATED, f"secrets/{sid}", 2)
    watch.cancel()
    value = (await access(secrets, admin, version(sid, "latest"))).payload.data
    assert len(value) == 24 and value != b"first"


async def test_two_phase_rotation_keeps_the_previous_version_until_promotion(
    secrets: Secrets, sid: str
) -> None:
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(
        interval=duration_pb2.Duration(seconds=3600), promotion_delay=duration_pb2.Duration(seconds=1),
        random=pb.RandomGenerator(),
    )  # fmt: skip
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    await add(secrets, admin, sid, b"current")
    pending = await secrets.stub.RotateSecret(pb.RotateSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    assert (pending.latest_version, pending.pending_version) == (1, 2)
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == b"current"
    assert (
        len((await access(secrets, admin, version(sid, 2))).payload.data) == 32
    )  # consumers can pre-load it
    error = await refused(
        secrets.stub.RotateSecret, pb.RotateSecretRequest(name=f"secrets/{sid}"), metadata=admin
    )
    assert error_info(error).reason == "ROTATION_PENDING"

    async def promoted() -> bool:
        got = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
        return got.latest_version == 2

    await eventually(promoted, "the pending version to be promoted after its delay")
    assert (await access(secrets, admin, version(sid, 1))).payload.data == b"current"  # previous kept


async def test_a_delete_with_an_etag_and_a_concurrent_update_never_both_succeed(
    secrets: Secrets, sid: str
) -> None:
    admin = await secrets.key("admin")
    labels_only = field_mask_pb2.FieldMask(paths=["labels"])
    for trial in range(4):
        name = f"secrets/{sid}-{trial}"
        created = await secrets.stub.CreateSecret(
            pb.CreateSecretRequest(secret_id=f"{sid}-{trial}", secret=pb.Secret()), metadata=admin
        )
        updates = [
            secrets.stub.UpdateSecret(
                pb.UpdateSecretRequest(
                    secret=pb.Secret(name=name, labels={"n": str(i)}), update_mask=labels_only
                ),
                metadata=admin,
            )
            for i in range(3)
        ]
        delete = secrets.stub.DeleteSecret(
            pb.DeleteSecretRequest(name=name, etag=created.etag), metadata=admin
        )
        *updated, deleted = await asyncio.gather(*updates, delete, return_exceptions=True)
        landed = [u for u in updated if isinstance(u, pb.Secret)]
        if isinstance(deleted, grpc.aio.AioRpcError):
            # An update got in first: the delete's etag no longer held, and nothing was deleted.
            assert deleted.code() == grpc.StatusCode.ABORTED and landed
            got = await secrets.stub.GetSecret(pb.GetSecretRequest(name=name), metadata=admin)
            assert revision_of(got.etag) == revision_of(created.etag) + len(landed)
        else:
            # The delete got in first: every update after it found no secret.
            assert landed == []
            assert all(
                isinstance(u, grpc.aio.AioRpcError) and u.code() == grpc.StatusCode.NOT_FOUND for u in updated
            )


async def _mark_deleted(secrets: Secrets, sid: str, *, died: bool) -> SecretStore:
    """Write the mark a delete writes before it removes the secret from Vault; `died`: long
    enough ago that its delete is taken as interrupted."""
    assert secrets.server.runtime.vault is not None
    store = SecretStore(secrets.server.runtime.vault)
    marked = await store.read(sid, deleting=True)
    marked.deleting_us = now_us() - (INTERRUPTED_AFTER_US + 1_000_000 if died else 0)
    await store.write_meta(marked)
    return store


async def test_a_delete_that_died_halfway_left_no_secret_behind(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(labels={"old": "yes"})), metadata=admin
    )
    await add(secrets, admin, sid, b"old value")
    store = await _mark_deleted(secrets, sid, died=True)

    for call in (
        lambda: secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin),
        lambda: access(secrets, admin, version(sid, "latest")),
        lambda: access(secrets, admin, version(sid, 1)),
        lambda: add(secrets, admin, sid, b"late"),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
    listed = await secrets.stub.ListSecrets(pb.ListSecretsRequest(prefix=sid), metadata=admin)
    assert list(listed.secrets) == []
    # Creating the id again finishes the delete and starts from nothing.
    again = await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin
    )
    assert (revision_of(again.etag), again.latest_version, dict(again.labels)) == (1, 0, {})

    # A delete still at work owns its mark: nobody else removes the secret or reuses the id.
    await _mark_deleted(secrets, sid, died=False)
    delete = pb.DeleteSecretRequest(name=f"secrets/{sid}")
    assert (
        await refused(secrets.stub.DeleteSecret, delete, metadata=admin)
    ).code() == grpc.StatusCode.NOT_FOUND
    create = pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret())
    error = await refused(secrets.stub.CreateSecret, create, metadata=admin)
    assert error.code() == grpc.StatusCode.ABORTED and error_info(error).reason == "SECRET_BEING_DELETED"
    assert (await store.read(sid, deleting=True)).deleting_us

    # A delete that finds a dead one's mark finishes the removal; to its caller the secret was gone.
    await _mark_deleted(secrets, sid, died=True)
    assert (
        await refused(secrets.stub.DeleteSecret, delete, metadata=admin)
    ).code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFound):
        await store.read(sid, deleting=True)


async def test_a_replica_rebuilds_the_rotation_schedule_past_a_secret_being_deleted(
    secrets: Secrets, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory, sid: str
) -> None:
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(interval=duration_pb2.Duration(seconds=3600), random=pb.RandomGenerator())
    for suffix in ("a", "b"):  # Vault lists them in this order
        await secrets.stub.CreateSecret(
            pb.CreateSecretRequest(secret_id=f"{sid}-{suffix}", secret=pb.Secret(rotation=rotation)),
            metadata=admin,
        )
    await _mark_deleted(secrets, f"{sid}-a", died=True)
    redis = secrets.server.runtime.redis
    await redis.delete(secrets_domain.DUE)  # the schedule is lost with Redis
    await _start(start_config_server, valkey, openbao)  # a replica rebuilds it as it starts

    async def scheduled() -> bool:
        return await redis.zscore(secrets_domain.DUE, f"{sid}-b") is not None

    await eventually(scheduled, "the schedule to be rebuilt past the deleted secret")
    finish = pb.DeleteSecretRequest(name=f"secrets/{sid}-a")
    assert (
        await refused(secrets.stub.DeleteSecret, finish, metadata=admin)
    ).code() == grpc.StatusCode.NOT_FOUND


async def _crash_mid_rotation(secrets: Secrets, sid: str) -> int:
    """Leave `sid` as a rotation leaves it when it dies between recording its version as
    pending and adding it, with the grace period over; returns the number it recorded."""
    assert secrets.server.runtime.vault is not None
    store = SecretStore(secrets.server.runtime.vault)
    meta = await store.read(sid)
    meta.pending, meta.promote_us = meta.newest + 1, now_us() - INTERRUPTED_AFTER_US - 1_000_000
    meta.next_rotation_us = now_us() + 3_600_000_000  # the rotation had moved it on
    await store.write_meta(meta)
    return meta.pending


async def test_a_rotation_that_died_before_adding_its_version_is_started_over(
    secrets: Secrets, sid: str
) -> None:
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(interval=duration_pb2.Duration(seconds=3600), random=pb.RandomGenerator())
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    await add(secrets, admin, sid, b"current")
    recorded = await _crash_mid_rotation(secrets, sid)
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == b"current"
    # The scheduler's entry is the one the rotation was started from.
    await secrets.server.runtime.redis.zadd(secrets_domain.DUE, {sid: now_us() - 1})

    async def started_over() -> pb.Secret | None:
        got = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
        return got if got.latest_version == recorded else None

    got = await eventually(started_over, "the dead rotation to be started over")
    assert got.pending_version == 0
    assert len((await access(secrets, admin, version(sid, "latest"))).payload.data) == 32


async def test_a_version_added_over_a_dead_rotation_is_the_latest_at_once(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, b"one")
    recorded = await _crash_mid_rotation(secrets, sid)
    added = await add(secrets, admin, sid, b"two")
    assert added.name == version(sid, recorded)
    latest = await access(secrets, admin, version(sid, "latest"))
    assert (latest.name, latest.payload.data) == (version(sid, recorded), b"two")
    got = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
    assert (got.latest_version, got.pending_version) == (recorded, 0)


async def test_two_replicas_rotate_each_due_secret_exactly_once(
    secrets: Secrets, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory, sid: str
) -> None:
    _, other_addr = await _start(
        start_config_server, valkey, openbao
    )  # a second replica, same Redis and Vault
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(interval=duration_pb2.Duration(seconds=1), random=pb.RandomGenerator())
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    await add(secrets, admin, sid, b"seed")

    async def rotated_three_times() -> bool:  # a due time a second, between the two replicas
        got = await secrets.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
        return got.latest_version >= 4

    await eventually(rotated_three_times, "three rotations", within=20)
    await secrets.stub.UpdateSecret(
        pb.UpdateSecretRequest(secret=pb.Secret(name=f"secrets/{sid}"), update_mask={"paths": ["rotation"]}),
        metadata=admin,
    )  # stop rotating
    listed = await secrets.stub.ListSecretVersions(
        pb.ListSecretVersionsRequest(parent=f"secrets/{sid}"), metadata=admin
    )
    created = sorted(v.create_time.ToMicroseconds() for v in listed.versions)[1:]  # the rotations
    assert 3 <= len(created) <= 5, len(created)
    gaps = [b - a for a, b in itertools.pairwise(created)]
    assert min(gaps) > 700_000, gaps  # never two rotations for one due time
    async with aio.insecure_channel(other_addr) as channel:  # both replicas serve the same truth
        other = secrets_pb2_grpc.SecretsServiceStub(channel)
        assert (
            await other.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin)
        ).latest_version == len(listed.versions)


async def test_manual_rotation_reminds_instead_of_inventing_a_value(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(interval=duration_pb2.Duration(seconds=1), manual=pb.ManualGenerator())
    watch = secrets.stub.WatchSecretEvents(pb.WatchSecretEventsRequest(prefix=sid), metadata=admin)
    await following(watch)
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    event = await next_event(watch)
    assert event.type == pb.SecretEvent.TYPE_ROTATION_DUE
    watch.cancel()
    error = await refused(
        secrets.stub.RotateSecret, pb.RotateSecretRequest(name=f"secrets/{sid}"), metadata=admin
    )
    assert error_info(error).reason == "PAYLOAD_REQUIRED"
    await secrets.stub.RotateSecret(
        pb.RotateSecretRequest(
            name=f"secrets/{sid}", promote=True, payload=pb.SecretPayload(data=b"by-hand")
        ),
        metadata=admin,
    )
    assert (await access(secrets, admin, version(sid, "latest"))).payload.data == b"by-hand"


async def test_envelope_encryption_survives_a_key_rotation(
    secrets: Secrets, openbao: BootstrappedVault
) -> None:
    admin = await secrets.key("admin")
    tenant = f"tenants/t{uuid.uuid4().hex[:8]}"
    sealed = await secrets.stub.Encrypt(
        pb.EncryptRequest(tenant=tenant, plaintext=b"card 4242"), metadata=admin
    )
    error = await refused(
        secrets.stub.Decrypt,
        pb.DecryptRequest(tenant="tenants/someone-else", ciphertext=sealed.ciphertext),
        metadata=admin,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    transit = openbao.client().secrets.transit
    transit.rotate_key(DATA_KEY, mount_point=TRANSIT_MOUNT)
    opened = await secrets.stub.Decrypt(
        pb.DecryptRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert opened.plaintext == b"card 4242"
    rewrapped = await secrets.stub.Rewrap(
        pb.RewrapRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert rewrapped.key_version == sealed.key_version + 1
    transit.update_key_configuration(
        DATA_KEY, min_decryption_version=rewrapped.key_version, mount_point=TRANSIT_MOUNT
    )
    error = await refused(
        secrets.stub.Decrypt, pb.DecryptRequest(tenant=tenant, ciphertext=sealed.ciphertext), metadata=admin
    )
    assert error_info(error).reason == "KEY_VERSION_RETIRED"
    opened = await secrets.stub.Decrypt(
        pb.DecryptRequest(tenant=tenant, ciphertext=rewrapped.ciphertext), metadata=admin
    )
    assert opened.plaintext == b"card 4242"


@contextlib.asynccontextmanager
async def _on_own_vault(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory, **settings: Any
) -> AsyncIterator[tuple[Secrets, OpenBao, Any, str]]:
    """A secrets server on a Vault of its own (to freeze or seal it without harming the other
    tests), with one secret holding b"before": (the server, its Vault, admin metadata, the id)."""
    bao = start_openbao(tmp_path / "openbao")
    assert bao.process is not None
    try:
        approles = vault_bootstrap.bootstrap(bao.client(), ["secrets"], tmp_path / "approles")
        vault = BootstrappedVault(bao, approles)
        server, addr = await start_config_server(
            valkey.url, env=FAST, specs=[secrets_app.SPEC], **settings, **vault.settings("secrets")
        )
        async with aio.insecure_channel(addr) as channel:
            s = Secrets(server, addr, channel)
            admin = await s.key("admin")
            sid = f"v{uuid.uuid4().hex[:8]}"
            await s.stub.CreateSecret(
                pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin
            )
            await add(s, admin, sid, b"before")
            yield s, bao, admin, sid
    finally:
        bao.process.stop()


async def test_vault_unreachable_is_unavailable_then_recovers(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory
) -> None:
    async with _on_own_vault(tmp_path, valkey, start_config_server, vault_timeout=1.0) as (
        s,
        bao,
        admin,
        sid,
    ):
        assert bao.process is not None
        service = secrets_app.SPEC.proto_services[0]
        os.kill(bao.process.pid, signal.SIGSTOP)  # Vault hangs: every call times out
        try:
            error = await refused(access, s, admin, version(sid, "latest"))
            assert (
                error.code() == grpc.StatusCode.UNAVAILABLE
                and error_info(error).reason == "VAULT_UNAVAILABLE"
            )
            assert detail(error, error_details_pb2.RetryInfo)
            error = await refused(add, s, admin, sid, b"during")
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            os.kill(bao.process.pid, signal.SIGCONT)
        await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.SERVING)
        listed = await s.stub.ListSecretVersions(
            pb.ListSecretVersionsRequest(parent=f"secrets/{sid}"), metadata=admin
        )
        latest = await access(s, admin, version(sid, "latest"))
        # Nothing halfway: the write that failed either landed whole or not at all.
        assert latest.payload.data in (b"before", b"during") and len(listed.versions) in (1, 2)


async def test_a_sealed_vault_is_unavailable_and_not_serving(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory
) -> None:
    async with _on_own_vault(tmp_path, valkey, start_config_server) as (s, bao, admin, sid):
        bao.client().sys.seal()
        for call in (
            lambda: access(s, admin, version(sid, "latest")),
            lambda: add(s, admin, sid, b"during"),
            lambda: s.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin),
        ):
            error = await refused(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert error_info(error).reason == "VAULT_UNAVAILABLE" and "sealed" in (error.details() or "")
            assert detail(error, error_details_pb2.RetryInfo)
        service = secrets_app.SPEC.proto_services[0]
        await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_config_resolves_secret_references_as_the_caller(
    secrets: Secrets, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory, sid: str
) -> None:
    from google.protobuf import json_format

    from devmesh.config.v1 import config_pb2 as cpb
    from devmesh.config.v1 import config_pb2_grpc

    _, config_addr = await start_config_server(
        valkey.url, peers=(("secrets", secrets.addr),), **openbao.settings("config")
    )
    admin = await secrets.key("admin")
    allowed, stranger = await secrets.key("service"), await secrets.key("service")
    await secrets.stub.CreateSecret(pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin)
    await add(secrets, admin, sid, b'{"user": "app", "password": "pw-123"}')
    member = f"apikey:{keys.parse(allowed[0][1]).key_id}"
    await secrets.stub.SetAccessPolicy(
        pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name=f"accessPolicies/{sid}", prefix=sid,
                                                          bindings=[pb.Binding(member=member, level=READ)])),
        metadata=admin,
    )  # fmt: skip
    ns = f"n{sid}"
    async with aio.insecure_channel(config_addr) as channel:
        config = config_pb2_grpc.ConfigServiceStub(channel)
        await config.CreateNamespace(
            cpb.CreateNamespaceRequest(namespace_id=ns, namespace=cpb.Namespace()), metadata=admin
        )
        env = cpb.Environment(name=f"namespaces/{ns}/environments/default")
        env.content.update(
            {"db": {"password": {"$secret": f"{sid}#password"}, "dsn": {"$secret": sid}, "host": "h"}}
        )
        await config.UpdateEnvironment(
            cpb.UpdateEnvironmentRequest(environment=env, allow_missing=True), metadata=admin
        )
        name = f"namespaces/{ns}/environments/default"

        async def resolve(md: Any, **kwargs: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
            got = await config.ResolveConfig(cpb.ResolveConfigRequest(name=name, **kwargs), metadata=md)
            return json_format.MessageToDict(got.content), [(s.path, s.redacted_reason) for s in got.secrets]

        content, report = await resolve(allowed, resolve_secrets=True)
        assert content["db"]["password"] == "pw-123" and content["db"]["host"] == "h"
        assert content["db"]["dsn"] == '{"user": "app", "password": "pw-123"}'
        assert report == [("/db/dsn", ""), ("/db/password", "")]
        content, report = await resolve(stranger, resolve_secrets=True)
        assert content["db"]["password"] == {"$secret": f"{sid}#password", "redacted": "SECRET_ACCESS_DENIED"}
        assert report == [("/db/dsn", "SECRET_ACCESS_DENIED"), ("/db/password", "SECRET_ACCESS_DENIED")]
        content, report = await resolve(allowed)  # without resolve_secrets, references stay as written
        assert content["db"]["password"] == {"$secret": f"{sid}#password"} and report == []
        # The cached (unresolved) answer was not polluted by the caller-specific one.
        content, _ = await resolve(stranger)
        assert "pw-123" not in str(content)


async def test_config_watchers_hear_about_rotated_secrets_they_reference(
    secrets: Secrets, valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory, sid: str
) -> None:
    from devmesh.config.v1 import config_pb2 as cpb
    from devmesh.config.v1 import config_pb2_grpc

    _, config_addr = await start_config_server(valkey.url, **openbao.settings("config"))
    admin = await secrets.key("admin")
    rotation = pb.RotationPolicy(interval=duration_pb2.Duration(seconds=3600), random=pb.RandomGenerator())
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(rotation=rotation)), metadata=admin
    )
    await add(secrets, admin, sid, b"v1")
    ns = f"w{sid}"
    async with aio.insecure_channel(config_addr) as channel:
        config = config_pb2_grpc.ConfigServiceStub(channel)
        await config.CreateNamespace(
            cpb.CreateNamespaceRequest(namespace_id=ns, namespace=cpb.Namespace()), metadata=admin
        )
        for env, content in (
            ("default", {"db": {"password": {"$secret": f"{sid}#password"}}}),
            ("prod", {"x": 1}),
        ):
            message = cpb.Environment(name=f"namespaces/{ns}/environments/{env}")
            message.content.update(content)
            await config.UpdateEnvironment(
                cpb.UpdateEnvironmentRequest(environment=message, allow_missing=True), metadata=admin
            )
        watch = config.WatchConfig(
            cpb.WatchConfigRequest(name=f"namespaces/{ns}/environments/prod", since_revision=3),
            metadata=admin,
        )
        assert (await watch.read()).HasField("progress")  # registered with the feed
        await secrets.stub.RotateSecret(
            pb.RotateSecretRequest(name=f"secrets/{sid}", promote=True), metadata=admin
        )
        while True:
            event = await asyncio.wait_for(watch.read(), 10)
            if event.HasField("secret_rotated"):
                break
        watch.cancel()
    rotated = event.secret_rotated
    # prod inherits the reference from the base layer.
    assert (rotated.secret, rotated.version, rotated.environment) == (f"secrets/{sid}", 2, "prod")
    assert list(rotated.paths) == ["/db/password"]


BAD_INPUT = [
    ("CreateSecret", pb.CreateSecretRequest(secret_id="9starts-with-a-digit"), "secret_id"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(labels={"Bad Key": "v"})), "secret.labels['Bad Key']"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(interval={"seconds": 60}))), "secret.rotation"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 60}, random=pb.RandomGenerator(length=4)))), "secret.rotation.random.length"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 60}, random=pb.RandomGenerator(alphabet="aa")))), "secret.rotation.random.alphabet"),
    ("CreateSecret", pb.CreateSecretRequest(secret_id="ok", secret=pb.Secret(rotation=pb.RotationPolicy(
        interval={"seconds": 0}, manual=pb.ManualGenerator()))), "secret.rotation.interval"),
    ("GetSecret", pb.GetSecretRequest(name="secrets/a/b"), "name"),
    ("AddSecretVersion", pb.AddSecretVersionRequest(parent="secrets/ok", payload=pb.SecretPayload()), "payload.data"),
    ("AddSecretVersion", pb.AddSecretVersionRequest(parent="secrets/ok", payload=pb.SecretPayload(data=b"x" * 70000)), "payload.data"),
    ("AccessSecretVersion", pb.AccessSecretVersionRequest(name="secrets/ok/versions/0"), "name"),
    ("AccessSecretVersion", pb.AccessSecretVersionRequest(name="secrets/ok/versions/newest"), "name"),
    ("DisableSecretVersion", pb.DisableSecretVersionRequest(name="secrets/ok/versions/latest"), "name"),
    ("ListSecrets", pb.ListSecretsRequest(page_size=-1), "page_size"),
    ("ListSecrets", pb.ListSecretsRequest(page_token="forged"), "page_token"),
    ("UpdateSecret", pb.UpdateSecretRequest(secret=pb.Secret(name="secrets/ok"), update_mask={"paths": ["name"]}), "update_mask"),
    ("Encrypt", pb.EncryptRequest(tenant="tenant-without-prefix", plaintext=b"x"), "tenant"),
    ("Encrypt", pb.EncryptRequest(tenant="tenants/t"), "plaintext"),
    ("Decrypt", pb.DecryptRequest(tenant="tenants/t", ciphertext="not-a-ciphertext"), "ciphertext"),
    ("SetAccessPolicy", pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name="accessPolicies/p", bindings=[
        pb.Binding(member="role:emperor", level=READ)])), "policy.bindings[0].member"),
    ("SetAccessPolicy", pb.SetAccessPolicyRequest(policy=pb.AccessPolicy(name="accessPolicies/p", bindings=[
        pb.Binding(member="*")])), "policy.bindings[0].level"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_", "field"), BAD_INPUT, ids=[f"{m}:{f}" for m, _, f in BAD_INPUT]
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    secrets: Secrets, method: str, request_: Any, field: str
) -> None:
    admin = await secrets.key("admin")
    error = await refused(getattr(secrets.stub, method), request_, metadata=admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in violated_fields(error)


async def test_a_bad_watch_cursor_is_invalid_argument(secrets: Secrets) -> None:
    admin = await secrets.key("admin")
    stream = secrets.stub.WatchSecretEvents(pb.WatchSecretEventsRequest(after_id="yesterday"), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_draining_server_ends_event_streams_instead_of_waiting_for_them(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> None:
    server, addr = await _start(start_config_server, valkey, openbao)
    async with aio.insecure_channel(addr) as channel:
        s = Secrets(server, addr, channel)
        quiet = pb.WatchSecretEventsRequest(
            prefix="no-secret-has-this-prefix"
        )  # other tests' events stay out
        stream = s.stub.WatchSecretEvents(quiet, metadata=await s.key("admin"))
        await following(stream)
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop(grace=8))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_event(stream)  # progress events may come first
        await stopping
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "SHUTTING_DOWN"
    assert time.monotonic() - started < 5  # not the whole grace period

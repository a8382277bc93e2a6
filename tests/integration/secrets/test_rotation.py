"""Rotation: seen by watchers (the secrets service's and config's), two-phase with a promotion
delay, once per due time across replicas, started over when it died, reminders for manual
secrets."""

from __future__ import annotations

import asyncio
import itertools

import grpc
from google.protobuf import duration_pb2
from grpc import aio

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.secrets import domain as secrets_domain
from services.secrets.vault_store import INTERRUPTED_AFTER_US, SecretStore, now_us
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import error_info, eventually, refused
from tests.integration.secrets.conftest import (
    Secrets,
    access,
    add,
    following,
    mark_deleted,
    next_event,
    start_secrets,
    version,
)
from tools.stack.valkey import Valkey


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
    await mark_deleted(secrets, f"{sid}-a", died=True)
    redis = secrets.server.runtime.redis
    await redis.delete(secrets_domain.DUE)  # the schedule is lost with Redis
    await start_secrets(start_config_server, valkey, openbao)  # a replica rebuilds it as it starts

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
    _, other_addr = await start_secrets(
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

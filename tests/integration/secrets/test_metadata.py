"""A secret's metadata under concurrent writers, listings and deletes, one of them dead halfway:
no update lost, no stale read written back, nothing of a deleted secret left behind."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from devmesh.secrets.v1 import secrets_pb2 as pb
from services.runtime.errors import NotFound
from services.secrets.vault_store import MetadataConflict, SecretStore
from tests.helpers import error_info, refused
from tests.integration.secrets.conftest import Secrets, access, add, mark_deleted, revision_of, version


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


async def test_a_delete_that_died_halfway_left_no_secret_behind(secrets: Secrets, sid: str) -> None:
    admin = await secrets.key("admin")
    await secrets.stub.CreateSecret(
        pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret(labels={"old": "yes"})), metadata=admin
    )
    await add(secrets, admin, sid, b"old value")
    store = await mark_deleted(secrets, sid, died=True)

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
    await mark_deleted(secrets, sid, died=False)
    delete = pb.DeleteSecretRequest(name=f"secrets/{sid}")
    assert (
        await refused(secrets.stub.DeleteSecret, delete, metadata=admin)
    ).code() == grpc.StatusCode.NOT_FOUND
    create = pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret())
    error = await refused(secrets.stub.CreateSecret, create, metadata=admin)
    assert error.code() == grpc.StatusCode.ABORTED and error_info(error).reason == "SECRET_BEING_DELETED"
    assert (await store.read(sid, deleting=True)).deleting_us

    # A delete that finds a dead one's mark finishes the removal; to its caller the secret was gone.
    await mark_deleted(secrets, sid, died=True)
    assert (
        await refused(secrets.stub.DeleteSecret, delete, metadata=admin)
    ).code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFound):
        await store.read(sid, deleting=True)

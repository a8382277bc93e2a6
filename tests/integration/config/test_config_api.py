"""The config service's RPCs through the full interceptor chain, against a real Valkey."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.helpers import detail, error_info, violated_fields
from tests.integration.config.conftest import create, doc, env_name, put

Stub = config_pb2_grpc.ConfigServiceStub


async def test_create_then_get_namespace(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    fetched = await config.GetNamespace(pb.GetNamespaceRequest(name=f"namespaces/{ns}"))
    assert created.name == fetched.name == f"namespaces/{ns}"
    assert fetched.display_name == "Test"
    assert fetched.revision == 1


async def test_creating_twice_is_already_exists(config: Stub, ns: str) -> None:
    await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(config, ns)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).domain == "config.devmesh"


async def test_missing_namespace_is_not_found_with_resource_info(config: Stub, ns: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.GetNamespace(pb.GetNamespaceRequest(name=f"namespaces/{ns}"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = detail(caught.value, error_details_pb2.ResourceInfo)
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert info.resource_name == f"namespaces/{ns}"


async def test_list_namespaces_pages_through_everything(config: Stub, ns: str) -> None:
    ids = [f"{ns}-{i}" for i in range(5)]
    for i in ids:
        await create(config, i)
    seen: list[str] = []
    token = ""
    while True:
        page = await config.ListNamespaces(pb.ListNamespacesRequest(page_size=2, page_token=token))
        assert len(page.namespaces) <= 2
        seen += [n.name.split("/")[1] for n in page.namespaces]
        token = page.next_page_token
        if not token:
            break
    assert [s for s in seen if s.startswith(ns)] == ids


async def test_update_namespace_with_a_stale_etag_is_aborted_and_changes_nothing(
    config: Stub, ns: str
) -> None:
    created = await create(config, ns)
    await config.UpdateNamespace(
        pb.UpdateNamespaceRequest(namespace=pb.Namespace(name=created.name, description="one"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateNamespace(
            pb.UpdateNamespaceRequest(
                namespace=pb.Namespace(name=created.name, description="two", etag=created.etag)
            )
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_info(caught.value).reason == "ETAG_MISMATCH"
    assert (await config.GetNamespace(pb.GetNamespaceRequest(name=created.name))).description == "one"


async def test_update_mask_limits_what_changes(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    updated = await config.UpdateNamespace(
        pb.UpdateNamespaceRequest(
            namespace=pb.Namespace(name=created.name, description="new", display_name=""),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )
    assert updated.description == "new"
    assert updated.display_name == "Test"


async def test_unknown_update_mask_path_is_invalid(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateNamespace(
            pb.UpdateNamespaceRequest(
                namespace=created, update_mask=field_mask_pb2.FieldMask(paths=["revision"])
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_resolve_merges_over_default_and_names_sources(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"db": {"host": "db", "port": 5432}, "debug": True})
    await put(config, ns, "prod", {"db": {"port": 6432}, "debug": None})
    resolved = await config.ResolveConfig(pb.ResolveConfigRequest(name=env_name(ns, "prod")))
    assert json_format.MessageToDict(resolved.content) == {"db": {"host": "db", "port": 6432}}
    assert [(s.path, s.environment) for s in resolved.sources] == [
        ("/db/host", "default"),
        ("/db/port", "prod"),
    ]
    assert resolved.revision == 3


async def test_update_without_allow_missing_is_not_found(config: Stub, ns: str) -> None:
    await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateEnvironment(
            pb.UpdateEnvironmentRequest(
                environment=pb.Environment(name=env_name(ns, "prod"), content=doc({}))
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stale_environment_etag_is_aborted_and_loses_nothing(config: Stub, ns: str) -> None:
    await create(config, ns)
    first = await put(config, ns, "default", {"v": 1})
    await put(config, ns, "default", {"v": 2}, etag=first.etag)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", {"v": 3}, etag=first.etag)
    assert caught.value.code() == grpc.StatusCode.ABORTED
    current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
    assert json_format.MessageToDict(current.content) == {"v": 2}


async def test_concurrent_writers_with_etags_lose_no_acknowledged_write(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"n": 0})

    async def increment() -> int:
        attempts = 0
        while True:
            attempts += 1
            current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
            n = json_format.MessageToDict(current.content)["n"]
            try:
                await put(config, ns, "default", {"n": n + 1}, etag=current.etag)
                return attempts
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.ABORTED

    await asyncio.gather(*(increment() for _ in range(8)))
    final = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
    assert json_format.MessageToDict(final.content)["n"] == 8


SCHEMA = {
    "type": "object",
    "properties": {
        "db": {"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]}
    },
}


async def test_schema_violations_are_invalid_argument_with_pointers(config: Stub, ns: str) -> None:
    await create(config, ns, schema=SCHEMA)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", {"db": {"port": "not-a-number"}})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["/db/port"]


async def test_base_change_that_breaks_an_overlay_is_refused(config: Stub, ns: str) -> None:
    await create(config, ns, schema=SCHEMA)
    await put(config, ns, "default", {"db": {"port": 1}})
    await put(config, ns, "prod", {"db": {"host": "x"}})  # valid only thanks to default's port
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", {"db": {}})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(caught.value, error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert any("'prod'" in v.description for v in bad_request.field_violations)


async def test_a_schema_that_existing_documents_break_is_refused(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    await put(config, ns, "default", {"db": {"port": "x"}})
    namespace = pb.Namespace(name=created.name)
    namespace.schema.CopyFrom(doc(SCHEMA))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateNamespace(pb.UpdateNamespaceRequest(namespace=namespace))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_delete_default_while_overlays_remain_is_refused(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {})
    await put(config, ns, "prod", {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.DeleteEnvironment(pb.DeleteEnvironmentRequest(name=env_name(ns, "default")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await config.DeleteEnvironment(pb.DeleteEnvironmentRequest(name=env_name(ns, "prod")))
    await config.DeleteEnvironment(pb.DeleteEnvironmentRequest(name=env_name(ns, "default")))
    listed = await config.ListEnvironments(pb.ListEnvironmentsRequest(parent=f"namespaces/{ns}"))
    assert list(listed.environments) == []


async def test_delete_namespace_needs_force_and_revisions_are_never_reused(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.DeleteNamespace(pb.DeleteNamespaceRequest(name=f"namespaces/{ns}"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await config.DeleteNamespace(pb.DeleteNamespaceRequest(name=f"namespaces/{ns}", force=True))
    recreated = await create(config, ns)
    assert recreated.revision == 4  # 1 create, 2 default, 3 delete, 4 create again


async def test_revisions_record_author_reason_and_content(config: Stub, ns: str) -> None:
    await create(config, ns)
    await config.UpdateEnvironment(
        pb.UpdateEnvironmentRequest(
            environment=pb.Environment(name=env_name(ns, "default"), content=doc({"a": 1})),
            allow_missing=True,
            reason="first values",
        )
    )
    revision = await config.GetRevision(pb.GetRevisionRequest(name=f"namespaces/{ns}/revisions/2"))
    assert revision.action == pb.ACTION_ENVIRONMENT_CREATED
    assert revision.reason == "first values"
    assert revision.author == "anonymous"
    assert json_format.MessageToDict(revision.content) == {"a": 1}
    listed = await config.ListRevisions(pb.ListRevisionsRequest(parent=f"namespaces/{ns}"))
    assert [r.revision for r in listed.revisions] == [2, 1]
    assert not listed.revisions[0].HasField("content")  # BASIC view by default


async def test_list_revisions_filters_by_environment_and_pages(config: Stub, ns: str) -> None:
    await create(config, ns)
    for i in range(3):
        await put(config, ns, "default", {"i": i})
        await put(config, ns, "prod", {"i": i})
    first = await config.ListRevisions(
        pb.ListRevisionsRequest(parent=f"namespaces/{ns}", environment="prod", page_size=2)
    )
    second = await config.ListRevisions(
        pb.ListRevisionsRequest(
            parent=f"namespaces/{ns}", environment="prod", page_size=2, page_token=first.next_page_token
        )
    )
    assert [r.revision for r in [*first.revisions, *second.revisions]] == [7, 5, 3]
    assert second.next_page_token == ""


async def test_diff_and_rollback(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"a": 1, "b": {"c": 2}})  # revision 2
    await put(config, ns, "default", {"a": 2, "b": {}})  # revision 3
    diff = await config.DiffRevisions(pb.DiffRevisionsRequest(name=env_name(ns, "default"), base_revision=2))
    assert diff.target_revision == 3
    assert [(c.operation, c.path) for c in diff.changes] == [
        (pb.CHANGE_OPERATION_REPLACE, "/a"),
        (pb.CHANGE_OPERATION_REMOVE, "/b/c"),
    ]
    rolled = await config.RollbackEnvironment(
        pb.RollbackEnvironmentRequest(name=env_name(ns, "default"), revision=2)
    )
    assert json_format.MessageToDict(rolled.content) == {"a": 1, "b": {"c": 2}}
    assert rolled.revision == 4
    record = await config.GetRevision(pb.GetRevisionRequest(name=f"namespaces/{ns}/revisions/4"))
    assert record.action == pb.ACTION_ENVIRONMENT_ROLLED_BACK
    assert record.source_revision == 2


async def test_rollback_to_before_the_environment_existed_is_a_failed_precondition(
    config: Stub, ns: str
) -> None:
    await create(config, ns)
    await put(config, ns, "default", {})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.RollbackEnvironment(
            pb.RollbackEnvironmentRequest(name=env_name(ns, "default"), revision=1)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rollback_revision_beyond_the_latest_is_invalid(config: Stub, ns: str) -> None:
    await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.RollbackEnvironment(
            pb.RollbackEnvironmentRequest(name=env_name(ns, "default"), revision=99)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_errors_carry_the_request_id(config: Stub, ns: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.GetNamespace(
            pb.GetNamespaceRequest(name=f"namespaces/{ns}"), metadata=(("x-request-id", "req-42"),)
        )
    info = detail(caught.value, error_details_pb2.RequestInfo)
    assert isinstance(info, error_details_pb2.RequestInfo)
    assert info.request_id == "req-42"


async def test_every_write_reaches_the_audit_stream(config: Stub, ns: str, valkey: Any) -> None:
    import redis.asyncio as aioredis

    await create(config, ns)
    await put(config, ns, "default", {"secret": {"$secret": "db#password"}})
    client = aioredis.Redis.from_url(valkey.url)
    try:
        entries = await client.xrevrange("devmesh:audit", count=200)
    finally:
        await client.aclose()
    mine = [f for _, f in entries if f[b"resource"].decode().startswith(f"namespaces/{ns}")]
    assert [(f[b"action"], f[b"detail.change"]) for f in mine] == [
        (b"config.environments.update", b"ENVIRONMENT_CREATED"),
        (b"config.namespaces.create", b"NAMESPACE_CREATED"),
    ]
    assert [f[b"detail.revision"] for f in mine] == [b"2", b"1"]
    assert all(f[b"actor"] == b"anonymous" and f[b"result"] == b"OK" for f in mine)


async def test_cached_reads_see_writes_made_through_another_replica(
    config: Stub, valkey: Any, start_config_server: Any, ns: str
) -> None:
    from grpc import aio

    _, replica_addr = await start_config_server(valkey.url)
    async with aio.insecure_channel(replica_addr) as replica_channel:
        reader = Stub(replica_channel)  # caches on the replica; writes go through `config`
        await create(config, ns)
        await put(config, ns, "default", {"v": 1})
        name = env_name(ns, "default")
        for expected in (2, 3):
            await reader.ResolveConfig(pb.ResolveConfigRequest(name=name))  # fills the replica's caches
            await reader.GetEnvironment(pb.GetEnvironmentRequest(name=name))
            await put(config, ns, "default", {"v": expected})
            resolved = await reader.ResolveConfig(pb.ResolveConfigRequest(name=name))
            fetched = await reader.GetEnvironment(pb.GetEnvironmentRequest(name=name))
            assert json_format.MessageToDict(resolved.content) == {"v": expected}
            assert json_format.MessageToDict(fetched.content) == {"v": expected}

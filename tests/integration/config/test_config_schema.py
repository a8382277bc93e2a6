"""Namespace schemas that validation could not finish, or could only finish slowly: refused when
set, and never a reason for a later write to fail with INTERNAL or to stall the process."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.helpers import detail, error_info, refused
from tests.integration.config.conftest import create, doc, put

Stub = config_pb2_grpc.ConfigServiceStub
SELF_REFERENCING = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    bad_request = detail(error, error_details_pb2.BadRequest)
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    return [(v.field, v.description) for v in bad_request.field_violations]


async def refused_schema(config: Stub, ns: str, schema: dict[str, Any]) -> grpc.aio.AioRpcError:
    error = await refused(create, config, ns, schema=schema)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_SCHEMA"
    return error


async def test_a_self_referencing_schema_is_refused_naming_the_field_and_the_cycle(
    config: Stub, ns: str
) -> None:
    [(field, description)] = violations(await refused_schema(config, ns, SELF_REFERENCING))
    assert field == "namespace.schema"
    assert "cycle: /$defs/a → /$defs/a" in description


async def test_a_self_referencing_schema_is_refused_as_an_update_too(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateNamespace(
            pb.UpdateNamespaceRequest(namespace=pb.Namespace(name=created.name, schema=doc(SELF_REFERENCING)))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await put(config, ns, "default", {"still": "writable"})


async def test_a_remote_reference_is_refused_when_set(config: Stub, ns: str) -> None:
    remote = {"properties": {"a": {"$ref": "https://example.invalid/a.json"}}}
    [(_, description)] = violations(await refused_schema(config, ns, remote))
    assert "/properties/a/$ref" in description and "nothing is fetched" in description


async def test_a_pattern_re2_cannot_take_is_refused_naming_where_it_is(config: Stub, ns: str) -> None:
    backreference = {"properties": {"name": {"pattern": r"^(a)\1$"}}}
    [(field, description)] = violations(await refused_schema(config, ns, backreference))
    assert field == "namespace.schema"
    assert "/properties/name/pattern" in description and "RE2" in description


async def test_schema_patterns_are_evaluated_by_re2(config: Stub, ns: str) -> None:
    # `\p{Lu}` is RE2 syntax Python's re refuses; `^(a+)+$` backtracks exponentially in re.
    patterns = {"properties": {"name": {"pattern": r"^\p{Lu}"}, "word": {"pattern": "^(a+)+$"}}}
    await create(config, ns, schema=patterns)
    await put(config, ns, "default", {"name": "Élan", "word": "a" * 24})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", {"name": "élan", "word": "a" * 24 + "!"})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field for field, _ in violations(caught.value)) == ["/name", "/word"]


async def test_a_schema_too_costly_for_a_document_fails_the_write_with_a_clear_reason(
    config: Stub, ns: str
) -> None:
    doubling = {"allOf": [{"properties": {"a": {"$ref": "#"}}}, {"properties": {"a": {"$ref": "#"}}}]}
    await create(config, ns, schema=doubling)
    deep: dict[str, Any] = {"a": 1}
    for _ in range(22):
        deep = {"a": deep}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", deep)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "SCHEMA_TOO_COMPLEX"

"""Documents the JSON data model cannot hold, sent as Structs to the config service."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import json_format

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.helpers import error_info, violated_fields
from tests.integration.config.conftest import create, doc, env_name, put

Stub = config_pb2_grpc.ConfigServiceStub


async def test_nan_in_environment_content_is_invalid_argument_naming_its_path(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"db": {"port": 5432}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(config, ns, "default", {"db": {"port": math.nan}})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "NUMBER_NOT_FINITE"
    assert violated_fields(caught.value) == ["environment.content.db.port"]
    current = await config.GetEnvironment(pb.GetEnvironmentRequest(name=env_name(ns, "default")))
    assert json_format.MessageToDict(current.content) == {"db": {"port": 5432}}


async def test_infinity_in_a_namespace_schema_is_invalid_argument_naming_its_path(
    config: Stub, ns: str
) -> None:
    namespace = pb.Namespace(schema=doc({"properties": {"port": {"maximum": math.inf}}}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.CreateNamespace(pb.CreateNamespaceRequest(namespace_id=ns, namespace=namespace))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["namespace.schema.properties.port.maximum"]


async def test_negative_infinity_in_an_updated_schema_is_invalid_argument(config: Stub, ns: str) -> None:
    created = await create(config, ns)
    namespace = pb.Namespace(name=created.name, schema=doc({"items": [{"minimum": -math.inf}]}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await config.UpdateNamespace(pb.UpdateNamespaceRequest(namespace=namespace))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["namespace.schema.items[0].minimum"]

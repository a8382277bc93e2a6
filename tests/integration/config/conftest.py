"""What the config tests do again and again: create a namespace, put an environment."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc

Stub = config_pb2_grpc.ConfigServiceStub


def doc(value: dict[str, Any]) -> struct_pb2.Struct:
    """`value` as the Struct a document travels in."""
    s = struct_pb2.Struct()
    s.update(value)
    return s


def env_name(ns: str, env: str) -> str:
    return f"namespaces/{ns}/environments/{env}"


async def put(stub: Stub, ns: str, env: str, content: dict[str, Any], etag: str = "") -> pb.Environment:
    """Write environment `env` of `ns` (creating it if need be) to hold `content`."""
    return await stub.UpdateEnvironment(
        pb.UpdateEnvironmentRequest(
            environment=pb.Environment(name=env_name(ns, env), content=doc(content), etag=etag),
            allow_missing=True,
        )
    )


async def create(stub: Stub, ns: str, schema: dict[str, Any] | None = None) -> pb.Namespace:
    """Create namespace `ns` (with `schema`, if given)."""
    namespace = pb.Namespace(display_name="Test")
    if schema is not None:
        namespace.schema.CopyFrom(doc(schema))
    return await stub.CreateNamespace(pb.CreateNamespaceRequest(namespace_id=ns, namespace=namespace))

"""The config service's document limits against a real `devmesh serve config` process: a
document too large or too deep is refused with a reason that says which. (Hostile input to
every RPC of every service is tests/e2e/hostile/.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from devmesh.config.v1 import config_pb2
from tests.helpers import varint
from tools.stack.service_process import ServiceProcess, start_service
from tools.stack.valkey import Valkey

SERVICE = config_pb2.DESCRIPTOR.services_by_name["ConfigService"]


@pytest.fixture(scope="module")
def server(valkey: Valkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_service(
        ["config"],
        valkey.url,
        tmp_path_factory.mktemp("logs"),
        extra_env={"DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "0.2"},
    )
    yield process
    process.process.stop()


@pytest.fixture(scope="module")
def channel(server: ServiceProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.addr, options=[("grpc.max_send_message_length", 16 << 20)]) as ch:
        yield ch


def _update(content: struct_pb2.Struct) -> bytes:
    return config_pb2.UpdateEnvironmentRequest(
        environment=config_pb2.Environment(name="namespaces/ab/environments/default", content=content),
        allow_missing=True,
    ).SerializeToString()


def _reason(channel: grpc.Channel, payload: bytes) -> str:
    method = SERVICE.methods_by_name["UpdateEnvironment"]
    try:
        channel.unary_unary(f"/{SERVICE.full_name}/UpdateEnvironment")(payload, timeout=5)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()  # type: ignore[attr-defined]
        for key, value in error.trailing_metadata():  # type: ignore[attr-defined]
            if key == "grpc-status-details-bin":
                for packed in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if packed.Unpack(info):
                        return info.reason
    raise AssertionError(f"{method.name} accepted the document")


def test_a_document_over_the_size_limit_is_refused(channel: grpc.Channel) -> None:
    content = struct_pb2.Struct()
    content.update({"blob": "x" * (1 << 20)})
    assert _reason(channel, _update(content)) == "DOCUMENT_TOO_LARGE"


@pytest.mark.parametrize(("levels", "reason"), [(26, "DOCUMENT_TOO_DEEP"), (200, "MALFORMED_REQUEST")])
def test_deep_nesting_is_refused(channel: grpc.Channel, levels: int, reason: str) -> None:
    # Built as bytes: the protobuf runtime will not even build 200 levels of Struct.
    payload = b""
    for _ in range(levels):
        value = b"\x2a" + varint(len(payload)) + payload  # Value.struct_value = 5
        entry = b"\x0a\x01a" + b"\x12" + varint(len(value)) + value  # map entry key "a", value
        payload = b"\x0a" + varint(len(entry)) + entry  # Struct.fields = 1
    assert _reason(channel, _raw_update(payload)) == reason


def _raw_update(content: bytes) -> bytes:
    name = b"namespaces/ab/environments/default"
    environment = b"\x0a" + varint(len(name)) + name + b"\x12" + varint(len(content)) + content
    return b"\x0a" + varint(len(environment)) + environment + b"\x10\x01"


__all__ = ["Path"]

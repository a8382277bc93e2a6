"""Hostile, malformed and oversized input to every ConfigService RPC: always a clear status, never
INTERNAL, UNKNOWN or a hang. Runs against a real `devmesh serve config` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmesh.config.v1 import config_pb2
from tools.stack.service_process import ServiceProcess, start_service
from tools.stack.valkey import Valkey

SERVICE = config_pb2.DESCRIPTOR.services_by_name["ConfigService"]
METHODS = list(SERVICE.methods)
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


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


def call(channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """Send raw bytes; the status code the server answered with (OK when it accepted)."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, timeout=5)
            next(iter(stream), None)  # one event (a change or a progress beat) is enough
            stream.cancel()
        else:
            channel.unary_unary(path)(payload, timeout=5)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK
        assert code not in FORBIDDEN, f"{method.name}: {code} {error.details()}"  # type: ignore[attr-defined]
        return code  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),  # NaN and ±Infinity too
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=15,
)
hostile_text = (
    st.text(max_size=80)
    | st.sampled_from(
        [
            "namespaces/x",
            "namespaces/-/environments/-",
            "namespaces/ab/environments/default",
            "../../etc/passwd",
            "namespaces/ab/revisions/1",
            "namespaces/ab/revisions/99999999999999999999",
            "\x00",
            "ﬀ" * 40,
            "*",
        ]
    )
    | st.builds(lambda a, b: f"namespaces/{a}/environments/{b}", st.text(max_size=12), st.text(max_size=12))
)


def fields_for(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random values for every field of `message`, recursing into nested messages."""
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for field in message.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            strategies[field.name] = st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=5)
        elif field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Struct":
                strategies[field.name] = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
            elif field.message_type.full_name == "google.protobuf.FieldMask":
                strategies[field.name] = st.lists(st.text(max_size=20), max_size=3)
            elif field.message_type.full_name.startswith("devmesh.") and depth < 2:
                strategies[field.name] = fields_for(field.message_type, depth + 1)
        elif field.type == descriptor.FieldDescriptor.TYPE_STRING:
            strategies[field.name] = hostile_text
        elif field.type == descriptor.FieldDescriptor.TYPE_BOOL:
            strategies[field.name] = st.booleans()
        elif field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            strategies[field.name] = st.integers(0, 9)
        elif field.type == descriptor.FieldDescriptor.TYPE_INT32:
            strategies[field.name] = st.integers(-(2**31), 2**31 - 1)
        elif field.type == descriptor.FieldDescriptor.TYPE_INT64:
            strategies[field.name] = st.integers(-(2**63), 2**63 - 1)
    return st.fixed_dictionaries({}, optional=strategies)


def build(message_class: type[Message], values: dict[str, Any]) -> Message:
    message = message_class()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if (field.message_type is not None and field.message_type.GetOptions().map_entry) or (
            field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct"
        ):
            target.update(value)
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.FieldMask":
            target.paths.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(build(type(target), value))
        else:
            setattr(message, name, value)
    return message


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_requests_get_a_clear_status(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, data: st.DataObject
) -> None:
    request_class = getattr(config_pb2, method.input_type.name)
    values = data.draw(fields_for(method.input_type))
    call(channel, method, build(request_class, values).SerializeToString())


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
@pytest.mark.parametrize(
    "payload", [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"], ids=["junk", "truncated"]
)
def test_corrupt_bytes_are_invalid_argument(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes
) -> None:
    assert call(channel, method, payload) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_oversized_messages_are_resource_exhausted(
    channel: grpc.Channel, method: descriptor.MethodDescriptor
) -> None:
    # Field 1 of every request is a string; 5 MiB exceeds the 4 MiB message limit.
    payload = b"\x0a" + _varint(5 << 20) + b"a" * (5 << 20)
    assert call(channel, method, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


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
        value = b"\x2a" + _varint(len(payload)) + payload  # Value.struct_value = 5
        entry = b"\x0a\x01a" + b"\x12" + _varint(len(value)) + value  # map entry key "a", value
        payload = b"\x0a" + _varint(len(entry)) + entry  # Struct.fields = 1
    assert _reason(channel, _raw_update(payload)) == reason


def _raw_update(content: bytes) -> bytes:
    name = b"namespaces/ab/environments/default"
    environment = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(len(content)) + content
    return b"\x0a" + _varint(len(environment)) + environment + b"\x10\x01"


__all__ = ["Path"]

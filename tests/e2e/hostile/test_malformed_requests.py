"""Malformed requests to every RPC of every service, through the real edge: corrupt bytes,
invalid UTF-8, empty and oversized messages, documents nested too deep; then every service is
still healthy."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import catalog
from tests.e2e.hostile.calls import FUZZ_SHARDS, IDS, MAX_MESSAGE, METHODS, TIMEOUT_S, F, call
from tests.helpers import varint
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel
from tools.stack.local import Stack


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@pytest.mark.parametrize(
    "payload", [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"], ids=["junk", "truncated"]
)
def test_corrupt_bytes_are_invalid_argument(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes
) -> None:
    assert call(channel, method, payload) == grpc.StatusCode.INVALID_ARGUMENT


def _length_delimited(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


STRING_FIELDS = [
    (m, f) for m in METHODS for f in m.input_type.fields if f.type == F.TYPE_STRING and not f.is_repeated
]


@pytest.mark.parametrize(
    ("method", "field"), STRING_FIELDS, ids=[f"{m.name}.{f.name}" for m, f in STRING_FIELDS]
)
def test_invalid_utf8_in_a_string_field_is_invalid_argument(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, field: descriptor.FieldDescriptor
) -> None:
    assert (
        call(channel, method, _length_delimited(field.number, b"ab\xff\xfecd"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_an_empty_request_gets_a_clear_status(
    channel: grpc.Channel, method: descriptor.MethodDescriptor
) -> None:
    call(channel, method, b"")


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_an_oversized_message_is_resource_exhausted(
    channel: grpc.Channel, method: descriptor.MethodDescriptor
) -> None:
    payload = _length_delimited(15, b"a" * (MAX_MESSAGE + 1024))  # an unknown field: only its size matters
    assert call(channel, method, payload) == grpc.StatusCode.RESOURCE_EXHAUSTED


STRUCT_FIELDS = [
    (m, f)
    for m in METHODS
    for top in m.input_type.fields
    if top.message_type is not None and top.message_type.full_name.startswith("devmesh.")
    for f in top.message_type.fields
    if f.message_type is not None and f.message_type.full_name == "google.protobuf.Struct"
]


def _deep_struct(levels: int) -> bytes:
    """A Struct nested `levels` deep, as bytes: the protobuf runtime will not build it."""
    payload = b""
    for _ in range(levels):
        value = _length_delimited(5, payload)  # Value.struct_value
        entry = _length_delimited(1, b"a") + _length_delimited(2, value)  # map entry "a" -> value
        payload = _length_delimited(1, entry)  # Struct.fields
    return payload


@pytest.mark.parametrize(
    ("method", "field"), STRUCT_FIELDS, ids=[f"{m.name}.{f.name}" for m, f in STRUCT_FIELDS]
)
@pytest.mark.parametrize("levels", [40, 300])
def test_deeply_nested_documents_get_a_clear_status(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, field: descriptor.FieldDescriptor, levels: int
) -> None:
    container = next(f for f in method.input_type.fields if f.message_type is field.containing_type)
    payload = _length_delimited(container.number, _length_delimited(field.number, _deep_struct(levels)))
    assert call(channel, method, payload) != grpc.StatusCode.OK


def test_every_service_is_still_serving_afterwards(mesh: Stack, operator: CertPaths) -> None:
    for name, process in mesh.services.items():
        assert process.process.popen.poll() is None, f"{name} exited"
        spec = catalog.spec(name)
        with grpc_channel(process.addr, operator) as direct:
            health = health_pb2_grpc.HealthStub(direct)
            for service in spec.proto_services:
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


def test_every_fuzzing_shard_has_its_test_file() -> None:
    here = Path(__file__).parent
    assert sorted(p.name for p in here.glob("test_fuzzed_requests_*.py")) == [
        f"test_fuzzed_requests_{k}.py" for k in range(FUZZ_SHARDS)
    ]

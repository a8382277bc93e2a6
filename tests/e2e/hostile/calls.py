"""Hostile requests to every RPC of every service in the catalog, generated from the
descriptors, and the check of each answer (`call`): the tests of this package send them
through the real edge.

Every answer must be a clear status with details: never INTERNAL or UNKNOWN (a crash in the
service), never DEADLINE_EXCEEDED (a hang), never UNAVAILABLE (a process that died)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.api import resource_pb2
from google.protobuf import descriptor, descriptor_pool, message_factory, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import catalog

POOL = descriptor_pool.Default()
SERVICES = [POOL.FindServiceByName(name) for spec in catalog.every() for name in spec.proto_services]
METHODS = [m for service in SERVICES for m in service.methods]
IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}
TIMEOUT_S = 10.0
MAX_MESSAGE = 4 << 20  # the services' DEVMESH_MAX_MESSAGE_BYTES


def _resource_patterns() -> list[str]:
    found = []
    for service in SERVICES:
        for method in service.methods:
            for message in (method.input_type, method.output_type):
                options = message.GetOptions()
                if options.HasExtension(resource_pb2.resource):
                    found.extend(options.Extensions[resource_pb2.resource].pattern)
    return sorted(set(found))


PATTERNS = _resource_patterns()
HOSTILE_IDS = ["", "-", "..", "../../etc/passwd", "a\x00b", "*", "A" * 300, "ﬀ" * 40, "x/y", " ", "%2e%2e"]


def _names(pattern: str) -> st.SearchStrategy[str]:
    """Names of `pattern`'s shape with hostile ids, and names of other shapes."""
    parts = pattern.split("/")
    variables = len(parts) // 2
    ids = st.sampled_from(HOSTILE_IDS) | st.text(max_size=12)
    return st.lists(ids, min_size=variables, max_size=variables).map(
        lambda chosen: "/".join(f"{c}/{i}" for c, i in zip(parts[0::2], chosen, strict=True))
    )


hostile_text = (
    st.text(max_size=60)
    | st.sampled_from(HOSTILE_IDS)
    | st.one_of(*(_names(p) for p in PATTERNS))
    | st.sampled_from(["forged", "e30", "!!!", "A" * 3000, "eyJjIjoiYSIsInEiOiJ4In0"])  # page tokens
    | st.just("b" * 70_000)
)
numbers = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
INT32 = st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, -1, 2**31 - 1, -(2**31)])
INT64 = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**63 - 1, -(2**63)])
F = descriptor.FieldDescriptor
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    F.TYPE_STRING: hostile_text,
    F.TYPE_BYTES: st.binary(max_size=64) | st.just(b"\xff" * 100_000),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_ENUM: st.integers(-3, 40),
    F.TYPE_INT32: INT32,
    F.TYPE_SINT32: INT32,
    F.TYPE_SFIXED32: INT32,
    F.TYPE_INT64: INT64,
    F.TYPE_SINT64: INT64,
    F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT32: st.integers(0, 2**32 - 1),
    F.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    F.TYPE_DOUBLE: numbers,
    F.TYPE_FLOAT: st.floats(width=32),
}
# Well-known types as raw fields: a Timestamp or Duration may hold any seconds and nanos.
TIMES = st.fixed_dictionaries({"seconds": INT64, "nanos": INT32})


def _value(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    message = field.message_type
    if message is None:
        return SCALARS.get(field.type)
    name = message.full_name
    if name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    if name == "google.protobuf.Value":
        return json_values
    if name == "google.protobuf.FieldMask":
        return st.lists(hostile_text, max_size=3)
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return TIMES
    if name.startswith("devmesh.") and depth < 3:
        return fields_for(message, depth + 1)
    return None


def fields_for(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random values for the fields of `message`, nested messages and repeated fields included."""
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for field in message.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = _value(field.message_type.fields_by_name["value"], depth)
            if value is not None:
                strategies[field.name] = st.dictionaries(hostile_text, value, max_size=4)
            continue
        value = _value(field, depth)
        if value is None:
            continue
        strategies[field.name] = st.lists(value, max_size=4) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=strategies)


def _set(target: Message, value: Any) -> None:
    name = target.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        target.update(value)  # type: ignore[attr-defined]
    elif name == "google.protobuf.Value":
        target.CopyFrom(_json_value(value))
    elif name == "google.protobuf.FieldMask":
        target.paths.extend(value)  # type: ignore[attr-defined]
    else:
        for key, item in value.items():
            _assign(target, key, item)


def _json_value(value: Any) -> Message:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]


def _assign(message: Message, name: str, value: Any) -> None:
    field = message.DESCRIPTOR.fields_by_name[name]
    target = getattr(message, name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.message_type is None:
                target[key] = item
            else:
                _set(target[key], item)
    elif field.is_repeated and field.message_type is not None:
        for item in value:
            _set(target.add(), item)
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        _set(target, value)
    else:
        setattr(message, name, value)


def build(method: descriptor.MethodDescriptor, values: dict[str, Any]) -> bytes:
    message = message_factory.GetMessageClass(method.input_type)()
    for name, value in values.items():
        try:
            _assign(message, name, value)
        except (ValueError, TypeError, OverflowError):
            continue  # a value the protobuf runtime itself refuses to hold: nothing to send
    return message.SerializeToString()


# -- calling ---------------------------------------------------------------------------------


def _details(error: grpc.RpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def call(channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """Send raw bytes (a stream of three copies to a client-streaming method); the status code
    the service answered with, after checking that it is a clear one."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming and method.server_streaming:
            responses = channel.stream_stream(path)(iter([payload] * 3), timeout=TIMEOUT_S)
            next(iter(responses), None)
            responses.cancel()
        elif method.client_streaming:
            channel.stream_unary(path)(iter([payload] * 3), timeout=TIMEOUT_S)
        elif method.server_streaming:
            responses = channel.unary_stream(path)(payload, timeout=TIMEOUT_S)
            next(iter(responses), None)  # one message (a change or a progress beat) is enough
            responses.cancel()
        else:
            channel.unary_unary(path)(payload, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.CANCELLED and method.server_streaming:
            return grpc.StatusCode.OK  # we cancelled it after its first message
        text = error.details() or ""  # type: ignore[attr-defined]
        assert code not in FORBIDDEN, f"{path}: {code.name} {text[:300]}"
        status = _details(error)
        if status is None:
            # grpc itself refuses a message over the size limit before any of our code runs.
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text, (
                f"{path}: {code.name} without a google.rpc.Status: {text[:300]}"
            )
        else:
            info = error_details_pb2.ErrorInfo()
            assert status.details and status.details[0].Unpack(info) and info.reason, f"{path}: no ErrorInfo"
        return code
    return grpc.StatusCode.OK


# -- fuzzing, in shards --------------------------------------------------------------------

# The fuzzing is most of this package's time (some 140 s of test time): split over this many
# test files, a shard of the methods each (round robin, so each has some of every service),
# pytest-xdist's `--dist loadfile` spreads it over its processes.
FUZZ_SHARDS = 3


def fuzz_test(shard: int) -> Callable[..., None]:
    """The fuzzing test of one shard: random and adversarial values for every field (names of
    the wrong shape, path traversal and NUL in ids, huge and negative page sizes, forged page
    tokens, times out of range, NaN, deep nesting), 30 requests per method."""

    @pytest.mark.parametrize("method", METHODS[shard::FUZZ_SHARDS], ids=IDS[shard::FUZZ_SHARDS])
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def test(channel: grpc.Channel, method: descriptor.MethodDescriptor, data: st.DataObject) -> None:
        call(channel, method, build(method, data.draw(fields_for(method.input_type))))

    return test

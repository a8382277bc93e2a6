"""The REST guard's tables (envoy/rest_guard.lua), generated from the descriptor set the
transcoder uses: which REST bindings take a JSON body, and which JSON keys each message has.

The tables follow the proto3 JSON mapping as the transcoder's parser reads a body: a message
field is accepted under its JSON name and its proto name; a map takes any key; Struct, Value,
ListValue and Any take anything; the other well-known types are scalars in JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

GUARD_SOURCE = Path(__file__).resolve().parent.parent / "envoy" / "rest_guard.lua"
# Well-known types whose JSON form is not an object of their fields.
OPAQUE_TYPES = frozenset(
    {
        "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
        "google.protobuf.Any", "google.protobuf.Timestamp", "google.protobuf.Duration",
        "google.protobuf.FieldMask", "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
        "google.protobuf.Int64Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value", "google.protobuf.BoolValue", "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        # The raw HTTP body (`curl --data-binary @build.log`), not JSON at all.
        "google.api.HttpBody",
    }
)  # fmt: skip


@dataclass(frozen=True)
class BodyBinding:
    """A REST binding whose request has a JSON body."""

    http_method: str
    segments: tuple[str, ...]  # literals, "*" (one segment) or "**" (the rest)
    verb: str | None
    prefix: str  # the body field's name ("" for body "*"): unknown keys are reported under it
    type_name: str  # the message the body holds


def load_pool(descriptor_set: Path) -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


def parse_template(template: str) -> tuple[tuple[str, ...], str | None]:
    """`/v1/{name=namespaces/*}:rotate` -> (("v1", "namespaces", "*"), "rotate")."""
    path, verb = template.lstrip("/"), None
    last = path.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last[last.rindex(":") :]:
        path, verb = path[: path.rindex(":")], path[path.rindex(":") + 1 :]
    segments: list[str] = []
    for part in _split_outside_braces(path):
        if part.startswith("{"):
            pattern = part[1:-1].partition("=")[2]
            segments.extend(pattern.split("/") if pattern else ["*"])
        else:
            segments.append(part)
    return tuple(segments), verb


def _split_outside_braces(path: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in path:
        if char == "/" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    parts.append(current)
    return [p for p in parts if p]


def _rules(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def body_bindings(pool: descriptor_pool.DescriptorPool, services: list[str]) -> list[BodyBinding]:
    """Every binding of `services` that takes a body whose JSON is an object of a message."""
    found = []
    for service_name in services:
        for method in pool.FindServiceByName(service_name).methods:
            options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
            for rule in _rules(options.Extensions[annotations_pb2.http]):
                kind = rule.WhichOneof("pattern")
                if kind is None or not rule.body or kind == "custom":
                    continue
                request = method.input_type
                if rule.body == "*":
                    prefix, message = "", request
                else:
                    field = request.fields_by_name[rule.body]
                    if field.message_type is None:
                        continue  # a scalar body: nothing to name
                    prefix, message = field.json_name, field.message_type
                if message.full_name in OPAQUE_TYPES:
                    continue
                segments, verb = parse_template(getattr(rule, kind))
                found.append(BodyBinding(kind.upper(), segments, verb, prefix, message.full_name))
    return found


def _value_schema(field: descriptor.FieldDescriptor) -> object:
    """What a field's JSON value holds: 0 anything, a message name, or {"map": ...}."""
    message = field.message_type
    if message is None or message.full_name in OPAQUE_TYPES:
        return 0
    if message.GetOptions().map_entry:
        return {"map": _value_schema(message.fields_by_name["value"])}
    return message.full_name


def message_tables(pool: descriptor_pool.DescriptorPool, roots: list[str]) -> dict[str, dict[str, object]]:
    """Per message reachable from `roots`: accepted JSON key -> what its value holds."""
    tables: dict[str, dict[str, object]] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in tables:
            continue
        message = pool.FindMessageTypeByName(name)
        fields: dict[str, object] = {}
        for field in message.fields:
            schema = _value_schema(field)
            fields[field.json_name] = fields[field.name] = schema
            inner = schema["map"] if isinstance(schema, dict) else schema
            if isinstance(inner, str):
                pending.append(inner)
        tables[name] = fields
    return tables


def _lua(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a Lua string literal for these names
    if value is None:
        return "nil"
    return str(value)


def render(
    descriptor_set: Path, services: list[str], max_body_bytes: int, max_path_bytes: int, max_header_bytes: int
) -> str:
    """The guard's Lua source: the generated tables, then envoy/rest_guard.lua."""
    pool = load_pool(descriptor_set)
    bindings = body_bindings(pool, services)
    tables = message_tables(pool, sorted({b.type_name for b in bindings}))
    routes = [
        {"method": b.http_method, "segments": list(b.segments), "verb": b.verb, "prefix": b.prefix, "type": b.type_name}
        for b in bindings
    ]  # fmt: skip
    prelude = "\n".join(
        [
            "-- Generated by tools/envoy_rest_guard.py from the descriptor set: do not edit.",
            f"LIMITS = {_lua({'body': max_body_bytes, 'path': max_path_bytes, 'headers': max_header_bytes})}",
            f"ROUTES = {_lua(routes)}",
            f"TYPES = {_lua(tables)}",
        ]
    )
    return prelude + "\n\n" + GUARD_SOURCE.read_text()

"""Descriptor-driven checks over every RPC of every devmesh contract."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from devmesh.options.v1 import options_pb2
from tools import codegen


def _image() -> descriptor_pb2.FileDescriptorSet:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.binpb"
        codegen._image(codegen.PROTO_DIR, out)
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


IMAGE = _image()
OURS = [f for f in IMAGE.file if f.package.startswith("devmesh.")]
METHODS = [(f, s, m) for f in OURS for s in f.service for m in s.method]


def test_there_are_contracts_to_check() -> None:
    assert any(s.name == "ConfigService" for f in OURS for s in f.service)


@pytest.mark.parametrize(
    ("file", "service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for _, s, m in METHODS]
)
def test_every_rpc_has_an_http_binding_and_a_permission(
    file: descriptor_pb2.FileDescriptorProto,
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
) -> None:
    # Re-parse options from bytes so that extensions registered by the generated modules resolve.
    options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
    rule = options.Extensions[annotations_pb2.http]
    assert rule.WhichOneof("pattern") is not None, "no google.api.http binding"
    policy = options.Extensions[options_pb2.policy]
    if policy.public:
        assert policy.permission == "", "a public RPC declares no permission"
        return
    short_service = file.package.split(".")[1]
    assert policy.permission.startswith(f"{short_service}."), (
        f"permission {policy.permission!r} is missing or foreign"
    )


def _commented_paths(file: descriptor_pb2.FileDescriptorProto) -> set[tuple[int, ...]]:
    return {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}


def _elements(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[str, tuple[int, ...]]]:
    """Every service, RPC, message, field, enum and enum value with its source-info path."""
    found: list[tuple[str, tuple[int, ...]]] = []
    for si, service in enumerate(file.service):
        found.append((service.name, (6, si)))
        found += [(f"{service.name}.{m.name}", (6, si, 2, mi)) for mi, m in enumerate(service.method)]

    def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...]) -> None:
        found.append((msg.name, path))
        found.extend((f"{msg.name}.{f.name}", (*path, 2, fi)) for fi, f in enumerate(msg.field))
        for ni, nested in enumerate(msg.nested_type):
            if not nested.options.map_entry:
                message(nested, (*path, 3, ni))

    for mi, msg in enumerate(file.message_type):
        message(msg, (4, mi))
    for ei, enum in enumerate(file.enum_type):
        found.append((enum.name, (5, ei)))
        found += [(f"{enum.name}.{v.name}", (5, ei, 2, vi)) for vi, v in enumerate(enum.value)]
    return found


@pytest.mark.parametrize("file", OURS, ids=[f.name for f in OURS])
def test_every_element_is_commented(file: descriptor_pb2.FileDescriptorProto) -> None:
    commented = _commented_paths(file)
    missing = [name for name, path in _elements(file) if path not in commented]
    assert missing == []


@pytest.mark.parametrize(
    ("file", "service", "method"), METHODS, ids=[f"{s.name}.{m.name}" for _, s, m in METHODS]
)
def test_every_rpc_comment_lists_its_errors(
    file: descriptor_pb2.FileDescriptorProto,
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
) -> None:
    si = list(file.service).index(service)
    mi = list(service.method).index(method)
    comment = next(
        loc.leading_comments for loc in file.source_code_info.location if tuple(loc.path) == (6, si, 2, mi)
    )
    assert "Errors:" in comment

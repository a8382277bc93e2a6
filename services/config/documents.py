"""JSON documents: limits, layered merge with provenance, and JSON-Patch-style diffs.

Merge follows JSON Merge Patch (RFC 7386): objects merge key by key, any other value
(arrays included) replaces, and `null` removes the key. Paths are JSON pointers (RFC 6901).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import FieldViolation, InvalidArgument

Document = dict[str, Any]

ADD, REMOVE, REPLACE = "ADD", "REMOVE", "REPLACE"


@dataclass(frozen=True)
class Change:
    """One difference: `operation` at `path`, from `old` to `new` (None when absent)."""

    operation: str
    path: str
    old: Any = None
    new: Any = None


def pointer(parent: str, key: str) -> str:
    return f"{parent}/{key.replace('~', '~0').replace('/', '~1')}"


def encode(document: Document) -> str:
    """Canonical JSON text (sorted keys, no NaN) as stored and as measured for size limits."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def depth(value: Any) -> int:
    """Nesting depth: a scalar is 0, `{}` or `[]` is 1, `{"a": {}}` is 2."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def size(value: Any) -> int:
    """Number of JSON values in `value`, itself included: `{"a": [1, 2]}` has 4."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def check_limits(document: Document, field: str, *, max_bytes: int, max_depth: int) -> str:
    """Refuse documents that are too large, too deep or not valid JSON; return the encoded form."""
    nesting = depth(document)
    if nesting > max_depth:
        raise InvalidArgument(
            f"{field} is nested {nesting} levels deep; the limit is {max_depth}",
            [FieldViolation(field, f"nesting depth {nesting} exceeds {max_depth}", "DOCUMENT_TOO_DEEP")],
            reason="DOCUMENT_TOO_DEEP",
        )
    try:
        encoded = encode(document)
    except ValueError:
        raise InvalidArgument.for_field(field, "NaN and Infinity are not valid JSON numbers") from None
    size = len(encoded.encode())
    if size > max_bytes:
        raise InvalidArgument(
            f"{field} is {size} bytes as JSON; the limit is {max_bytes}",
            [FieldViolation(field, f"{size} bytes exceeds the {max_bytes}-byte limit", "DOCUMENT_TOO_LARGE")],
            reason="DOCUMENT_TOO_LARGE",
        )
    return encoded


def _overlay(target: Document, origin: dict[str, Any], layer: Document, environment: str) -> None:
    for key, value in layer.items():
        if value is None:
            target.pop(key, None)
            origin.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key], origin[key] = {}, {}
            _overlay(target[key], origin[key], value, environment)
        else:
            target[key] = copy.deepcopy(value)
            origin[key] = environment


def _leaves(origin: dict[str, Any], parent: str) -> Iterator[tuple[str, str]]:
    for key in sorted(origin):
        path, source = pointer(parent, key), origin[key]
        if isinstance(source, dict):
            yield from _leaves(source, path)
        else:
            yield path, source


def resolve(layers: Sequence[tuple[str, Document]]) -> tuple[Document, list[tuple[str, str]]]:
    """Merge `(environment, document)` layers, lowest first.

    Returns the merged document and, for every leaf (a value that is not an object), its
    JSON pointer and the environment whose layer set it.
    """
    merged: Document = {}
    origin: dict[str, Any] = {}
    for environment, layer in layers:
        _overlay(merged, origin, layer, environment)
    return merged, list(_leaves(origin, ""))


def diff(base: Any, target: Any, path: str = "") -> list[Change]:
    """The changes that turn `base` into `target`, in JSON-pointer order.

    Objects are compared key by key; arrays and scalars are replaced whole (like RFC 7386).
    """
    if isinstance(base, dict) and isinstance(target, dict):
        changes: list[Change] = []
        for key in sorted(base.keys() | target.keys()):
            child = pointer(path, key)
            if key not in target:
                changes.append(Change(REMOVE, child, old=base[key]))
            elif key not in base:
                changes.append(Change(ADD, child, new=target[key]))
            else:
                changes.extend(diff(base[key], target[key], child))
        return changes
    if _same(base, target):
        return []
    return [Change(REPLACE, path, old=base, new=target)]


def _same(a: Any, b: Any) -> bool:
    # JSON has one number type: 1 and 1.0 are equal, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b) and (isinstance(a, (int, float)) == isinstance(b, (int, float)))


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply(base: Document, changes: Sequence[Change]) -> Document:
    """Apply `diff` output to `base` (the inverse of `diff`; callers use it to replay a diff)."""
    result = copy.deepcopy(base)
    for change in changes:
        *parents, last = [_unescape(t) for t in change.path.split("/")[1:]]
        node = result
        for token in parents:
            node = node[token]
        if change.operation == REMOVE:
            del node[last]
        else:
            node[last] = copy.deepcopy(change.new)
    return result

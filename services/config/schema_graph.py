"""A schema as the validator walks it, checked before it is accepted.

Every subschema is a node. An edge leads to each subschema the validator applies next: in
place (to the same value: `allOf`, `not`, `if`, `$ref`, ...) or to a member or item of it
(`properties`, `items`, ...). References are resolved as jsonschema resolves them, within the
schema (and the published meta-schemas); nothing is fetched.

What the validator would do with a schema that this refuses:
- a reference that does not resolve, or resolves to something that is not a schema: fail at
  every later write;
- a cycle of in-place edges (`{"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}`):
  recurse without end, until Python's recursion limit;
- a path longer than MAX_VALIDATION_DEPTH edges, counting at most one edge to a member per
  level of the deepest document allowed: the same, for a long enough `$ref` chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema_specifications  # type: ignore[import-untyped]  # jsonschema's own companion, untyped
import referencing
import referencing.exceptions
import referencing.jsonschema

# Edges in a row that validation may follow; jsonschema spends about two Python frames on each,
# and must stay well inside the interpreter's default recursion limit of 1000.
MAX_VALIDATION_DEPTH = 200

_IN_PLACE = {"not": "one", "if": "one", "then": "one", "else": "one",
             "allOf": "many", "anyOf": "many", "oneOf": "many", "dependentSchemas": "map"}  # fmt: skip
_TO_MEMBERS = {"additionalProperties": "one", "items": "one", "contains": "one", "propertyNames": "one",
               "unevaluatedItems": "one", "unevaluatedProperties": "one", "prefixItems": "many",
               "properties": "map", "patternProperties": "map"}  # fmt: skip
_NOT_APPLIED = {"$defs": "map", "definitions": "map", "contentSchema": "one"}  # walked for their references
_REFERENCES = ("$ref", "$dynamicRef")
_SPECIFICATION = referencing.jsonschema.DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver  # what the public API returns; not re-exported


class SchemaGraphError(ValueError):
    """Why a schema is refused: `where` is a JSON pointer into it, `description` the problem."""

    def __init__(self, where: str, description: str) -> None:
        super().__init__(f"at {where}: {description}")
        self.where = where
        self.description = description


@dataclass(eq=False)
class Subschema:
    """One object subschema (boolean subschemas have no edges and are left out)."""

    where: str  # JSON pointer from the root, or the reference that led here
    contents: dict[str, Any]
    resolver: Resolver[Any] = field(repr=False)
    in_place: list[Subschema] = field(default_factory=list)
    to_members: list[Subschema] = field(default_factory=list)


def _children(contents: dict[str, Any], kinds: dict[str, str]) -> Iterator[tuple[str, Any]]:
    for keyword, kind in kinds.items():
        if keyword not in contents:
            continue
        value = contents[keyword]
        if kind == "one":
            yield keyword, value
        elif kind == "many" and isinstance(value, list):
            yield from ((f"{keyword}/{i}", v) for i, v in enumerate(value))
        elif kind == "map" and isinstance(value, dict):
            yield from ((f"{keyword}/{_escape(k)}", v) for k, v in value.items())


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[int, Subschema] = {}  # by id() of the subschema's dict
        self._pending: list[Subschema] = []

    def node(self, contents: Any, where: str, resolver: Resolver[Any]) -> Subschema | None:
        if not isinstance(contents, dict):
            return None
        known = self.nodes.get(id(contents))
        if known is None:
            resolver = resolver.in_subresource(_SPECIFICATION.create_resource(contents))
            known = self.nodes[id(contents)] = Subschema(where, contents, resolver)
            self._pending.append(known)
        return known

    def build(self, schema: Any) -> Subschema | None:
        registry = jsonschema_specifications.REGISTRY.combine(referencing.Registry())
        resolver = registry.resolver_with_root(_SPECIFICATION.create_resource(schema))
        root = self.node(schema, "", resolver)
        while self._pending:
            self._expand(self._pending.pop())
        self._add_dynamic_anchors()
        return root

    def _expand(self, node: Subschema) -> None:
        for edges, kinds in (
            (node.in_place, _IN_PLACE),
            (node.to_members, _TO_MEMBERS),
            (None, _NOT_APPLIED),
        ):
            for path, child in _children(node.contents, kinds):
                built = self.node(child, f"{node.where}/{path}", node.resolver)
                if built is not None and edges is not None:
                    edges.append(built)
        for keyword in _REFERENCES:
            if keyword in node.contents:
                target = self._resolve(node, keyword)
                if target is not None:
                    node.in_place.append(target)

    def _resolve(self, node: Subschema, keyword: str) -> Subschema | None:
        reference = node.contents[keyword]
        where = f"{node.where}/{keyword}"
        if not isinstance(reference, str):
            raise SchemaGraphError(where, "a reference must be a string")
        try:
            resolved = node.resolver.lookup(reference)
        except (referencing.exceptions.Unresolvable, ValueError, LookupError):  # "#/allOf/x": ValueError
            raise SchemaGraphError(
                where, f"{reference[:200]!r} does not resolve within the schema (nothing is fetched)"
            ) from None
        if isinstance(resolved.contents, bool):
            return None
        if not isinstance(resolved.contents, dict):
            kind = type(resolved.contents).__name__
            raise SchemaGraphError(where, f"{reference[:200]!r} leads to a {kind}, not a schema")
        return self.node(resolved.contents, reference[:200], resolved.resolver)

    def _add_dynamic_anchors(self) -> None:
        # A $dynamicRef may resolve to any subschema with its $dynamicAnchor, depending on the
        # path that reached it; an edge to each keeps the checks on the safe side.
        anchors: dict[str, list[Subschema]] = {}
        for node in self.nodes.values():
            name = node.contents.get("$dynamicAnchor")
            if isinstance(name, str):
                anchors.setdefault(name, []).append(node)
        for node in list(self.nodes.values()):
            reference = node.contents.get("$dynamicRef")
            if isinstance(reference, str) and reference.startswith("#"):
                node.in_place.extend(anchors.get(reference[1:], []))


def subschemas(schema: Any) -> tuple[Subschema | None, list[Subschema]]:
    """The root of `schema`'s graph (None for a boolean schema) and every subschema in it."""
    builder = _Builder()
    root = builder.build(schema)
    return root, list(builder.nodes.values())


def check(schema: Any, max_document_depth: int) -> list[Subschema]:
    """Refuse (SchemaGraphError) what validation could not finish; return every subschema."""
    root, nodes = subschemas(schema)
    if root is not None:
        _check_paths(root, max_document_depth)
    return nodes


def _check_paths(root: Subschema, max_document_depth: int) -> None:
    """Depth-first over (subschema, member levels left): a state met again on the current path
    is an in-place cycle; a path over MAX_VALIDATION_DEPTH edges is too deep."""
    longest: dict[tuple[int, int], int] = {}  # edges below a finished state
    path: list[tuple[Subschema, int]] = []
    on_path: set[tuple[int, int]] = set()

    def visit(node: Subschema, levels: int) -> int:
        state = (id(node), levels)
        if state in on_path:
            start = next(i for i, (n, lv) in enumerate(path) if n is node and lv == levels)
            cycle = " → ".join(n.where or "/" for n, _ in [*path[start:], (node, levels)])
            raise SchemaGraphError(node.where or "/", f"references form a cycle: {cycle}")
        if len(path) + longest.get(state, 0) > MAX_VALIDATION_DEPTH:
            raise SchemaGraphError(
                node.where or "/",
                f"validation would follow more than {MAX_VALIDATION_DEPTH} subschemas and references "
                "in a row; shorten the chain of references",
            )
        if state in longest:
            return longest[state]
        path.append((node, levels))
        on_path.add(state)
        below = 0
        for child in node.in_place:
            below = max(below, 1 + visit(child, levels))
        if levels > 0:
            for child in node.to_members:
                below = max(below, 1 + visit(child, levels - 1))
        path.pop()
        on_path.discard(state)
        longest[state] = below
        return below

    visit(root, max_document_depth)

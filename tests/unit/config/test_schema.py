from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.config import schema, schema_graph
from services.runtime.errors import InvalidArgument

PORT_SCHEMA = {
    "type": "object",
    "properties": {
        "db": {"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]}
    },
}
TREE = {"type": "object", "properties": {"name": {"type": "string"}, "children": {"items": {"$ref": "#"}}}}


def refusal(value: dict[str, Any]) -> str:
    """The description of the one violation `check_schema` refuses `value` with."""
    with pytest.raises(InvalidArgument) as caught:
        schema.check_schema(value)
    assert caught.value.reason == "INVALID_SCHEMA"
    assert [v.field for v in caught.value.field_violations] == ["namespace.schema"]
    return caught.value.field_violations[0].description


def nested(levels: int, leaf: Any) -> dict[str, Any]:
    document: Any = leaf
    for _ in range(levels):
        document = {"a": document}
    return document  # type: ignore[no-any-return]


def test_violations_carry_json_pointers_and_the_environment() -> None:
    found = schema.violations(PORT_SCHEMA, {"db": {"port": "x"}}, "prod")
    assert [v.field for v in found] == ["/db/port"]
    assert "prod" in found[0].description


def test_a_valid_document_has_no_violations() -> None:
    assert schema.violations(PORT_SCHEMA, {"db": {"port": 5432}}, "prod") == []


def test_an_invalid_schema_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        schema.check_schema({"type": "no-such-type"})
    assert caught.value.reason == "INVALID_SCHEMA"


def test_local_refs_work() -> None:
    local = {"$defs": {"port": {"type": "integer"}}, "properties": {"p": {"$ref": "#/$defs/port"}}}
    assert [v.field for v in schema.violations(local, {"p": "x"}, "default")] == ["/p"]


def test_a_self_referencing_schema_is_refused_naming_the_cycle() -> None:
    description = refusal({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    assert "cycle: /$defs/a → /$defs/a" in description


@pytest.mark.parametrize(
    "cyclic",
    [
        {"$ref": "#"},
        {"not": {"$ref": "#"}},
        {"allOf": [{"if": {"$ref": "#"}}]},
        {"$dynamicAnchor": "n", "anyOf": [{"$dynamicRef": "#n"}]},
    ],
    ids=["root", "not", "allOf-if", "dynamicRef"],
)
def test_a_cycle_through_any_in_place_keyword_is_refused(cyclic: dict[str, Any]) -> None:
    assert "cycle" in refusal(cyclic)


def test_recursion_through_members_is_accepted_and_validates() -> None:
    schema.check_schema(TREE)
    document = {"name": "root", "children": [{"name": "leaf", "children": [{"name": 3}]}]}
    assert [v.field for v in schema.violations(TREE, document, "default")] == ["/children/0/children/0/name"]


def test_a_reference_chain_longer_than_validation_can_follow_is_refused() -> None:
    length = schema_graph.MAX_VALIDATION_DEPTH + 10
    chain: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    chain[f"d{length}"] = {"type": "integer"}
    assert "more than" in refusal({"$defs": chain, "$ref": "#/$defs/d0"})


def test_remote_refs_are_refused_when_set_and_never_fetched() -> None:
    remote = {"properties": {"a": {"$ref": "https://example.invalid/schema.json"}}}
    assert "does not resolve within the schema" in refusal(remote)
    with pytest.raises(schema.SchemaUnusable) as caught:  # as a schema stored before the check
        schema.violations(remote, {"a": 1}, "default")
    assert caught.value.reason == "INVALID_SCHEMA"


@pytest.mark.parametrize("target", ["#/required", "#/properties/a/type", "#/allOf/x", "#/allOf/9"])
def test_a_reference_to_anything_but_a_schema_is_refused(target: str) -> None:
    refusal(
        {"required": ["a"], "allOf": [{}], "properties": {"a": {"type": "string"}, "b": {"$ref": target}}}
    )


def test_the_published_meta_schema_can_be_referenced_without_fetching_it() -> None:
    meta = {"properties": {"embedded": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}
    schema.check_schema(meta)
    assert [v.field for v in schema.violations(meta, {"embedded": {"type": 5}}, "default")] == [
        "/embedded/type"
    ]


def test_a_schema_whose_cost_doubles_per_level_is_cut_off_with_a_clear_reason() -> None:
    doubling = {"allOf": [{"properties": {"a": {"$ref": "#"}}}, {"properties": {"a": {"$ref": "#"}}}]}
    schema.check_schema(doubling)  # fine for shallow documents: only a deep one costs 2**depth
    assert schema.violations(doubling, nested(3, 1), "default") == []
    with pytest.raises(schema.SchemaUnusable) as caught:
        schema.violations(doubling, nested(24, 1), "default")
    assert caught.value.reason == "SCHEMA_TOO_COMPLEX"


# Schemas from the keywords that recurse, with references to the root and to $defs that may
# point at each other: whatever check_schema accepts must then validate any document (or say it
# costs too much), never fail another way.
_REFERENCES = st.sampled_from(["#", "#/$defs/a", "#/$defs/b", "#/$defs/a/allOf/0"])
_LEAVES = st.sampled_from(
    [{"type": "integer"}, {"pattern": "^(a+)+$"}, {"minItems": 1}, True, False]
) | st.builds(lambda r: {"$ref": r}, _REFERENCES)
_SUBSCHEMAS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda s: {"allOf": [s]}, inner),
        st.builds(lambda s, t: {"anyOf": [s, t]}, inner, inner),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda s, t: {"if": s, "then": t}, inner, inner),
        st.builds(lambda s: {"properties": {"a": s}}, inner),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda s: {"additionalProperties": s}, inner),
        st.builds(lambda s, r: {"allOf": [s], "$ref": r}, inner, _REFERENCES),
    ),
    max_leaves=6,
)
_SCHEMAS = st.builds(
    lambda root, a, b: {**root, "$defs": {"a": {"allOf": [a]}, "b": b}} if isinstance(root, dict) else root,
    _SUBSCHEMAS,
    _SUBSCHEMAS,
    _SUBSCHEMAS,
)
_DOCUMENTS = st.recursive(
    st.integers() | st.text(alphabet="a!", max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidate=_SCHEMAS, documents=st.lists(_DOCUMENTS, min_size=1, max_size=3))
def test_a_schema_that_passes_the_check_never_fails_validation(candidate: Any, documents: list[Any]) -> None:
    try:
        schema.check_schema(candidate)
    except InvalidArgument:
        return
    for document in documents:
        try:
            schema.violations(candidate, {"doc": document}, "default")
        except schema.SchemaUnusable as exc:
            assert exc.reason == "SCHEMA_TOO_COMPLEX"

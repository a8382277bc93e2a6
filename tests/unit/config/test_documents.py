from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.config import documents
from services.runtime.errors import InvalidArgument

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


def test_overlay_merges_objects_and_replaces_other_values() -> None:
    base = {"db": {"host": "a", "port": 1}, "tags": ["x", "y"], "debug": False}
    overlay = {"db": {"port": 2}, "tags": ["z"]}
    merged, _ = documents.resolve([("default", base), ("prod", overlay)])
    assert merged == {"db": {"host": "a", "port": 2}, "tags": ["z"], "debug": False}


def test_null_in_an_overlay_removes_the_key() -> None:
    merged, sources = documents.resolve(
        [("default", {"a": 1, "b": {"c": 2}}), ("prod", {"a": None, "b": None})]
    )
    assert merged == {}
    assert sources == []


def test_sources_name_the_layer_that_set_each_leaf() -> None:
    _, sources = documents.resolve(
        [("default", {"db": {"host": "a", "port": 1}}), ("prod", {"db": {"port": 2}})]
    )
    assert sources == [("/db/host", "default"), ("/db/port", "prod")]


def test_pointers_escape_slash_and_tilde() -> None:
    _, sources = documents.resolve([("default", {"a/b": {"c~d": 1}})])
    assert sources == [("/a~1b/c~0d", "default")]


def test_resolve_does_not_mutate_its_layers() -> None:
    base = {"db": {"port": 1}}
    documents.resolve([("default", base), ("prod", {"db": {"port": 2}})])
    assert base == {"db": {"port": 1}}


def test_diff_lists_adds_removes_and_replaces_in_pointer_order() -> None:
    changes = documents.diff({"a": 1, "b": {"c": 2}, "z": 0}, {"a": 2, "b": {"d": 3}, "z": 0})
    assert [(c.operation, c.path) for c in changes] == [
        ("REPLACE", "/a"), ("REMOVE", "/b/c"), ("ADD", "/b/d"),
    ]  # fmt: skip


def test_diff_tells_true_from_one() -> None:
    assert documents.diff({"a": True}, {"a": 1}) != []
    assert documents.diff({"a": 1}, {"a": 1.0}) == []


@given(json_objects, json_objects)
def test_applying_a_diff_to_its_base_gives_its_target(base: dict[str, Any], target: dict[str, Any]) -> None:
    assert documents.apply(base, documents.diff(base, target)) == target


def test_depth_counts_nesting() -> None:
    assert documents.depth(1) == 0
    assert documents.depth({}) == 1
    assert documents.depth({"a": [{"b": 1}]}) == 3


def test_too_deep_documents_are_refused_with_the_field() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(InvalidArgument) as caught:
        documents.check_limits(deep, "environment.content", max_bytes=1000, max_depth=5)
    assert caught.value.reason == "DOCUMENT_TOO_DEEP"
    assert caught.value.field_violations[0].field == "environment.content"


def test_too_large_documents_are_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        documents.check_limits({"a": "x" * 200}, "environment.content", max_bytes=100, max_depth=5)
    assert caught.value.reason == "DOCUMENT_TOO_LARGE"


def test_nan_is_not_json() -> None:
    with pytest.raises(InvalidArgument, match="NaN"):
        documents.check_limits({"a": float("nan")}, "c", max_bytes=100, max_depth=5)

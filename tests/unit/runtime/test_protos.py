import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from services.runtime import protos
from services.runtime.errors import InvalidArgument

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=20,
)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def refusal(value: dict[str, Any], field: str = "environment.content") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        protos.document(struct(value), field)
    return caught.value


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=5))
def test_a_finite_struct_converts_as_the_protobuf_json_mapping_does(value: dict[str, Any]) -> None:
    message = struct(value)
    assert protos.document(message, "content") == json_format.MessageToDict(message)


def test_nan_is_refused_naming_its_path() -> None:
    error = refusal({"db": {"port": math.nan}})
    assert [v.field for v in error.field_violations] == ["environment.content.db.port"]
    assert error.reason == "NUMBER_NOT_FINITE"
    assert "NaN" in error.field_violations[0].description


def test_infinities_in_lists_and_odd_keys_are_named_by_index_and_quoted_key() -> None:
    error = refusal({"limits": [1, math.inf], "a b": {"x.y": -math.inf}}, "namespace.schema")
    assert sorted(v.field for v in error.field_violations) == [
        "namespace.schema.limits[1]",
        'namespace.schema["a b"]["x.y"]',
    ]
    assert {v.description.split()[0] for v in error.field_violations} == {"Infinity", "-Infinity"}


def test_every_non_finite_number_is_counted_but_only_the_first_ones_are_listed() -> None:
    error = refusal({f"k{i}": math.nan for i in range(50)})
    assert len(error.field_violations) == protos.MAX_REPORTED_NUMBERS
    assert "and 49 more" in error.message


def test_long_keys_and_deep_paths_are_shortened() -> None:
    long_key = refusal({"k" * 10_000: math.nan}).field_violations[0].field
    assert long_key == "environment.content." + "k" * protos.MAX_QUOTED_KEY + "…"
    deep: dict[str, Any] = {"leaf": math.nan}
    for _ in range(60):
        deep = {"level": deep}
    deep_path = refusal(deep).field_violations[0].field
    assert deep_path.startswith("environment.content…") and deep_path.endswith(".level.leaf")
    assert len(deep_path) <= len("environment.content…") + protos.MAX_PATH

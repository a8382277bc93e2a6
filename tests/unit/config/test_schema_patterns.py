from typing import Any

import pytest
import re2

from services.config import schema, schema_patterns
from services.runtime.errors import InvalidArgument

CATASTROPHIC = "^(a+)+$"  # exponential in a backtracking engine on "aaaa…a!"
FAILING_TEXT = "a" * 24 + "!"


def fields(value: dict[str, Any], document: dict[str, Any]) -> list[str]:
    schema.check_schema(value)
    return [v.field for v in schema.violations(value, document, "default")]


def test_schema_patterns_are_compiled_by_re2() -> None:
    assert isinstance(schema_patterns.compiled(CATASTROPHIC), re2._Regexp)
    # RE2 syntax that Python's re refuses: accepted and evaluated, so RE2 is what evaluates.
    assert fields({"properties": {"name": {"pattern": r"^\p{Lu}"}}}, {"name": "élan"}) == ["/name"]
    assert fields({"properties": {"name": {"pattern": r"^\p{Lu}"}}}, {"name": "Élan"}) == []


def test_a_catastrophic_pattern_gets_the_right_answer() -> None:
    value = {"properties": {"x": {"pattern": CATASTROPHIC}}}
    assert fields(value, {"x": FAILING_TEXT}) == ["/x"]
    assert fields(value, {"x": "a" * 24}) == []


def test_pattern_properties_and_additional_properties_match_with_re2() -> None:
    value = {"patternProperties": {CATASTROPHIC: {"type": "integer"}}, "additionalProperties": False}
    assert fields(value, {"a" * 24: "not an integer"}) == ["/" + "a" * 24]
    assert fields(value, {FAILING_TEXT: 1}) == ["/"]  # matches no pattern: an additional property
    assert fields(value, {"aaa": 1}) == []


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)a", "(?<!a)b", r"a{2000}"])
@pytest.mark.parametrize("where", ["pattern", "patternProperties"])
def test_a_pattern_re2_cannot_take_is_refused_when_set(pattern: str, where: str) -> None:
    value = {"pattern": pattern} if where == "pattern" else {"patternProperties": {pattern: {}}}
    with pytest.raises(InvalidArgument) as caught:
        schema.check_schema(value)
    violation = caught.value.field_violations[0]
    assert violation.field == "namespace.schema"
    assert f"/{where}" in violation.description and "RE2" in violation.description


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    value = {"patternProperties": {"^a": {}}, "properties": {"b": {"unevaluatedProperties": False}}}
    with pytest.raises(InvalidArgument, match="unevaluatedProperties cannot be combined"):
        schema.check_schema(value)


def test_a_pattern_stored_before_re2_is_reported_not_raised() -> None:
    with pytest.raises(schema.SchemaUnusable) as caught:
        schema.violations({"properties": {"x": {"pattern": r"(a)\1"}}}, {"x": "aa"}, "default")
    assert caught.value.reason == "INVALID_SCHEMA"

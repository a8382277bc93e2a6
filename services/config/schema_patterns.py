"""Schema regular expressions, evaluated by RE2: time linear in the text, whatever the pattern.

jsonschema evaluates `pattern` and `patternProperties` (and the patterns `additionalProperties`
has to rule out) with Python's backtracking `re`, where a pattern like `^(a+)+$` takes time
exponential in the length of the text it fails on: one namespace's schema could stall the
process for every caller. RE2 refuses what it cannot match in linear time (backreferences,
lookaround), so a schema is checked with it when it is set and evaluated with it afterwards.

jsonschema's `unevaluatedProperties` reads the same patterns with `re` internally and offers no
hook, so a schema that has both keywords is refused instead (`check_keywords`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import re2
from jsonschema import FormatChecker, ValidationError

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the caller's error, reported to the caller


class PatternError(ValueError):
    """A pattern RE2 cannot take; the message says why, in RE2's words."""


@lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """`pattern` compiled by RE2 (cached); PatternError if RE2 cannot take it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b"not a valid pattern"
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(text) from None


def _is_regex(instance: object) -> bool:
    if isinstance(instance, str):
        compiled(instance)
    return True


# The meta-schema asks `format: regex` of every `pattern` and `patternProperties` key: checked
# by RE2, so a pattern that would only fail later, at evaluation, is refused when the schema is set.
FORMATS = FormatChecker(formats=())
FORMATS.checks("regex", raises=PatternError)(_is_regex)


def check_keywords(subschemas: list[Mapping[str, Any]]) -> str | None:
    """Why a schema with these subschemas cannot be evaluated with RE2 only; None if it can."""
    uses = {
        keyword
        for s in subschemas
        for keyword in ("patternProperties", "unevaluatedProperties")
        if keyword in s
    }
    if len(uses) == 2:
        return (
            "unevaluatedProperties cannot be combined with patternProperties here: the validator "
            "would evaluate those patterns with a backtracking engine; use additionalProperties"
        )
    return None


def _matches_any(patterns: Mapping[str, Any], key: str) -> bool:
    return any(compiled(p).search(key) is not None for p in patterns)


def pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """The `pattern` keyword: a string must contain a match."""
    if validator.is_type(instance, "string") and compiled(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """The `patternProperties` keyword: each member whose name matches a pattern is validated
    against that pattern's subschema."""
    if not validator.is_type(instance, "object"):
        return
    for each, subschema in patterns.items():
        regex = compiled(each)
        for key, value in instance.items():
            if regex.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=each)


def additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """The `additionalProperties` keyword: members named neither in `properties` nor by a
    `patternProperties` pattern are validated against it (`false`: are not allowed)."""
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [key for key in instance if key not in named and not _matches_any(patterns, key)]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif additional is False and extras:
        listed = ", ".join(repr(key) for key in sorted(extras)[:20])
        yield ValidationError(f"additional properties are not allowed ({listed})")

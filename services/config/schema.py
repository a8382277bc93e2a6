"""JSON Schema (draft 2020-12) checks for namespaces' resolved documents.

A schema is checked when it is set, so that validating a document later can only find
violations: against the meta-schema (its patterns by RE2, `schema_patterns`), and as the
validator would walk it (`schema_graph`: references resolve locally, no cycles, bounded depth).
Remote `$ref`s are never fetched: a schema is configuration, not a reason for the server to make
network calls. Validation itself is bounded too: a schema may only take a number of steps
proportional to the document (a few small subschemas that each apply the others twice per
level would otherwise take time exponential in the document's depth). Compiled validators are
cached by schema text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.exceptions
from jsonschema.validators import Draft202012Validator

from services.config import documents, schema_graph, schema_patterns
from services.runtime.errors import FieldViolation, InvalidArgument

MAX_VIOLATIONS = 50
# Keyword evaluations one document may cost: a schema written for the data takes a few per value.
BASE_STEPS = 10_000
STEPS_PER_VALUE = 16

# An empty registry resolves only references inside the schema itself (and the published
# meta-schemas, which jsonschema adds). Without it, jsonschema fetches unknown `$ref` URLs.
_REGISTRY: referencing.Registry[Any] = referencing.Registry()


class SchemaUnusable(Exception):
    """A schema that cannot check a document (one set before today's checks, or too costly for
    this document): `reason` in UPPER_SNAKE, the message for the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _OutOfSteps(Exception):
    pass


_steps_left: ContextVar[list[int] | None] = ContextVar("schema_steps_left", default=None)

Keyword = Callable[[Any, Any, Any, Any], Any]


def _counted(keyword: Keyword) -> Keyword:
    # Counted when the validator calls the keyword, which returns its generator: no extra frame
    # on the recursion that nested subschemas make.
    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        left = _steps_left.get()
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise _OutOfSteps
        return keyword(validator, value, instance, schema)

    return counted


_KEYWORDS: dict[str, Keyword] = {
    **Draft202012Validator.VALIDATORS,
    "pattern": schema_patterns.pattern,
    "patternProperties": schema_patterns.pattern_properties,
    "additionalProperties": schema_patterns.additional_properties,
}
Validator = jsonschema.validators.extend(
    Draft202012Validator,
    validators={name: _counted(keyword) for name, keyword in _KEYWORDS.items()},
    format_checker=schema_patterns.FORMATS,
)


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    return Validator(json.loads(schema_text), registry=_REGISTRY)


def check_schema(
    schema: dict[str, Any], field: str = "namespace.schema", *, max_document_depth: int = 24
) -> None:
    """Refuse a schema that is not valid draft 2020-12, or that validation could not finish on a
    document up to `max_document_depth` levels deep."""
    try:
        Draft202012Validator.check_schema(schema, format_checker=schema_patterns.FORMATS)
    except jsonschema.SchemaError as exc:
        description = exc.message[:300]
        if isinstance(exc.cause, schema_patterns.PatternError):
            description += f" (RE2: {str(exc.cause)[:200]})"
        raise _invalid_schema(field, _json_pointer(exc.path) or "/", description) from None
    try:
        subschemas = schema_graph.check(schema, max_document_depth)
    except schema_graph.SchemaGraphError as exc:
        raise _invalid_schema(field, exc.where or "/", exc.description) from None
    problem = schema_patterns.check_keywords([s.contents for s in subschemas])
    if problem is not None:
        raise _invalid_schema(field, "/", problem)


def _invalid_schema(field: str, where: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} is not a usable JSON Schema (draft 2020-12): at {where}: {description}",
        [FieldViolation(field, f"at {where}: {description}", "INVALID_SCHEMA")],
        reason="INVALID_SCHEMA",
    )


def _json_pointer(path: Iterable[Any]) -> str:
    result = ""
    for part in path:
        result = documents.pointer(result, str(part))
    return result


def violations(
    schema: dict[str, Any], document: documents.Document, environment: str
) -> list[FieldViolation]:
    """Every way `document` (environment `environment`, resolved) breaks `schema` (at most
    MAX_VIOLATIONS); SchemaUnusable if the schema cannot check it."""
    validator = _validator(documents.encode(schema))
    found: list[FieldViolation] = []
    token = _steps_left.set([BASE_STEPS + STEPS_PER_VALUE * documents.size(document)])
    try:
        for error in validator.iter_errors(document):
            found.append(
                FieldViolation(
                    _json_pointer(error.absolute_path) or "/",
                    f"environment {environment!r}: {error.message[:300]}",
                    "SCHEMA_VIOLATION",
                )
            )
            if len(found) >= MAX_VIOLATIONS:
                break
    except (_OutOfSteps, RecursionError):
        raise SchemaUnusable(
            "SCHEMA_TOO_COMPLEX",
            f"checking environment {environment!r} against the schema takes more steps than its "
            "size allows; simplify the schema",
        ) from None
    except referencing.exceptions.Unresolvable as exc:
        raise SchemaUnusable(
            "INVALID_SCHEMA", f"the schema has a $ref that cannot be resolved locally: {str(exc)[:200]}"
        ) from None
    except schema_patterns.PatternError as exc:
        raise SchemaUnusable("INVALID_SCHEMA", f"the schema has a pattern RE2 cannot take: {exc}") from None
    finally:
        _steps_left.reset(token)
    return found

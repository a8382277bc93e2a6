"""JSON Schema (draft 2020-12) checks for namespaces' resolved documents.

Remote `$ref`s are never fetched: a schema is configuration, not a reason for the server
to make network calls. Compiled validators are cached by schema text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema.validators import Draft202012Validator

from services.config import documents
from services.runtime.errors import FieldViolation, InvalidArgument

MAX_VIOLATIONS = 50


# An empty registry resolves only references inside the schema itself. Without it, jsonschema
# falls back to fetching unknown `$ref` URLs over the network.
_REGISTRY: referencing.Registry[Any] = referencing.Registry()


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), registry=_REGISTRY)


def check_schema(schema: dict[str, Any], field: str = "namespace.schema") -> None:
    """Refuse a schema that is not itself valid draft 2020-12."""
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = _json_pointer(exc.path) or "/"
        raise InvalidArgument(
            f"{field} is not a valid JSON Schema (draft 2020-12): {exc.message[:300]}",
            [FieldViolation(field, f"at {where}: {exc.message[:300]}", "INVALID_SCHEMA")],
            reason="INVALID_SCHEMA",
        ) from None


def _json_pointer(path: Iterable[Any]) -> str:
    result = ""
    for part in path:
        result = documents.pointer(result, str(part))
    return result


def violations(
    schema: dict[str, Any], document: documents.Document, environment: str
) -> list[FieldViolation]:
    """Every way `document` (environment `environment`, resolved) breaks `schema`."""
    validator = _validator(documents.encode(schema))
    found: list[FieldViolation] = []
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
    except referencing.exceptions.Unresolvable as exc:
        raise InvalidArgument.for_field(
            "namespace.schema",
            f"has a $ref that cannot be resolved locally: {str(exc)[:200]}",
            reason="INVALID_SCHEMA",
        ) from None
    return found

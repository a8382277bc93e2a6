"""Reading manifests: TOML, JSON and YAML parsed without executing anything. A malformed
manifest is INVALID_ARGUMENT naming the file and, where the parser says, the line."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from services.runtime.errors import FieldViolation, InvalidArgument

MAX_YAML_DOCUMENTS = 64


def malformed(path: str, kind: str, problem: str, line: int = 0) -> InvalidArgument:
    where = f" (line {line})" if line else ""
    description = f"{path} is not valid {kind}{where}: {problem[:200]}"
    return InvalidArgument(
        description, [FieldViolation(path, description, "MALFORMED_MANIFEST")], reason="MALFORMED_MANIFEST"
    )


def toml(path: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise malformed(path, "TOML", str(exc), int(found.group(1)) if found else 0) from None


def json_object(path: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text.removeprefix("\ufeff"))  # npm reads a package.json with a BOM
    except json.JSONDecodeError as exc:
        raise malformed(path, "JSON", exc.msg, exc.lineno) from None
    except RecursionError:
        raise malformed(path, "JSON", "nested too deeply") from None
    if not isinstance(value, dict):
        raise malformed(path, "JSON", "the top level is not an object")
    return value


def _loader() -> YAML:
    yaml = YAML(typ="rt", pure=True)  # round-trip: keeps line numbers for the evidence
    yaml.allow_duplicate_keys = True
    return yaml


def yaml_documents(path: str, text: str) -> list[Any]:
    """Every document of a YAML file; aliases are expanded lazily by ruamel, never executed."""
    try:
        documents = []
        for number, document in enumerate(_loader().load_all(text)):
            if number >= MAX_YAML_DOCUMENTS:
                break
            documents.append(document)
        return documents
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise malformed(
            path, "YAML", str(getattr(exc, "problem", None) or exc), (mark.line + 1) if mark else 0
        ) from None
    except RecursionError:
        raise malformed(path, "YAML", "nested too deeply") from None


def yaml_mapping(path: str, text: str) -> dict[Any, Any]:
    documents = yaml_documents(path, text)
    document = documents[0] if documents else {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise malformed(path, "YAML", "the top level is not a mapping")
    return document


def yaml_line(node: Any, key: Any = None) -> int:
    """The line (from 1) of `key` in a ruamel mapping, or of the node itself; 0 when unknown."""
    try:
        if key is not None:
            return int(node.lc.key(key)[0]) + 1
        return int(node.lc.line) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return 0

"""Secret references in configuration, `{"$secret": "<secret id>[#<field>]"}`: finding them
in a document and putting values (or the reason there is none) in their place.

Reading the values is `secrets_client`'s: this module knows nothing of how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REF_KEY = "$secret"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resolution:
    path: str
    reference: str
    version: str = ""
    redacted_reason: str = ""


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def find(document: Any, path: str = "") -> list[tuple[str, str]]:
    """(JSON pointer, reference) of every `{"$secret": "..."}` object, in pointer order."""
    if isinstance(document, dict):
        if set(document) == {REF_KEY} and isinstance(document[REF_KEY], str):
            return [(path, document[REF_KEY])]
        return [r for k in sorted(document) for r in find(document[k], f"{path}/{_escape(k)}")]
    if isinstance(document, list):
        return [r for i, item in enumerate(document) for r in find(item, f"{path}/{i}")]
    return []


def replace(document: Any, path: str, value: Any) -> Any:
    """A copy of `document` with `value` at the JSON pointer `path`."""
    if not path:
        return value
    head, _, rest = path[1:].partition("/")
    key = head.replace("~1", "/").replace("~0", "~")
    if isinstance(document, list):
        copy = list(document)
        copy[int(key)] = replace(copy[int(key)], "/" + rest if rest else "", value)
        return copy
    return {**document, key: replace(document[key], "/" + rest if rest else "", value)}


def redacted(document: Any, path: str, reference: str, reason: str) -> Any:
    """`document` with the reference at `path` kept, saying why it has no value."""
    return replace(document, path, {REF_KEY: reference, "redacted": reason})

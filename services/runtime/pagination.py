"""AIP-158 pagination: page sizes and opaque page tokens bound to the query that made them."""

from __future__ import annotations

import base64
import hashlib
import json

from services.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; above the maximum is coerced down (AIP-158); negative is an error."""
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return default if requested == 0 else min(requested, maximum)


def _fingerprint(query: tuple[object, ...]) -> str:
    return hashlib.sha256(json.dumps(query, default=str).encode()).hexdigest()[:16]


def encode_token(cursor: str, query: tuple[object, ...]) -> str:
    """A token that resumes after `cursor`, valid only for the same `query` parameters."""
    payload = json.dumps({"c": cursor, "q": _fingerprint(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, query: tuple[object, ...]) -> str | None:
    """The cursor in `token`, or None for the first page. Foreign or corrupt tokens are refused."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor, fingerprint = payload["c"], payload["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.for_field("page_token", "is not a token this service issued") from None
    if not isinstance(cursor, str) or fingerprint != _fingerprint(query):
        raise InvalidArgument.for_field(
            "page_token", "was issued for a different query; repeat the original parameters"
        )
    return cursor

"""AIP-158 pagination for every List RPC: page sizes, and opaque page tokens bound to the query
that made them.

A token carries the cursor to resume after and a fingerprint of the query's parameters,
sealed with an HMAC: a token that was edited, forged or issued for other parameters is
INVALID_ARGUMENT, never a page from somewhere else. Every replica must seal with the same
key; the server installs the mesh's key from Redis when it starts (`use_key`). Until then
(unit tests, tools) a key of this process's own is used. Tokens sealed with any key this
process was given are accepted (a test process hosts servers on several Redis instances).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

from services.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 2048  # longer is not a token we issued: refused before any decoding
_MAC_BYTES = 16

_keys = [secrets.token_bytes(32)]  # the newest seals


def use_key(key: bytes) -> None:
    """Seal tokens with `key` from now on (the one every replica shares), and accept them."""
    if len(key) < 16:
        raise ValueError("a page-token key has at least 16 bytes")
    if key in _keys:
        _keys.remove(key)
    _keys.append(key)


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; above the maximum is coerced down (AIP-158); negative is an error."""
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return default if requested == 0 else min(requested, maximum)


def _fingerprint(query: tuple[object, ...]) -> str:
    return hashlib.sha256(json.dumps(query, default=str).encode()).hexdigest()[:16]


def _mac(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_token(cursor: str, query: tuple[object, ...]) -> str:
    """A token that resumes after `cursor`, valid only for the same `query` parameters."""
    payload = json.dumps({"c": cursor, "q": _fingerprint(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_mac(payload, _keys[-1]) + payload).decode().rstrip("=")


def _not_ours() -> InvalidArgument:
    return InvalidArgument.for_field(
        "page_token", "is not a token this service issued", reason="BAD_PAGE_TOKEN"
    )


def decode_token(token: str, query: tuple[object, ...]) -> str | None:
    """The cursor in `token`, or None for the first page. Foreign, edited or corrupt tokens are
    refused."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise _not_ours()
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise _not_ours() from None
    mac, payload = sealed[:_MAC_BYTES], sealed[_MAC_BYTES:]
    if not any(hmac.compare_digest(mac, _mac(payload, key)) for key in _keys):
        raise _not_ours()
    try:
        fields = json.loads(payload)
        cursor, fingerprint = fields["c"], fields["q"]
    except (ValueError, KeyError, TypeError):
        raise _not_ours() from None
    if not isinstance(cursor, str) or fingerprint != _fingerprint(query):
        raise InvalidArgument.for_field(
            "page_token",
            "was issued for a different query; repeat the original parameters",
            reason="BAD_PAGE_TOKEN",
        )
    return cursor

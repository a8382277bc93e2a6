"""The API key format: `dmk_<key id>_<secret><checksum>`.

- `dmk_`: a fixed prefix, so that secret scanners recognise devmesh keys;
- the key id: 12 characters of [0-9a-z], public, names the key (`apiKeys/<id>`);
- the secret: 32 base62 characters from `secrets` (about 190 bits);
- the checksum: CRC32 of everything before it, 6 base62 characters, so that a scanner (or
  the server, before any lookup) rejects a mistyped or made-up key.

The store never holds a key: only `digest(pepper, key)`, an HMAC-SHA256 under a pepper that
Vault holds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

PREFIX = "dmk_"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_KEY_ID_ALPHABET = string.digits + string.ascii_lowercase

KEY_ID_RE = re.compile(rf"[0-9a-z]{{{KEY_ID_LENGTH}}}")
_KEY_RE = re.compile(
    rf"{PREFIX}(?P<id>[0-9a-z]{{{KEY_ID_LENGTH}}})_"
    rf"(?P<secret>[0-9A-Za-z]{{{SECRET_LENGTH}}})(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)


class MalformedKey(ValueError):
    """Not shaped like a devmesh API key."""


class BadChecksum(ValueError):
    """Shaped like a key, but the checksum does not match: mistyped or made up."""


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def new_key_id() -> str:
    return "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def new_key(key_id: str) -> str:
    """A fresh key for `key_id`. Returned to the caller once; never stored."""
    body = f"{PREFIX}{key_id}_" + "".join(secrets.choice(BASE62) for _ in range(SECRET_LENGTH))
    return body + checksum(body)


def key_prefix(key_id: str) -> str:
    """The public beginning of every key of `key_id`, shown in listings."""
    return f"{PREFIX}{key_id}_"


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    key: str


def parse(key: str) -> ParsedKey:
    """Check shape and checksum without any lookup; raises MalformedKey or BadChecksum."""
    match = _KEY_RE.fullmatch(key)
    if match is None:
        raise MalformedKey("not a devmesh API key")
    if not hmac.compare_digest(checksum(key[:-CHECKSUM_LENGTH]), match["checksum"]):
        raise BadChecksum("the API key's checksum does not match")
    return ParsedKey(match["id"], key)


def digest(pepper: bytes, key: str) -> bytes:
    """What the store keeps instead of the key."""
    return hmac.new(pepper, key.encode("ascii"), hashlib.sha256).digest()

"""ES256 JWTs: the signing input the issuing service has Vault sign, and local verification.

Verification is strict and refuses before it computes: the token must be three base64url
parts of bounded size, the header's `alg` exactly `ES256` (so `none`, HS256 and every
algorithm-confusion trick fail), its `kid` a key version the JWKS holds, the signature 64
bytes of r||s, and the claims `iss`, `aud`, `exp`, `nbf` right within a small leeway.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGORITHM = "ES256"
MAX_TOKEN_LENGTH = 8192


class TokenError(ValueError):
    """A token that must be refused; `reason` is the ErrorInfo reason callers see."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _json_part(text: str) -> dict[str, Any]:
    value = json.loads(b64url_decode(text))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def signing_input(kid: str, claims: Mapping[str, Any]) -> str:
    """`base64url(header).base64url(claims)`: what the signature covers."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    compact = {"separators": (",", ":"), "sort_keys": True}
    return (
        f"{b64url(json.dumps(header, **compact).encode())}.{b64url(json.dumps(claims, **compact).encode())}"  # type: ignore[arg-type]
    )


# -- keys -------------------------------------------------------------------------------------


def jwk(kid: str, public_key_pem: str) -> dict[str, str]:
    """The JWK (RFC 7518 §6.2) of a P-256 public key in PEM."""
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the token signing key is not an EC P-256 key")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": kid,
        "use": "sig",
        "alg": ALGORITHM,
    }


def public_keys(pems: Mapping[str, str]) -> dict[str, ec.EllipticCurvePublicKey]:
    """kid -> verifying key, from kid -> PEM."""
    keys = {}
    for kid, pem in pems.items():
        key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        keys[kid] = key
    return keys


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    subject: str
    role: str
    permissions: tuple[str, ...]
    expires_at: float
    key_id: str  # the API key the token was exchanged for; "" for a mesh identity
    kid: str
    token_id: str


def unverified_kid(token: str) -> str:
    """The header's kid after the shape and algorithm checks; raises TokenError."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("TOKEN_MALFORMED", "the token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("TOKEN_MALFORMED", "a token has three dot-separated parts")
    try:
        header = _json_part(parts[0])
    except (ValueError, binascii.Error):
        raise TokenError("TOKEN_MALFORMED", "the token header is not base64url JSON") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError("TOKEN_ALGORITHM_NOT_ALLOWED", f"only {ALGORITHM} tokens are accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("TOKEN_MALFORMED", "the token header has no kid")
    return kid


def verify(
    token: str,
    key: ec.EllipticCurvePublicKey | None,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: float,
) -> Claims:
    """Verify `token` with `key` (the JWKS entry of its kid, None when unknown); TokenError if not."""
    kid = unverified_kid(token)
    if key is None:
        raise TokenError(
            "TOKEN_UNKNOWN_KEY", "the token was signed with a key that is not (or no longer) trusted"
        )
    head, body, signature = token.split(".")
    try:
        raw = b64url_decode(signature)
    except (ValueError, binascii.Error):
        raise TokenError("TOKEN_MALFORMED", "the token signature is not base64url") from None
    if len(raw) != 64:
        raise TokenError("TOKEN_BAD_SIGNATURE", "the token signature is not an ES256 signature")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(der, f"{head}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TokenError("TOKEN_BAD_SIGNATURE", "the token signature does not verify") from None
    try:
        claims = _json_part(body)
    except (ValueError, binascii.Error):
        raise TokenError("TOKEN_MALFORMED", "the token claims are not base64url JSON") from None
    return _check_claims(claims, kid, issuer=issuer, audience=audience, now=now, leeway=leeway)


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("TOKEN_MALFORMED", f"the token has no numeric {name} claim")
    return float(value)


def _string(claims: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = claims.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise TokenError("TOKEN_MALFORMED", f"the token has no {name} claim")
    return value


def _check_claims(
    claims: Mapping[str, Any], kid: str, *, issuer: str, audience: str, now: float, leeway: float
) -> Claims:
    expires_at = _number(claims, "exp")
    not_before = _number(claims, "nbf")
    if now > expires_at + leeway:
        raise TokenError("TOKEN_EXPIRED", "the token has expired; exchange a new one")
    if now < not_before - leeway:
        raise TokenError("TOKEN_NOT_YET_VALID", "the token is not valid yet")
    if claims.get("iss") != issuer:
        raise TokenError("TOKEN_WRONG_ISSUER", "the token was issued by someone else")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenError("TOKEN_WRONG_AUDIENCE", "the token is meant for another audience")
    permissions = claims.get("permissions", [])
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise TokenError("TOKEN_MALFORMED", "the token's permissions claim is not a list of strings")
    return Claims(
        subject=_string(claims, "sub"),
        role=_string(claims, "role"),
        permissions=tuple(permissions),
        expires_at=expires_at,
        key_id=_string(claims, "key", required=False),
        kid=kid,
        token_id=_string(claims, "jti"),
    )

"""The pure parts of identity: the key format, permission patterns, JWT verification, GCRA."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from services.runtime import ratelimit
from services.runtime.identity import keys, roles, tokens


def test_a_new_key_parses_back_to_its_id() -> None:
    key_id = keys.new_key_id()
    key = keys.new_key(key_id)
    assert key.startswith(f"dmk_{key_id}_") and len(key) == 4 + 12 + 1 + 32 + 6
    assert keys.parse(key).key_id == key_id


def test_one_changed_character_fails_the_checksum() -> None:
    key = keys.new_key(keys.new_key_id())
    flipped = key[:20] + ("a" if key[20] != "a" else "b") + key[21:]
    with pytest.raises(keys.BadChecksum):
        keys.parse(flipped)


@given(st.text(max_size=80))
def test_anything_else_is_malformed_or_a_bad_checksum(text: str) -> None:
    with pytest.raises((keys.MalformedKey, keys.BadChecksum)):
        keys.parse(text)


@pytest.mark.parametrize(
    ("pattern", "permission", "expected"),
    [
        ("*", "config.environments.update", True),
        ("config.*", "config.environments.update", True),
        ("config.*", "secrets.versions.access", False),
        ("config.environments.*", "config.environments", False),
        ("*.*.get", "config.namespaces.get", True),
        ("*.*.get", "config.namespaces.list", False),
        ("config.namespaces.get", "config.namespaces.get", True),
        ("config.namespaces", "config.namespaces.get", False),
    ],
)
def test_permission_patterns(pattern: str, permission: str, expected: bool) -> None:
    assert roles.matches(pattern, permission) is expected


def test_a_narrowing_cannot_reach_beyond_the_role() -> None:
    assert roles.covered_by("config.environments.resolve", roles.VIEWER, ())
    assert not roles.covered_by("config.environments.update", roles.VIEWER, ())
    assert not roles.covered_by("config.*", roles.VIEWER, ())
    assert not roles.covered_by("config.namespaces.get", roles.ADMIN, ("config.environments.*",))
    assert roles.role_covered_by(roles.VIEWER, roles.ADMIN, ())
    assert not roles.role_covered_by(roles.OPERATOR, roles.VIEWER, ())


# -- tokens, signed here with a local P-256 key --------------------------------------------------

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key()


def sign(claims: dict[str, object], kid: str = "1", header: dict[str, object] | None = None) -> str:
    if header is None:
        signing_input = tokens.signing_input(kid, claims)
    else:
        signing_input = (
            f"{tokens.b64url(json.dumps(header).encode())}.{tokens.b64url(json.dumps(claims).encode())}"
        )
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{tokens.b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"iss": "devmesh", "aud": "devmesh", "sub": "apikey:x", "iat": now, "nbf": now,
                               "exp": now + 60, "jti": "j", "role": "viewer", "permissions": []}  # fmt: skip
    return {**base, **overrides}


def verify(token: str, key: ec.EllipticCurvePublicKey | None = PUBLIC) -> tokens.Claims:
    return tokens.verify(token, key, issuer="devmesh", audience="devmesh", now=time.time(), leeway=5)


def test_a_good_token_verifies() -> None:
    verified = verify(sign(claims(key="abc")))
    assert (verified.subject, verified.role, verified.key_id, verified.kid) == (
        "apikey:x",
        "viewer",
        "abc",
        "1",
    )


# Tokens are made when the test runs, not when it is collected: a suite that runs longer than a
# token lives must not turn "wrong audience" into "expired".
BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: sign(claims(exp=int(time.time()) - 60)), "TOKEN_EXPIRED"),
    ("not-yet-valid", lambda: sign(claims(nbf=int(time.time()) + 600)), "TOKEN_NOT_YET_VALID"),
    ("audience", lambda: sign(claims(aud="other")), "TOKEN_WRONG_AUDIENCE"),
    ("issuer", lambda: sign(claims(iss="other")), "TOKEN_WRONG_ISSUER"),
    ("alg-none", lambda: sign(claims(), header={"alg": "none", "kid": "1"}), "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("alg-es384", lambda: sign(claims(), header={"alg": "ES384", "kid": "1"}), "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("no-kid", lambda: sign(claims(), header={"alg": "ES256"}), "TOKEN_MALFORMED"),
    ("exp-not-a-number", lambda: sign(claims(exp="soon")), "TOKEN_MALFORMED"),
    ("permissions-not-a-list", lambda: sign(claims(permissions="all")), "TOKEN_MALFORMED"),
    ("two-parts", lambda: "a.b", "TOKEN_MALFORMED"),
    ("too-long", lambda: "x" * 9000, "TOKEN_MALFORMED"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in BAD_TOKENS], ids=[c[0] for c in BAD_TOKENS])
def test_bad_tokens_are_refused_with_their_reason(make: Callable[[], str], reason: str) -> None:
    with pytest.raises(tokens.TokenError) as caught:
        verify(make())
    assert caught.value.reason == reason


def test_a_signature_by_another_key_or_an_unknown_kid_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(tokens.TokenError) as caught:
        verify(sign(claims()), other)
    assert caught.value.reason == "TOKEN_BAD_SIGNATURE"
    with pytest.raises(tokens.TokenError) as caught:
        verify(sign(claims()), None)
    assert caught.value.reason == "TOKEN_UNKNOWN_KEY"


def test_the_jwk_of_a_pem_key() -> None:
    pem = PUBLIC.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    jwk = tokens.jwk("7", pem)
    assert (jwk["kty"], jwk["crv"], jwk["kid"], jwk["alg"]) == ("EC", "P-256", "7", "ES256")
    assert tokens.public_keys({"7": pem})["7"].public_numbers() == PUBLIC.public_numbers()


# -- GCRA (the in-process fallback runs the Lua script's arithmetic) ----------------------------


def test_gcra_admits_the_burst_then_the_rate() -> None:
    limit = ratelimit.Limit(per_second=10, burst=5)
    tats: dict[str, int] = {}
    now = 1_000_000_000
    admitted = [ratelimit._gcra_local(tats, "k", limit, 1, now)[0] for _ in range(8)]
    assert admitted == [1] * 5 + [0] * 3
    refused = ratelimit._gcra_local(tats, "k", limit, 1, now)
    assert refused[2] == 100_000  # one token comes back every 1/10 s
    assert ratelimit._gcra_local(tats, "k", limit, 1, now + 100_000)[0] == 1


def test_leases_stay_small_for_small_limits() -> None:
    assert ratelimit.lease_size(ratelimit.Limit(5, 10)) == 1
    assert ratelimit.lease_size(ratelimit.Limit(500, 1000)) == 25
    assert ratelimit.lease_size(ratelimit.Limit(1_000_000, 10_000_000)) == ratelimit.MAX_LEASE


def test_limits_parse_with_a_default_burst_of_twice_the_rate() -> None:
    limits = ratelimit.parse_limits("admin=100/300, *=5")
    assert limits["admin"] == ratelimit.Limit(100, 300) and limits["*"] == ratelimit.Limit(5, 10)

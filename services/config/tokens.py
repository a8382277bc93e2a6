"""Token issuing (TokenService's domain): API key or mesh identity in, ES256 JWT out.

Vault's transit key `devmesh-jwt` signs (`marshaling_algorithm=jws` gives the raw r||s a JWT
needs); the header's `kid` is the key version that signs, chosen before signing because the
header is part of what is signed. The JWKS is every version Vault still holds, so rotating
the key breaks no live token, and raising its `min_decryption_version` retires old ones.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hvac import exceptions as hvac_errors

from services.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.runtime.identity import roles, tokens
from services.runtime.identity.authenticator import ISSUER
from services.runtime.identity.principal import API_KEY, MESH, Principal
from services.runtime.vault import JWT_KEY, TRANSIT_MOUNT, Vault

DEFAULT_TTL_S = 15 * 60
MIN_TTL_S = 60
MAX_TTL_S = 12 * 3600
KEY_CACHE_S = 5.0


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: int  # unix seconds
    lifetime_s: int


class TokenIssuer:
    def __init__(self, vault: Vault, audience: str) -> None:
        self._vault = vault
        self._audience = audience
        self._key: dict[str, Any] = {}
        self._key_read_at = 0.0

    async def _signing_key(self, *, fresh: bool = False) -> dict[str, Any]:
        """Vault's view of the key (versions, latest), re-read at most every few seconds."""
        if fresh or time.monotonic() - self._key_read_at > KEY_CACHE_S:
            response = await self._vault.call(
                self._vault.client.secrets.transit.read_key, JWT_KEY, mount_point=TRANSIT_MOUNT
            )
            self._key, self._key_read_at = response["data"], time.monotonic()
        return self._key

    async def jwks(self) -> list[dict[str, str]]:
        key = await self._signing_key()
        versions = sorted(key["keys"], key=int, reverse=True)
        return [tokens.jwk(str(v), key["keys"][v]["public_key"]) for v in versions]

    async def exchange(self, principal: Principal, ttl_s: int | None, permissions: tuple[str, ...]) -> Issued:
        """A token for `principal`, narrowed to `permissions` when given."""
        if principal.kind not in (API_KEY, MESH):
            raise FailedPrecondition(
                "only an API key or a mesh identity can be exchanged for a token, not a token",
                reason="NOT_EXCHANGEABLE",
            )
        ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
        problems = []
        if not MIN_TTL_S <= ttl <= MAX_TTL_S:
            problems.append(FieldViolation("ttl", f"must be between {MIN_TTL_S} s and {MAX_TTL_S} s"))
        for i, pattern in enumerate(permissions):
            if not roles.valid_pattern(pattern):
                problems.append(FieldViolation(f"permissions[{i}]", "is not a permission pattern"))
            elif not roles.covered_by(pattern, principal.role, principal.permissions):
                problems.append(FieldViolation(f"permissions[{i}]", "goes beyond what the caller holds"))
        if problems:
            raise InvalidArgument("the token request is invalid", problems)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": self._audience,
            "sub": principal.name,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "role": principal.role,
            "permissions": list(permissions or principal.permissions),
        }
        if principal.key_id:
            claims["key"] = principal.key_id
        try:
            kid = str((await self._signing_key())["latest_version"])
            token = await self.sign(kid, claims)
        except hvac_errors.InvalidRequest:
            # The key was rotated or its old versions retired since we last read it.
            kid = str((await self._signing_key(fresh=True))["latest_version"])
            token = await self.sign(kid, claims)
        return Issued(token, now + ttl, ttl)

    async def sign(self, kid: str, claims: dict[str, Any]) -> str:
        """Have Vault sign `claims` under key version `kid`."""
        signing_input = tokens.signing_input(kid, claims)
        response = await self._vault.call(
            self._vault.client.secrets.transit.sign_data,
            JWT_KEY,
            hash_input=base64.b64encode(signing_input.encode()).decode(),
            key_version=int(kid),
            hash_algorithm="sha2-256",
            marshaling_algorithm="jws",
            mount_point=TRANSIT_MOUNT,
        )
        signature = response["data"]["signature"].split(":", 2)[2]  # "vault:v<N>:<base64url r||s>"
        return f"{signing_input}.{signature}"

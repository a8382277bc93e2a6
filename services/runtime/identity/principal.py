"""The authenticated caller of one RPC."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.identity import roles

# How the caller proved who it is.
API_KEY = "api_key"
TOKEN = "token"
MESH = "mesh"
NONE = "none"


@dataclass(frozen=True)
class Principal:
    name: str  # "apikey:<id>", a SPIFFE id, or "anonymous"
    role: str
    permissions: tuple[str, ...] = ()  # narrows the role when not empty
    kind: str = NONE
    key_id: str = ""  # the API key behind an API-key or token credential
    rate_per_second: float = 0.0  # per-key rate limit override; 0: the role's
    rate_burst: int = 0

    def allows(self, permission: str) -> bool:
        return roles.allows(self.role, self.permissions, permission)


ANONYMOUS = Principal(name="anonymous", role="")

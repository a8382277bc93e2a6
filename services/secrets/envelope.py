"""Envelope encryption through Vault transit: the key `devmesh-data` is derived per tenant (the
tenant id is the derivation context), so one tenant's ciphertext never decrypts for another.
devmesh keeps nothing: callers store the ciphertext next to their data."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from hvac import exceptions as hvac_errors

from services.runtime.errors import InvalidArgument
from services.runtime.vault import TRANSIT_MOUNT, Vault

# The transit key that encrypts every tenant's data, derived per tenant (the spec has it made).
DATA_KEY = "devmesh-data"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _refused(exc: hvac_errors.InvalidRequest) -> InvalidArgument:
    text = str(exc)
    if "too old" in text or "disallowed by policy" in text:
        return InvalidArgument.for_field(
            "ciphertext", "was made with a key version that has been retired", reason="KEY_VERSION_RETIRED"
        )
    return InvalidArgument.for_field(
        "ciphertext", "is not a ciphertext of this tenant's key", reason="CIPHERTEXT_INVALID"
    )


def _version(ciphertext: str) -> int:
    return int(ciphertext.split(":", 2)[1].removeprefix("v"))


class Envelope:
    def __init__(self, vault: Vault, max_bytes: int) -> None:
        self._vault = vault
        self._transit = vault.client.secrets.transit
        self._max = max_bytes

    async def encrypt(self, tenant: str, plaintext: bytes) -> tuple[str, int]:
        if not plaintext or len(plaintext) > self._max:
            raise InvalidArgument.for_field("plaintext", f"must be 1 to {self._max} bytes")
        response = await self._vault.call(
            self._transit.encrypt_data, DATA_KEY, plaintext=_b64(plaintext), context=_b64(tenant.encode()),
            mount_point=TRANSIT_MOUNT,
        )  # fmt: skip
        ciphertext = response["data"]["ciphertext"]
        return ciphertext, _version(ciphertext)

    async def decrypt(self, tenant: str, ciphertext: str) -> bytes:
        response = await self._with_ciphertext(self._transit.decrypt_data, tenant, ciphertext)
        return base64.b64decode(response["data"]["plaintext"])

    async def rewrap(self, tenant: str, ciphertext: str) -> tuple[str, int]:
        response = await self._with_ciphertext(self._transit.rewrap_data, tenant, ciphertext)
        rewrapped = response["data"]["ciphertext"]
        return rewrapped, _version(rewrapped)

    async def _with_ciphertext(self, operation: Callable[..., Any], tenant: str, ciphertext: str) -> Any:
        """A transit operation on a caller's ciphertext; Vault's refusal becomes INVALID_ARGUMENT."""
        self._check(ciphertext)
        try:
            return await self._vault.call(
                operation,
                DATA_KEY,
                ciphertext=ciphertext,
                context=_b64(tenant.encode()),
                mount_point=TRANSIT_MOUNT,
            )
        except hvac_errors.InvalidRequest as exc:
            raise _refused(exc) from None

    @staticmethod
    def _check(ciphertext: str) -> None:
        parts = ciphertext.split(":", 2)
        if (
            len(parts) != 3
            or parts[0] != "vault"
            or not parts[1].startswith("v")
            or not parts[1][1:].isdigit()
        ):
            raise InvalidArgument.for_field(
                "ciphertext", "is not a ciphertext Encrypt returned", reason="CIPHERTEXT_INVALID"
            )

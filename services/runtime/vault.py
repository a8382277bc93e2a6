"""The Vault (OpenBao) adapter: AppRole login, token renewal, and hvac calls off the event loop.

hvac is synchronous, so every call runs in a worker thread with the client's timeout.
Failures are translated once, here: Vault unreachable, sealed or answering 5xx is
UNAVAILABLE with a retry hint (REASON `VAULT_UNAVAILABLE`); a policy refusal is an
internal fault (the service's own policy is wrong), never the caller's problem. Nothing
here ever logs a token, a secret_id or a value.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors
from requests.adapters import HTTPAdapter

from services.runtime.errors import Internal, ServiceError, Unavailable
from services.runtime.logging import get_logger
from services.runtime.settings import RuntimeSettings
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)

T = TypeVar("T")

VAULT_RETRY_AFTER = 1.0
VAULT_THREADS = 32


def translate_error(exc: BaseException) -> ServiceError | None:
    """A ServiceError for a Vault failure, or None for anything else."""
    if isinstance(exc, requests.exceptions.RequestException):
        return Unavailable("Vault is unreachable", reason="VAULT_UNAVAILABLE", retry_after=VAULT_RETRY_AFTER)
    if isinstance(exc, hvac_errors.VaultDown):  # HTTP 503: sealed, or a standby that cannot answer
        return Unavailable(
            "Vault is sealed or not serving requests",
            reason="VAULT_UNAVAILABLE",
            retry_after=VAULT_RETRY_AFTER,
        )
    if isinstance(exc, hvac_errors.InternalServerError | hvac_errors.BadGateway):
        return Unavailable("Vault failed", reason="VAULT_UNAVAILABLE", retry_after=VAULT_RETRY_AFTER)
    if isinstance(exc, hvac_errors.Forbidden):
        return Internal("this service's Vault policy does not allow the operation")
    return None


class Vault:
    """One logged-in hvac client per process, its token renewed in the background."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self._settings = settings
        # hvac blocks: its calls run on a pool of their own (the default executor has a handful
        # of threads on a small machine), over as many pooled connections as there are threads.
        self._pool = ThreadPoolExecutor(max_workers=VAULT_THREADS, thread_name_prefix="vault")
        session = requests.Session()
        # Vault is reached at DEVMESH_VAULT_ADDR and verified with DEVMESH_VAULT_CA_FILE, nothing
        # else: no proxy or ~/.netrc credentials from the environment (which requests would also
        # look up again on every call).
        session.trust_env = False
        session.verify = settings.vault_ca_file or True  # hvac takes it from the session
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=VAULT_THREADS)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.client = hvac.Client(url=settings.vault_addr, timeout=settings.vault_timeout, session=session)
        self._renewal: asyncio.Task[None] | None = None
        self.policies: list[str] = []

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking hvac call in a thread; Vault failures become typed errors."""
        try:
            call = functools.partial(fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is None:
                raise
            raise translated from exc

    def _read_secret_id(self) -> str:
        with open(self._settings.vault_secret_id_file, encoding="utf-8") as f:
            return f.read().strip()

    async def login(self) -> None:
        """AppRole login; schedules token renewal at two thirds of its TTL."""
        auth = await self.call(
            self.client.auth.approle.login,
            role_id=self._settings.vault_role_id,
            secret_id=self._read_secret_id(),
        )
        self.policies = list(auth["auth"]["policies"])
        ttl = int(auth["auth"]["lease_duration"])
        log.info("vault.logged_in", policies=self.policies, ttl_s=ttl)
        if self._renewal is None and ttl > 0:
            self._renewal = asyncio.create_task(self._keep_token(ttl), name="vault-token")

    async def _keep_token(self, ttl: int) -> None:
        """Renew the token at 2/3 of its life; log in again when it cannot be renewed."""
        while True:
            await asyncio.sleep(max(1.0, ttl * 2 / 3))
            try:
                renewed = await self.call(self.client.auth.token.renew_self)
                ttl = int(renewed["auth"]["lease_duration"])
            except Exception as exc:
                log.warning("vault.renew_failed", error=type(exc).__name__)
                try:
                    self._renewal = None
                    await self.login()
                    return
                except Exception as again:
                    log.warning("vault.login_failed", error=type(again).__name__)
                    ttl = 3

    async def probe(self) -> None:
        """Health probe: Vault answers, is unsealed, and our token is still valid."""
        await self.call(self.client.auth.token.lookup_self)

    async def close(self) -> None:
        await cancel_and_wait(self._renewal)
        self.client.adapter.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


# Where devmesh's keys live in Vault. The bootstrap (tools/stack/vault_bootstrap.py) creates
# them, and each service's own keys and policy from its spec.
KV_MOUNT = "devmesh-kv"
TRANSIT_MOUNT = "devmesh-transit"
PKI_ROOT_MOUNT = "devmesh-pki"
PKI_MOUNT = "devmesh-pki-int"
PKI_ROLE = "mesh-workload"
JWT_KEY = "devmesh-jwt"
API_KEY_PEPPER_PATH = "identity/api-key-pepper"  # KV v2: {"pepper": hex}; the HMAC key of API keys
# The runtime's own transit keys (name -> creation parameters): tokens are ES256 JWTs.
RUNTIME_TRANSIT_KEYS: dict[str, dict[str, object]] = {JWT_KEY: {"key_type": "ecdsa-p256"}}

# What every service may do, whichever it is: verify API keys (read the pepper) and tokens
# (read the JWT key's public keys). The bootstrap adds it to each service's own policy.
RUNTIME_POLICY = f"""
path "{KV_MOUNT}/data/{API_KEY_PEPPER_PATH}" {{ capabilities = ["read"] }}
path "{TRANSIT_MOUNT}/keys/{JWT_KEY}" {{ capabilities = ["read"] }}
"""

"""Session-wide fixtures: a real Valkey and a real OpenBao per test session, the factory of
servers with the full interceptor chain, and a namespace id per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from services import catalog
from services.config import app as config_app
from services.runtime import redis_client
from services.runtime.server import Runtime, Server
from services.runtime.settings import RuntimeSettings
from services.runtime.spec import install_roles
from services.runtime.vault import Vault
from tools.stack import vault_bootstrap
from tools.stack.openbao import OpenBao, start_openbao
from tools.stack.valkey import Valkey, start_valkey


@pytest.fixture(scope="session", autouse=True)
def mesh_roles() -> None:
    """The roles hold what the catalog's specs grant, as in every server of the mesh."""
    install_roles(catalog.every())


# Short intervals keep watch and health tests quick; production defaults are in the settings classes.
# The debugger's background executor would execute any replica's automatic remediations on the
# shared Valkey: off unless a test starts a debugger of its own for it (see
# tests/integration/debugger/conftest.py `executing_debugger`).
TEST_ENV = {"DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "0.3", "DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off"}


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    server = start_valkey(tmp_path_factory.mktemp("valkey"))
    yield server
    server.process.stop()


@dataclass(frozen=True)
class BootstrappedVault:
    """A real OpenBao, bootstrapped as `make run` does, and the services' AppRoles."""

    server: OpenBao
    approles: dict[str, vault_bootstrap.AppRole]

    def client(self) -> Any:
        """An hvac client with the root token (for tests that rotate keys)."""
        return self.server.client()

    def settings(self, service: str = "config") -> dict[str, object]:
        """Settings that make a test server log in as `service`, with auth on."""
        role = self.approles[service]
        return {"auth": "required", "vault_addr": self.server.addr, "vault_role_id": role.role_id,
                "vault_secret_id_file": str(role.secret_id_file)}  # fmt: skip


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootstrappedVault]:
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    approles = vault_bootstrap.bootstrap(
        server.client(), list(catalog.SERVICES), tmp_path_factory.mktemp("approles")
    )
    yield BootstrappedVault(server, approles)
    assert server.process is not None
    server.process.stop()


ServerFactory = Callable[..., Awaitable[tuple[Server, str]]]


@pytest.fixture(scope="session")
async def start_config_server() -> AsyncIterator[ServerFactory]:
    """Start config servers (replicas) on 127.0.0.1:0; all are drained at the end of the session."""
    started: list[Server] = []

    async def start(
        redis_url: str, env: dict[str, str] | None = None, specs: Any = None, **settings: object
    ) -> tuple[Server, str]:
        """A server of `specs` (config by default) on loopback plaintext; auth off unless
        `settings` turn it on (with Vault)."""
        defaults: dict[str, object] = {"grpc_addr": "127.0.0.1:0", "health_interval": 0.2, "insecure": True,
                                       "auth": "off"}  # fmt: skip
        runtime_settings = RuntimeSettings(redis_url=redis_url, **{**defaults, **settings})  # type: ignore[arg-type]
        client = redis_client.connect(redis_url, runtime_settings.redis_timeout)
        vault_client = Vault(runtime_settings) if runtime_settings.vault_addr else None
        runtime = Runtime(runtime_settings, client, {**TEST_ENV, **(env or {})}, vault_client)
        server = Server(runtime, specs or [config_app.SPEC], mesh=catalog.every())
        port = await server.start()
        started.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in started:
        await server.stop(0.5)
        await server.runtime.aclose()


@pytest.fixture
def ns() -> str:
    """A namespace id no other test uses, so tests share one Valkey without interfering."""
    return f"t-{uuid.uuid4().hex[:12]}"

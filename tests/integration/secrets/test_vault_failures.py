"""Vault hanging or sealed: calls fail with UNAVAILABLE and RetryInfo, health says NOT_SERVING,
and after a recovery nothing is left halfway."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2

from devmesh.secrets.v1 import secrets_pb2 as pb
from services.secrets import app as secrets_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import detail, error_info, health_becomes, refused
from tests.integration.secrets.conftest import FAST, Secrets, access, add, version
from tools.stack import vault_bootstrap
from tools.stack.openbao import OpenBao, start_openbao
from tools.stack.valkey import Valkey


@contextlib.asynccontextmanager
async def _on_own_vault(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory, **settings: Any
) -> AsyncIterator[tuple[Secrets, OpenBao, Any, str]]:
    """A secrets server on a Vault of its own (to freeze or seal it without harming the other
    tests), with one secret holding b"before": (the server, its Vault, admin metadata, the id)."""
    bao = start_openbao(tmp_path / "openbao")
    assert bao.process is not None
    try:
        approles = vault_bootstrap.bootstrap(bao.client(), ["secrets"], tmp_path / "approles")
        vault = BootstrappedVault(bao, approles)
        server, addr = await start_config_server(
            valkey.url, env=FAST, specs=[secrets_app.SPEC], **settings, **vault.settings("secrets")
        )
        async with aio.insecure_channel(addr) as channel:
            s = Secrets(server, addr, channel)
            admin = await s.key("admin")
            sid = f"v{uuid.uuid4().hex[:8]}"
            await s.stub.CreateSecret(
                pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=admin
            )
            await add(s, admin, sid, b"before")
            yield s, bao, admin, sid
    finally:
        bao.process.stop()


async def test_vault_unreachable_is_unavailable_then_recovers(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory
) -> None:
    async with _on_own_vault(tmp_path, valkey, start_config_server, vault_timeout=1.0) as (
        s,
        bao,
        admin,
        sid,
    ):
        assert bao.process is not None
        service = secrets_app.SPEC.proto_services[0]
        os.kill(bao.process.pid, signal.SIGSTOP)  # Vault hangs: every call times out
        try:
            error = await refused(access, s, admin, version(sid, "latest"))
            assert (
                error.code() == grpc.StatusCode.UNAVAILABLE
                and error_info(error).reason == "VAULT_UNAVAILABLE"
            )
            assert detail(error, error_details_pb2.RetryInfo)
            error = await refused(add, s, admin, sid, b"during")
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            os.kill(bao.process.pid, signal.SIGCONT)
        await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.SERVING)
        listed = await s.stub.ListSecretVersions(
            pb.ListSecretVersionsRequest(parent=f"secrets/{sid}"), metadata=admin
        )
        latest = await access(s, admin, version(sid, "latest"))
        # Nothing halfway: the write that failed either landed whole or not at all.
        assert latest.payload.data in (b"before", b"during") and len(listed.versions) in (1, 2)


async def test_a_sealed_vault_is_unavailable_and_not_serving(
    tmp_path: Any, valkey: Valkey, start_config_server: ServerFactory
) -> None:
    async with _on_own_vault(tmp_path, valkey, start_config_server) as (s, bao, admin, sid):
        bao.client().sys.seal()
        for call in (
            lambda: access(s, admin, version(sid, "latest")),
            lambda: add(s, admin, sid, b"during"),
            lambda: s.stub.GetSecret(pb.GetSecretRequest(name=f"secrets/{sid}"), metadata=admin),
        ):
            error = await refused(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert error_info(error).reason == "VAULT_UNAVAILABLE" and "sealed" in (error.details() or "")
            assert detail(error, error_details_pb2.RetryInfo)
        service = secrets_app.SPEC.proto_services[0]
        await health_becomes(s.channel, service, health_pb2.HealthCheckResponse.NOT_SERVING)

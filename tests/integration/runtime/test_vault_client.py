"""The services' Vault client against a real OpenBao serving TLS: it trusts the CA it is given
(DEVMESH_VAULT_CA_FILE) and nothing from the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.runtime.errors import Unavailable
from services.runtime.settings import RuntimeSettings
from services.runtime.vault import Vault
from tools.stack.openbao import openbao_binary
from tools.stack.processes import LOOPBACK, free_port, spawn, wait_until


@pytest.fixture
def tls_vault(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`bao server -dev -dev-tls` on loopback: its https address and the CA it generated."""
    port = free_port()
    argv = [openbao_binary(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={tmp_path}",
            f"-dev-listen-address={LOOPBACK}:{port}", "-dev-no-store-token"]  # fmt: skip
    token = os.urandom(16).hex()
    process = spawn(
        "openbao-tls", argv, tmp_path, {**os.environ, "BAO_DEV_ROOT_TOKEN_ID": token}, redact=[token]
    )
    addr, ca = f"https://{LOOPBACK}:{port}", tmp_path / "vault-ca.pem"
    try:
        wait_until(
            lambda: requests.get(f"{addr}/v1/sys/health", verify=ca, timeout=1).ok, 20, "openbao", process
        )
        yield addr, ca
    finally:
        process.stop()


async def _health(settings: RuntimeSettings) -> dict[str, object]:
    vault = Vault(settings)
    try:
        return await vault.call(vault.client.sys.read_health_status, method="GET")
    finally:
        await vault.close()


async def test_vault_over_tls_trusts_the_configured_ca_and_no_proxy(
    tls_vault: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    addr, ca = tls_vault
    # A proxy that does not exist: a client that followed the environment could not get through.
    monkeypatch.setenv("HTTPS_PROXY", f"http://{LOOPBACK}:{free_port()}")
    settings = RuntimeSettings(vault_addr=addr, vault_ca_file=str(ca), vault_timeout=2.0)
    assert (await _health(settings))["sealed"] is False

    # Without the CA, Vault's certificate is not trusted: UNAVAILABLE, not a crash.
    with pytest.raises(Unavailable):
        await _health(dataclasses.replace(settings, vault_ca_file=""))

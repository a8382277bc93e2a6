"""One `devmesh serve <services>` process, started and restarted with the same settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.stack.certs import CertPaths
from tools.stack.channels import health_serving
from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, free_port, spawn, wait_until


@dataclass(frozen=True)
class VaultLogin:
    """How a service reaches Vault: the address and its AppRole."""

    addr: str
    role_id: str
    secret_id_file: Path


@dataclass
class ServiceProcess:
    process: ManagedProcess
    addr: str
    services: list[str]
    env: dict[str, str] = field(repr=False)
    tls: CertPaths | None = None

    @property
    def metrics_addr(self) -> str:
        """host:port of its Prometheus /metrics; empty when it serves none."""
        return self.env.get("DEVMESH_METRICS_ADDR", "")

    def serving(self) -> bool:
        return health_serving(self.addr, tls=self.tls)


def start_service(
    services: list[str],
    redis_url: str,
    log_dir: Path,
    *,
    port: int = 0,
    extra_env: Mapping[str, str] | None = None,
    tls: CertPaths | None = None,
    client_tls: CertPaths | None = None,
    vault: VaultLogin | None = None,
) -> ServiceProcess:
    """`devmesh serve <services>` in its own process; returns once its health is SERVING.

    With `tls` the service serves mTLS with that certificate and `client_tls` (the operator's)
    is what this function checks health with; without, it serves plaintext on loopback.
    """
    port = port or free_port()
    addr = f"{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "DEVMESH_GRPC_ADDR": addr,
        "DEVMESH_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    if tls is not None:
        env |= {"DEVMESH_TLS_CERT_FILE": str(tls.cert), "DEVMESH_TLS_KEY_FILE": str(tls.key),
                "DEVMESH_TLS_CA_FILE": str(tls.ca)}  # fmt: skip
    else:
        env["DEVMESH_INSECURE"] = "1"
    if vault is not None:
        env |= {"DEVMESH_VAULT_ADDR": vault.addr, "DEVMESH_VAULT_ROLE_ID": vault.role_id,
                "DEVMESH_VAULT_SECRET_ID_FILE": str(vault.secret_id_file)}  # fmt: skip
    else:  # nothing to verify credentials with: loopback only, every caller trusted
        env["DEVMESH_AUTH"] = "off"
    env |= extra_env or {}
    return _launch(services, addr, env, client_tls if tls else None, log_dir)


def _launch(
    services: list[str], addr: str, env: dict[str, str], tls: CertPaths | None, log_dir: Path
) -> ServiceProcess:
    name = "-".join(services) + "-" + addr.rpartition(":")[2]
    process = spawn(name, [sys.executable, "-m", "services.cli", "serve", *services], log_dir, env)
    service = ServiceProcess(process, addr, services, env, tls)
    _wait_serving(service)
    return service


def _wait_serving(service: ServiceProcess) -> None:
    try:
        wait_until(service.serving, 30, f"devmesh serve {' '.join(service.services)}", service.process)
    except StackError:
        service.process.stop(2)
        raise


def restart_service(service: ServiceProcess) -> ServiceProcess:
    """Start a stopped or killed service again with the same address and settings."""
    if service.process.exit_code is None:
        service.process.stop()
    service.process.respawn()
    _wait_serving(service)
    return service

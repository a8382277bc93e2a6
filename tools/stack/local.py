"""The whole mesh on loopback: Valkey, OpenBao, certificates, one process per service, and
the Envoy edge, started in order and stopped in reverse."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devmesh.config.v1 import api_keys_pb2
from services.runtime.tls import spiffe_id
from tools import envoy_config
from tools.envoy_config import EdgeSettings, Upstream
from tools.stack import vault_bootstrap
from tools.stack.certs import DEFAULT_TTL, CertDir, CertPaths, Identity, Renewer
from tools.stack.channels import grpc_channel
from tools.stack.envoy import Envoy, start_envoy
from tools.stack.model_server import MODEL_NAME, ModelServer, start_model_server
from tools.stack.model_server import installed as model_installed
from tools.stack.openbao import OpenBao, start_persistent_openbao
from tools.stack.ports import PortPlan, check_listeners
from tools.stack.processes import LOOPBACK, ManagedProcess, spawn, stop_together
from tools.stack.service_process import ServiceProcess, VaultLogin, start_service
from tools.stack.valkey import Valkey, start_valkey
from tools.stack.worker_identity import WORKER, WORKER_KEY_FILE, keep_worker_key

SERVICE_NAMESPACE = envoy_config.SERVICE_NAMESPACE
OPERATOR = Identity("operator", spiffe_id("ops", "operator"), ("operator.devmesh.local",))
EDGE = Identity.workload(SERVICE_NAMESPACE, "edge")


@dataclass
class Stack:
    state_dir: Path
    valkey: Valkey | None = None
    ratelimit_valkey: Valkey | None = None
    external_redis_url: str = ""
    external_ratelimit_redis_url: str = ""
    vault: OpenBao | None = None
    renewer: Renewer | None = None
    certs: dict[str, CertDir] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    envoy: Envoy | None = None
    worker: ManagedProcess | None = None  # one `devmesh pipeline worker` when pipeline runs
    work_dir: Path | None = None  # its workspaces: reachable by the user its steps run as
    model_server: ModelServer | None = None
    admin_api_key: str = field(default="", repr=False)  # kept in the state dir; never printed or logged

    @property
    def redis_url(self) -> str:
        return self.external_redis_url or (self.valkey.url if self.valkey else "")

    @property
    def ratelimit_redis_url(self) -> str:
        if self.ratelimit_valkey is not None:
            return self.ratelimit_valkey.url
        return self.external_ratelimit_redis_url or self.redis_url

    @property
    def operator_tls(self) -> CertPaths:
        return self.certs[OPERATOR.name].current

    def describe(self) -> dict[str, Any]:
        tls = self.operator_tls
        processes = {
            **({"valkey": self.valkey.process} if self.valkey else {}),
            **({"valkey-ratelimit": self.ratelimit_valkey.process} if self.ratelimit_valkey else {}),
            **({"openbao": self.vault.process} if self.vault and self.vault.process else {}),
            **{name: sp.process for name, sp in self.services.items()},
            **({"envoy": self.envoy.process} if self.envoy else {}),
            **({"worker": self.worker} if self.worker else {}),
            **({"llama-server": self.model_server.process} if self.model_server else {}),
        }
        return {
            "edge": self.envoy.edge_addr if self.envoy else "",
            "envoy_admin": self.envoy.admin_url if self.envoy else "",
            "services": {name: sp.addr for name, sp in self.services.items()},
            "metrics": {name: sp.metrics_addr for name, sp in self.services.items() if sp.metrics_addr},
            "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
            "redis_url": self.redis_url,
            "ratelimit_redis_url": self.ratelimit_redis_url,
            "vault_addr": self.vault.addr if self.vault else "",
            "model_url": self.model_server.url if self.model_server else "",
            "admin_api_key": self.admin_api_key,
            "pids": {name: p.pid for name, p in processes.items()},
            "logs": str(self.state_dir / "logs"),
        }

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self.envoy is not None:
            self.envoy.process.stop()
        stop_together([sp.process for sp in self.services.values()])
        if self.model_server is not None:
            self.model_server.process.stop()
        if self.renewer is not None:
            self.renewer.stop()
        if self.vault is not None and self.vault.process is not None:
            self.vault.process.stop()
        if self.valkey is not None:
            self.valkey.process.stop()
        if self.ratelimit_valkey is not None:
            self.ratelimit_valkey.process.stop()


@contextlib.contextmanager
def local_stack(
    state_dir: Path,
    services: list[str],
    *,
    redis_url: str = "",
    ratelimit_redis_url: str = "",
    vault_addr: str = "",
    vault_token: str = "",
    ports: PortPlan | None = None,
    cert_ttl: int = DEFAULT_TTL,
    health_interval: float = 1.0,
    service_env: Mapping[str, str] | None = None,
    local_model: bool = False,
) -> Iterator[Stack]:
    """The whole mesh on loopback, stopped on exit: Valkey (and one without AOF for rate limits)
    and OpenBao keeping their data in `state_dir` (unless given), Vault bootstrapped,
    certificates issued and renewed, one mTLS process per service with its own metrics port,
    and the Envoy edge. Every address is checked free before anything starts.

    `service_env` applies to every service; a DEVMESH_METRICS_ADDR in it replaces the planned
    per-service ones (and is refused when it would give two services one port).

    `local_model`: when `make llm` installed the local model and the debugger runs, start
    llama.cpp's server and point the debugger's OpenAI-compatible explainer at it (unless
    DEVMESH_DEBUGGER_EXPLAINER chooses otherwise)."""
    from services import catalog

    specs = catalog.resolve(services)
    ports = ports or PortPlan.from_base(0, [s.name for s in specs])
    stack = Stack(state_dir, external_redis_url=redis_url, external_ratelimit_redis_url=ratelimit_redis_url)
    logs = state_dir / "logs"
    service_envs = {
        s.name: {"DEVMESH_METRICS_ADDR": f"{LOOPBACK}:{ports.metrics[s.name]}", **(service_env or {})}
        for s in specs
    }
    model_files = model_installed() if local_model else None
    explainer_chosen = "DEVMESH_DEBUGGER_EXPLAINER" in {**os.environ, **(service_env or {})}
    if "debugger" not in service_envs or explainer_chosen:
        model_files = None
    listeners = _listeners(ports, service_envs, redis_url=redis_url, vault_addr=vault_addr)
    if model_files is not None:
        listeners["llama-server"] = f"{LOOPBACK}:{ports.model_server}"
    check_listeners(listeners)
    try:
        if not redis_url:
            stack.valkey = start_valkey(state_dir / "valkey", ports.valkey, logs)
            # Rate-limit buckets change on every call and are worth no fsync: their own Valkey.
            stack.ratelimit_valkey = start_valkey(
                state_dir / "valkey-ratelimit", ports.ratelimit_valkey, logs, durable=False
            )
        if vault_addr:
            stack.vault = OpenBao(vault_addr, vault_token)
        else:
            stack.vault = start_persistent_openbao(
                state_dir / "openbao", ports.openbao, ports.openbao_cluster, logs
            )
        client = stack.vault.client()
        approles = vault_bootstrap.bootstrap(client, [s.name for s in specs], state_dir / "vault")
        stack.renewer = Renewer(client, vault_bootstrap.root_ca(client), cert_ttl)
        for identity in [
            OPERATOR,
            EDGE,
            WORKER,
            *(Identity.workload(SERVICE_NAMESPACE, s.name) for s in specs),
        ]:
            stack.certs[identity.name] = stack.renewer.add(identity, state_dir / "certs" / identity.name)
        stack.renewer.start()
        if model_files is not None:
            stack.model_server = start_model_server(model_files, ports.model_server, logs)
            service_envs["debugger"] |= {
                "DEVMESH_DEBUGGER_EXPLAINER": "openai",
                "DEVMESH_DEBUGGER_MODEL_URL": stack.model_server.url,
                "DEVMESH_DEBUGGER_MODEL_NAME": MODEL_NAME,
            }
        service_ports = ports.services
        shared_env = {"DEVMESH_RATE_LIMIT_REDIS_URL": stack.ratelimit_redis_url}
        for spec in specs:
            role = approles[spec.name]
            peers = ",".join(f"{p}={LOOPBACK}:{service_ports[p]}" for p in spec.peers if p in service_ports)
            stack.services[spec.name] = start_service(
                [spec.name],
                stack.redis_url,
                logs,
                port=service_ports[spec.name],
                tls=stack.certs[spec.name].current,
                client_tls=stack.operator_tls,
                vault=VaultLogin(stack.vault.addr, role.role_id, role.secret_id_file),
                extra_env={
                    **shared_env,
                    "DEVMESH_PEERS": peers,
                    "DEVMESH_DATA_DIR": str(state_dir / "data"),
                    **service_envs[spec.name],
                },
            )
        edge = EdgeSettings(
            LOOPBACK, ports.edge, ports.envoy_admin, stack.certs[EDGE.name].root, health_interval
        )
        upstreams = [
            Upstream(name, LOOPBACK, int(sp.addr.rpartition(":")[2])) for name, sp in stack.services.items()
        ]
        stack.envoy = start_envoy(edge, upstreams, state_dir / "envoy", logs)
        keys_host = next((s.name for s in specs if API_KEY_SERVICE in s.proto_services), None)
        if keys_host is not None:
            stack.admin_api_key = keep_admin_key(
                stack.services[keys_host].addr, stack.operator_tls, state_dir / ADMIN_KEY_FILE
            )
        if "pipeline" in stack.services:
            stack.worker = _start_worker(stack, logs, keys_host)
        yield stack
    finally:
        stack.stop()


def _start_worker(stack: Stack, logs: Path, keys_host: str | None) -> ManagedProcess:
    """The local worker, with its certificate and `worker` API key (when a service issues keys)
    to call the pipeline service. Its steps run as the user who started the stack: a local
    stack runs your own code with your own tools (a virtualenv under a private home would be
    out of `nobody`'s reach); a `devmesh worker` started as root elsewhere runs them as nobody.
    The workspace directory is outside the private state dir, so any run-as user reaches it."""
    stack.work_dir = Path(tempfile.mkdtemp(prefix="devmesh-work-"))
    stack.work_dir.chmod(0o711)
    env = {"PATH": os.environ.get("PATH", ""), "DEVMESH_REDIS_URL": stack.redis_url,
           "DEVMESH_WORKER_ID": "local-worker", "DEVMESH_WORKER_DIR": str(stack.work_dir),
           "DEVMESH_WORKER_RUN_AS": pwd.getpwuid(os.getuid()).pw_name}  # fmt: skip
    if keys_host is not None:
        key_file = keep_worker_key(
            stack.services[keys_host].addr, stack.operator_tls, stack.state_dir / WORKER_KEY_FILE
        )
        tls = stack.certs[WORKER.name].current
        env |= {"DEVMESH_WORKER_PIPELINE_ADDR": stack.services["pipeline"].addr,
                "DEVMESH_WORKER_API_KEY_FILE": str(key_file), "DEVMESH_WORKER_TLS_CERT_FILE": str(tls.cert),
                "DEVMESH_WORKER_TLS_KEY_FILE": str(tls.key), "DEVMESH_WORKER_TLS_CA_FILE": str(tls.ca)}  # fmt: skip
    return spawn("worker", [sys.executable, "-m", "services.pipeline.worker"], logs, env)


def _listeners(
    ports: PortPlan, service_envs: Mapping[str, Mapping[str, str]], *, redis_url: str, vault_addr: str
) -> dict[str, str]:
    """What the stack will listen on, by what listens there."""
    listeners: dict[str, int] = {}
    if not redis_url:
        listeners |= {"valkey": ports.valkey, "rate-limit valkey": ports.ratelimit_valkey}
    if not vault_addr:
        listeners |= {"openbao": ports.openbao, "openbao cluster": ports.openbao_cluster}
    for name, port in ports.services.items():
        listeners[name] = port
    found = {what: f"{LOOPBACK}:{port}" for what, port in listeners.items()}
    for name, env in service_envs.items():
        if addr := env.get("DEVMESH_METRICS_ADDR", ""):
            given = addr != f"{LOOPBACK}:{ports.metrics[name]}"
            found[f"{name} metrics" + (" (DEVMESH_METRICS_ADDR)" if given else "")] = addr
    return found | {"edge": f"{LOOPBACK}:{ports.edge}", "envoy admin": f"{LOOPBACK}:{ports.envoy_admin}"}


# The service that issues API keys (whichever spec serves ApiKeyService) makes the first one.
API_KEY_SERVICE = api_keys_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name
ADMIN_KEY_FILE = "admin-api-key"  # in the state dir, mode 0600: the key stack.json shows


def keep_admin_key(config_addr: str, operator: CertPaths, key_file: Path) -> str:
    """The admin API key kept in `key_file` while it still authenticates as an admin; else a
    new one, created by the local operator (whose mesh identity is an admin) and kept there.
    A restarted stack thus hands out the same key, instead of one more per start."""
    import grpc

    from devmesh.config.v1 import api_keys_pb2, api_keys_pb2_grpc

    with grpc_channel(config_addr, operator) as channel:
        stub = api_keys_pb2_grpc.ApiKeyServiceStub(channel)
        with contextlib.suppress(FileNotFoundError):
            kept = key_file.read_text().strip()
            try:
                stub.ListApiKeys(
                    api_keys_pb2.ListApiKeysRequest(page_size=1), metadata=(("x-api-key", kept),), timeout=10
                )
                return kept
            except grpc.RpcError as error:
                refused = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                if error.code() not in refused:
                    raise
        created = stub.CreateApiKey(
            api_keys_pb2.CreateApiKeyRequest(
                api_key=api_keys_pb2.ApiKey(
                    role="admin", display_name="make run: first admin key", owner="local-operator"
                )
            ),
            timeout=10,
        )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.key)
    return str(created.key)


def write_state(state_dir: Path, description: dict[str, Any]) -> Path:
    path = state_dir / "stack.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(description, f, indent=2)
    os.chmod(path, 0o600)
    return path

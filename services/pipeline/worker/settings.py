"""Settings of a worker (`DEVMESH_WORKER_*`), beside the runtime's (Redis)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import (
    parse_bool,
    parse_positive_float,
    parse_positive_int,
    parse_redis_url,
    setting,
)


def _labels(raw: str) -> tuple[str, ...]:
    return tuple(sorted({label.strip() for label in raw.split(",") if label.strip()}))


@dataclass(frozen=True)
class WorkerSettings:
    """A worker needs Redis (the queues and run state) and nothing else of the runtime's."""

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "Redis/Valkey URL holding the run queues.", parse=parse_redis_url
    )
    redis_timeout: float = setting(5.0, "Seconds a Redis call may take.", parse=parse_positive_float)
    redis_wait_aof: bool = setting(
        True, "Confirm each reported outcome reached the append-only file (WAITAOF).", parse=parse_bool
    )
    worker_id: str = setting("", "This worker's name; empty: host name and process id.")
    worker_labels: tuple[str, ...] = setting(
        (),
        "Labels beyond the ones found (os, arch, tools on PATH), comma-separated.",
        parse=_labels,
        shown="",
    )
    worker_dir: str = setting("", "Where job workspaces go; empty: the system's temporary directory.")
    worker_lease_seconds: float = setting(
        10.0,
        "The lease of a running job (the coordinator's DEVMESH_PIPELINE_LEASE_SECONDS).",
        parse=parse_positive_float,
    )
    worker_log_cap_bytes: int = setting(
        10 * 1024 * 1024,
        "Log bytes kept per attempt; past it a marker, then nothing.",
        parse=parse_positive_int,
    )
    worker_kill_grace_seconds: float = setting(
        5.0, "Between SIGTERM and SIGKILL of a step that is stopped.", parse=parse_positive_float
    )
    worker_shutdown_grace_seconds: float = setting(
        30.0,
        "On SIGTERM, how long the current job may still run before it is handed back.",
        parse=parse_positive_float,
    )
    worker_cpu_seconds: int = setting(3600, "RLIMIT_CPU of every step process.", parse=parse_positive_int)
    worker_memory_bytes: int = setting(
        4 * 1024**3, "RLIMIT_AS (address space) of every step process.", parse=parse_positive_int
    )
    worker_open_files: int = setting(1024, "RLIMIT_NOFILE of every step process.", parse=parse_positive_int)
    worker_processes: int = setting(
        256,
        "Processes a step may add to what the worker's user already runs (RLIMIT_NPROC counts the "
        "whole user's processes).",
        parse=parse_positive_int,
    )

"""Settings of a worker (`DEVMESH_WORKER_*`), beside the runtime's (Redis). The lease of a
running job and the artifact caps are not among them: the coordinators publish theirs
(`runs/worker_terms.py`), so that each has one setting."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import (
    is_loopback_addr,
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
    worker_pipeline_addr: str = setting(
        "",
        "host:port of the pipeline service (or the edge) the worker calls with its API key, for "
        "its jobs' secrets; empty: a job with a secret reference fails SETUP_FAILED.",
    )
    worker_api_key_file: str = setting(
        "", "File holding the worker's API key (role `worker`), sent to the pipeline service."
    )
    worker_tls_cert_file: str = setting(
        "", "PEM client certificate for the pipeline service's mTLS; empty: plaintext (loopback only)."
    )
    worker_tls_key_file: str = setting("", "PEM private key of DEVMESH_WORKER_TLS_CERT_FILE.")
    worker_tls_ca_file: str = setting("", "PEM bundle the pipeline service's certificate chains to.")
    worker_id: str = setting("", "This worker's name; empty: host name and process id.")
    worker_labels: tuple[str, ...] = setting(
        (),
        "Labels beyond the ones found (os, arch, tools on PATH), comma-separated.",
        parse=_labels,
        shown="",
    )
    worker_dir: str = setting("", "Where job workspaces go; empty: the system's temporary directory.")
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
    worker_run_as: str = setting(
        "",
        "The user (name or uid) whose uid and gid a worker running as root runs its steps with, so "
        "that RLIMIT_NPROC binds them; empty: `nobody` when the worker is root, else the worker's own.",
    )
    worker_processes: int = setting(
        256,
        "Processes a step may add to what the worker's user already runs (RLIMIT_NPROC counts the "
        "whole user's processes).",
        parse=parse_positive_int,
    )

    def problems(self) -> list[str]:
        """Rules across settings; each problem names the variables involved."""
        found = []
        tls = {"DEVMESH_WORKER_TLS_CERT_FILE": self.worker_tls_cert_file,
               "DEVMESH_WORKER_TLS_KEY_FILE": self.worker_tls_key_file,
               "DEVMESH_WORKER_TLS_CA_FILE": self.worker_tls_ca_file}  # fmt: skip
        if any(tls.values()) and not all(tls.values()):
            missing = ", ".join(name for name, value in tls.items() if not value)
            found.append(f"mTLS needs a certificate, its key and the CA; missing {missing}")
        # Without an API key file the worker is its certificate's mesh identity (make run's).
        if (
            self.worker_pipeline_addr
            and not any(tls.values())
            and not is_loopback_addr(self.worker_pipeline_addr)
        ):
            found.append(
                "DEVMESH_WORKER_PIPELINE_ADDR is not loopback: set DEVMESH_WORKER_TLS_* (plaintext "
                "would send the API key in the clear)"
            )
        return found

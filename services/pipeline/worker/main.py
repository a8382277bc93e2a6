"""Running a worker process: settings, Redis, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from services.pipeline.worker import pipeline_client, process
from services.pipeline.worker.agent import Worker
from services.pipeline.worker.settings import WorkerSettings
from services.runtime import redis_client
from services.runtime.logging import configure, get_logger
from services.runtime.settings import SettingsError, load

log = get_logger(__name__)


async def run_worker(environ: Mapping[str, str]) -> int:
    settings = load(WorkerSettings, environ)
    _check_worker_dir(settings)
    run_as = _run_as(settings)
    channel = pipeline_client.channel(settings)
    client = redis_client.connect(settings.redis_url, settings.redis_timeout)
    durable = redis_client.DurableWriter(client, settings.redis_wait_aof, settings.redis_timeout)
    worker = Worker(client, durable, settings, pipeline_client.runs(channel) if channel else None, run_as)
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        # Stop taking jobs; the current one has the grace period to finish, then goes back.
        worker.shutting_down.set()
        loop.call_later(settings.worker_shutdown_grace_seconds, worker.hand_back.set)

    loop.add_signal_handler(signal.SIGTERM, shut_down)
    loop.add_signal_handler(signal.SIGINT, shut_down)
    log.info("pipeline.worker.started", worker=worker.id, labels=sorted(worker.labels))
    if os.geteuid() == 0 and run_as is None:
        # RLIMIT_NPROC does not bind root: a fork bomb would stop only at its time limit.
        log.warning("pipeline.worker.runs_as_root", worker=worker.id)
    stopper = asyncio.create_task(worker.hand_back.wait())
    try:
        serving = asyncio.create_task(worker.serve())
        done, _ = await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if serving not in done:
            for attempt in worker.current:
                attempt.stop.set()
            await serving
        else:
            await serving
    finally:
        stopper.cancel()
        await client.aclose()
        if channel is not None:
            await channel.close()
    log.info("pipeline.worker.stopped", worker=worker.id, jobs=worker.jobs_done)
    return 0


def _check_worker_dir(settings: WorkerSettings) -> None:
    """SettingsError, once at start, when DEVMESH_WORKER_DIR cannot hold workspaces (not one
    failed job after another, each with a traceback)."""
    if not settings.worker_dir:
        return
    directory = Path(settings.worker_dir)
    if not directory.is_dir():
        problem = "does not exist" if not directory.exists() else "is not a directory"
        raise SettingsError(f"DEVMESH_WORKER_DIR: {settings.worker_dir} {problem}; create it or name another")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SettingsError(
            f"DEVMESH_WORKER_DIR: this worker may not create workspaces in {settings.worker_dir}"
        )


def _run_as(settings: WorkerSettings) -> process.RunAs | None:
    """Whom steps run as; SettingsError when that user cannot reach the workspaces."""
    try:
        user = process.run_as(settings.worker_run_as)
    except process.BadUser as exc:
        raise SettingsError(f"DEVMESH_WORKER_RUN_AS: {exc}") from None
    if user is not None:
        blocked = process.unreachable_by(settings.worker_dir or tempfile.gettempdir(), user)
        if blocked:
            raise SettingsError(
                f"steps run as {user.name} (DEVMESH_WORKER_RUN_AS), who cannot enter {blocked}: "
                "give DEVMESH_WORKER_DIR a directory it can reach"
            )
    return user


def main() -> int:
    configure(os.environ.get("DEVMESH_LOG_LEVEL", "info"))
    try:
        return asyncio.run(run_worker(os.environ))
    except SettingsError as exc:
        print(f"devmesh worker: {exc}", file=sys.stderr)
        return 2

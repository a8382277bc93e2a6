"""Running one step: a subprocess in its own process group, with resource limits, its output
read as it comes; stopped with SIGTERM to the whole group, then SIGKILL after a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    open_files: int
    processes: int  # absolute RLIMIT_NPROC (the user's count plus the step's allowance)


_COUNTED: list[float] = [0.0, 0.0]  # when, how many: counting reads all of /proc
COUNT_FOR_S = 2.0


def user_process_count() -> int:
    """Processes of this user (RLIMIT_NPROC counts them all, not just a step's), counted at
    most every COUNT_FOR_S."""
    now = time.monotonic()
    if now - _COUNTED[0] < COUNT_FOR_S:
        return int(_COUNTED[1])
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    _COUNTED[:] = [now, float(count)]
    return count


def limited(argv: list[str], limits: Limits) -> list[str]:
    """`argv` run under the limits and made to die with the worker (kill -9 included), through
    util-linux's setpriv and prlimit: they set it up and exec, so no Python runs in the child
    between fork and exec (a `preexec_fn` is unsafe once a process has threads)."""
    return [
        "setpriv", "--pdeathsig", "KILL", "--",
        "prlimit",
        f"--cpu={limits.cpu_seconds}",
        f"--as={limits.memory_bytes}",
        f"--nofile={limits.open_files}",
        f"--nproc={limits.processes}",
        "--", *argv,
    ]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    exit_code: int  # negative: killed by that signal
    timed_out: bool = False
    stopped: bool = False  # stopped on request (cancel, lost lease, shutdown)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run(
    argv: list[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    limits: Limits,
    timeout_s: float,
    grace_s: float,
    stop: asyncio.Event,
    output: Callable[[bytes], Awaitable[None]],
) -> Outcome:
    """Run `argv` to its end, its time limit, or until `stop` is set; `output` gets its
    stdout and stderr (merged) in chunks."""
    process = await asyncio.create_subprocess_exec(
        *limited(argv, limits),
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: a stop reaches every process it started
    )
    pgid = process.pid
    assert process.stdout is not None
    stdout = process.stdout

    async def pump() -> None:
        while chunk := await stdout.read(READ_CHUNK):
            await output(chunk)

    reader = asyncio.create_task(pump())
    waiter = asyncio.create_task(process.wait())
    stopper = asyncio.create_task(stop.wait())
    timed_out = stopped = False
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            timed_out = stopper not in done
            stopped = not timed_out
            _signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), grace_s)
            except TimeoutError:
                _signal_group(pgid, signal.SIGKILL)
        code = await waiter
    finally:
        stopper.cancel()
        _signal_group(pgid, signal.SIGKILL)  # what it left behind in its group goes with it
        if not waiter.done():
            await waiter
    try:
        await asyncio.wait_for(reader, grace_s + 5)
    except TimeoutError:
        reader.cancel()  # an escaped descendant holds the pipe open
    return Outcome(exit_code=code, timed_out=timed_out, stopped=stopped)

"""Running one step: a subprocess in its own process group, with resource limits, its output
read as it comes; stopped with SIGTERM to the whole group, then SIGKILL after a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import stat
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


@dataclass(frozen=True)
class RunAs:
    """The user a root worker's steps run as: RLIMIT_NPROC does not bind root."""

    name: str
    uid: int
    gid: int


ROOT_DEFAULT = "nobody"


class BadUser(ValueError):
    """DEVMESH_WORKER_RUN_AS names no usable user."""


def run_as(setting: str) -> RunAs | None:
    """Whom steps run as: the user `setting` names (a name or a uid), `nobody` when it is empty
    and the worker is root; None: the worker's own user (a worker that is not root cannot
    change it; `root` keeps a root worker's, knowingly)."""
    wanted = setting or (ROOT_DEFAULT if os.geteuid() == 0 else "")
    if not wanted:
        return None
    try:
        entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
    except (KeyError, OverflowError):
        raise BadUser(f"no user {wanted!r} on this machine") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise BadUser(f"a worker that is not root cannot run steps as {wanted!r}")
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def unreachable_by(path: str, user: RunAs) -> str:
    """The first directory on the way to `path` (itself included) that `user` cannot search
    ("" when there is none): its steps' workspaces would be out of its reach."""
    current = os.path.abspath(path)
    found = ""
    while True:
        info = os.stat(current)
        if info.st_uid == user.uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == user.gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            found = current
        parent = os.path.dirname(current)
        if parent == current:
            return found
        current = parent


def hand_over(path: str, user: RunAs | None) -> None:
    """Give `path` and everything in it to `user` (a workspace, a checkout made by the worker)."""
    if user is None:
        return
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


_COUNTED: dict[int, tuple[float, int]] = {}  # uid -> (when, how many): counting reads all of /proc
COUNT_FOR_S = 2.0


def user_process_count(uid: int | None = None) -> int:
    """Processes of user `uid` (default: this process's), which RLIMIT_NPROC counts them all,
    not just a step's; counted at most every COUNT_FOR_S."""
    uid = os.getuid() if uid is None else uid
    now = time.monotonic()
    when, count = _COUNTED.get(uid, (0.0, 0))
    if now - when < COUNT_FOR_S:
        return count
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += 1
    _COUNTED[uid] = (now, count)
    return count


def limited(argv: list[str], limits: Limits, user: RunAs | None = None) -> list[str]:
    """`argv` run under the limits, as `user` when given, and made to die with the worker
    (kill -9 included), through util-linux's setpriv and prlimit: they set it up and exec, so
    no Python runs in the child between fork and exec (a `preexec_fn` is unsafe once a process
    has threads). setpriv drops to `user` first, so prlimit's RLIMIT_NPROC counts that user's
    processes (root's are never limited)."""
    become = [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"] if user else []
    return [
        "setpriv", *become, "--pdeathsig", "KILL", "--",
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
    user: RunAs | None = None,
) -> Outcome:
    """Run `argv` (as `user` when given) to its end, its time limit, or until `stop` is set;
    `output` gets its stdout and stderr (merged) in chunks."""
    process = await asyncio.create_subprocess_exec(
        *limited(argv, limits, user),
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

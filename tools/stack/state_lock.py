"""One running stack per state directory.

`run` holds an exclusive flock on `<state>/run.lock` for as long as it runs, and writes into
that file who holds it (PID, edge address). A second `run` on the same directory fails to
take the lock, says who holds it and stops, before it has touched anything there. The kernel
drops the lock when its holder exits, however it exits, so a crashed stack never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from tools.stack.processes import StackError

LOCK_FILE = "run.lock"


class StackAlreadyRunning(StackError):
    """Another process holds the state directory's lock."""

    def __init__(self, state_dir: Path, holder: Mapping[str, object]) -> None:
        pid = holder.get("pid", "unknown")
        edge = holder.get("edge", "unknown")
        super().__init__(
            f"a stack is already running on {state_dir} (PID {pid}, edge {edge}); "
            f"stop it first (Ctrl-C in its terminal, or kill {pid}), or run this one with its own "
            "DEVMESH_STATE_DIR and DEVMESH_BASE_PORT"
        )
        self.holder = dict(holder)


@contextlib.contextmanager
def hold(state_dir: Path, holder: Mapping[str, object]) -> Iterator[None]:
    """Hold `state_dir`'s lock until the block ends, with `holder` (JSON) written in the lock
    file; StackAlreadyRunning, naming the holder, if another process has it."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackAlreadyRunning(state_dir, _read_holder(fd)) from None
        # Written over the old content, then cut to length: a reader sees one whole holder.
        content = json.dumps(dict(holder)).encode()
        os.pwrite(fd, content, 0)
        os.ftruncate(fd, len(content))
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_holder(fd: int) -> dict[str, object]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder is writing it right now
        return {}
    return holder if isinstance(holder, dict) else {}

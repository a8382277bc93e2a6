"""Keeps a running stack's processes up, as compose's restart policies do.

A child that exits is started again, with the same command, environment and address, after
a delay that doubles with each quick failure in a row (one that came before the child had
served for `settle_time`, or while it was still starting). A child that has served a while
and then fails starts the series over. After `max_quick_failures` quick failures in a row
the supervisor gives up, and the stack stops: a child that cannot stay up needs a person.
Each exit, restart and recovery is one short line for the terminal.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tools.stack.processes import ManagedProcess, StackError


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    """Seconds before restarting a child that failed after serving a while."""
    max_delay: float = 30.0
    """The delay doubles with each quick failure in a row, up to this."""
    settle_time: float = 5.0
    """A child that served this long before it failed failed after a while, not quickly."""
    max_quick_failures: int = 5
    """Quick failures in a row after which the supervisor gives up."""
    ready_timeout: float = 30.0
    """A restarted child not ready by then is stopped, and that counts as a quick failure."""


@dataclass(frozen=True)
class Supervised:
    """A child to keep up: its process and how to tell that it serves again."""

    name: str
    process: ManagedProcess
    ready: Callable[[], bool]


class GaveUp(StackError):
    """A child failed quickly too many times in a row."""


@dataclass
class _Watch:
    child: Supervised
    serving_since: float
    quick_failures: int = 0
    restarts: int = 0
    restart_at: float | None = None  # waiting for its backoff to pass
    ready_by: float | None = None  # restarted, not ready yet


class Supervisor:
    """Watches `children`; `tick` does one round of checks, `run` ticks until told to stop."""

    def __init__(
        self,
        children: Sequence[Supervised],
        policy: RestartPolicy = RestartPolicy(),
        say: Callable[[str], None] = print,
        on_restarted: Callable[[], object] = lambda: None,
    ) -> None:
        now = time.monotonic()
        self._watches = [_Watch(child, now) for child in children]
        self._policy = policy
        self._say = say
        self._on_restarted = on_restarted

    def run(self, stopping: Callable[[], bool], interval: float = 0.2) -> None:
        """Tick until `stopping()`; GaveUp when a child cannot stay up."""
        while not stopping():
            self.tick()
            time.sleep(interval)

    def tick(self) -> None:
        for watch in self._watches:
            self._check(watch, time.monotonic())

    def _check(self, watch: _Watch, now: float) -> None:
        child, process = watch.child, watch.child.process
        if watch.restart_at is not None:
            if now >= watch.restart_at:
                watch.restart_at, watch.ready_by = None, now + self._policy.ready_timeout
                watch.restarts += 1
                process.respawn()
            return
        if watch.ready_by is not None:
            if process.exit_code is not None:
                self._failed(watch, now, quick=True, why=f"{_exit(process.exit_code)} while starting")
            elif _ready(child):
                watch.ready_by, watch.serving_since = None, now
                self._say(f"devmesh: {child.name} is back (PID {process.pid})")
                self._on_restarted()
            elif now >= watch.ready_by:
                process.stop(2)
                self._failed(watch, now, quick=True, why=f"not ready after {self._policy.ready_timeout:g}s")
            return
        if process.exit_code is not None:
            quick = now - watch.serving_since < self._policy.settle_time
            self._failed(watch, now, quick=quick, why=_exit(process.exit_code))

    def _failed(self, watch: _Watch, now: float, *, quick: bool, why: str) -> None:
        policy, name, log = self._policy, watch.child.name, watch.child.process.log_path
        watch.quick_failures = watch.quick_failures + 1 if quick else 0
        if watch.quick_failures >= policy.max_quick_failures:
            raise GaveUp(
                f"{name} {why}: {watch.quick_failures} quick failures in a row (each within "
                f"{policy.settle_time:g}s of starting); stopping the stack (log: {log})"
            )
        delay = min(policy.first_delay * 2**watch.quick_failures, policy.max_delay)
        watch.restart_at = now + delay
        self._say(f"devmesh: {name} {why}; restart {watch.restarts + 1} in {delay:g}s (log: {log})")


def _ready(child: Supervised) -> bool:
    with contextlib.suppress(Exception):  # not answering yet is not ready, whatever the error
        return bool(child.ready())
    return False


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"

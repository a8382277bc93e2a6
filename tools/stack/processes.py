"""Child processes started on loopback, each with its own log, stopped by PID.

Every process started here is stopped here: SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


# Ports handed out for a process to bind later come from below the kernel's ephemeral range:
# a port of that range, free when it was chosen, could be taken before the process binds it
# (seconds later, for the edge of a mesh that starts every service first) by any outgoing
# connection or bind to port 0 on the machine; it was, once, in a full test run. Below the
# range only another chooser like this one can take it, and each process starts at a place of
# its own (from its PID) and moves on from there. The lowest is above `make run`'s own ports
# (DEVMESH_BASE_PORT, 20000 by default, plus offsets up to 901).
LOWEST_CHOSEN_PORT = 21000
_next_port: list[int] = []  # this process's next candidate


@functools.cache
def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (read once: it is the machine's)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on right now, that no connection can take meanwhile."""
    span = _ephemeral_low() - LOWEST_CHOSEN_PORT
    if span < 1000:  # an unusual ephemeral range: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            return int(s.getsockname()[1])
    if not _next_port:
        _next_port.append(LOWEST_CHOSEN_PORT + (os.getpid() * 7919) % span)
    for _ in range(span):
        port = _next_port[0]
        _next_port[0] = LOWEST_CHOSEN_PORT + (port + 1 - LOWEST_CHOSEN_PORT) % span
        if _bindable(port):
            return port
    raise StackError(f"no free loopback port between {LOWEST_CHOSEN_PORT} and the ephemeral range")


def wait_until(
    check: Callable[[], object], timeout: float, what: str, process: ManagedProcess | None = None
) -> None:
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
    """A child process, its log, and how it was started (so that it can be started again)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    redact: tuple[str, ...] = field(default=(), repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exit_code(self) -> int | None:
        """None while it runs; then its exit code (negative: the signal that ended it)."""
        return self.popen.poll()

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        self.terminate()
        return self._reap(grace)

    def _reap(self, grace: float) -> int | None:
        """Wait up to `grace` seconds for the process to exit, then SIGKILL; close its log."""
        if self.popen.poll() is None:
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def terminate(self) -> None:
        """SIGTERM, without waiting: `stop_together` sends it to several before waiting for any."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL at once: a crash, for tests that prove nothing acknowledged is lost."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._log.close()

    def respawn(self) -> None:
        """Start the same command again, with the same environment and log, in place of this
        exited process: whoever holds this object then sees the new PID."""
        if self.popen.poll() is None:
            raise StackError(f"{self.name} is still running (PID {self.pid})")
        self._log.close()
        self.popen, self._log = _start(self.name, self.argv, self.log_path, self.env, self.redact)


def stop_together(processes: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """Stop `processes` at once: SIGTERM to each, then one `grace` for all of them (each is
    SIGKILLed past it). Services drain in parallel, so stopping five takes as long as the
    slowest one, not the sum of their drains."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process._reap(max(0.0, deadline - time.monotonic()))


def _dying_with_parent(argv: list[str]) -> list[str]:
    """`argv`, made to get SIGTERM when the process that started it dies (`setpriv --pdeathsig`,
    from util-linux, which every Debian has).

    A test run killed mid-way (a timeout, Ctrl-C twice) never reaches its teardown; without
    this its Valkey and service processes would outlive it. setpriv sets it and execs the
    command, so no Python runs in the child between fork and exec: with grpc's threads in the
    parent, a `preexec_fn` there sometimes crashed the child (a Valkey died with SIGSEGV).
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", *argv] if setpriv else argv


def _copy_redacted(source: IO[bytes], sink: IO[bytes], secrets: Sequence[bytes]) -> None:
    """Copy a child's output to its log with every secret and credential banner line blanked."""
    for line in iter(source.readline, b""):
        for secret in secrets:
            line = line.replace(secret, b"[redacted]")
        line = _CREDENTIAL_LINE.sub(rb"\1 [redacted]", line)
        with contextlib.suppress(ValueError):  # the log closed: the process is being stopped
            sink.write(line)
            sink.flush()


_CREDENTIAL_LINE = re.compile(rb"((?:Root Token|Unseal Key|token|secret_id)\s*[:=])\s*\S+", re.IGNORECASE)


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    redact: Sequence[str] = (),
) -> ManagedProcess:
    """Start `argv` with its output in `log_dir/<name>.log`; `redact` strings never reach the log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    environment, hidden = dict(env or os.environ), tuple(s for s in redact if s)
    popen, log = _start(name, argv, log_path, environment, hidden)
    return ManagedProcess(name, popen, log_path, log, list(argv), environment, hidden)


def _start(
    name: str, argv: list[str], log_path: Path, env: dict[str, str], redact: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, "ab")  # closed by ManagedProcess.stop
    popen = subprocess.Popen(
        _dying_with_parent(argv),
        stdout=subprocess.PIPE if redact else log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # Ctrl-C in the terminal reaches us, not the children directly
    )
    if redact:
        assert popen.stdout is not None
        threading.Thread(
            target=_copy_redacted,
            args=(popen.stdout, log, [s.encode() for s in redact]),
            name=f"log-{name}",
            daemon=True,
        ).start()
    return popen, log

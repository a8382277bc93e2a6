"""The supervisor that keeps `make run`'s processes up, with real (tiny) child processes."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.stack.processes import ManagedProcess, spawn
from tools.stack.supervisor import GaveUp, RestartPolicy, Supervised, Supervisor

FAST = RestartPolicy(
    first_delay=0.01, max_delay=1.0, settle_time=30.0, max_quick_failures=5, ready_timeout=10.0
)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """Processes a test spawns; each is stopped at the end, whatever the test left running."""
    processes: list[ManagedProcess] = []
    yield processes
    for process in processes:
        process.stop(2)


def python(code: str, name: str, log_dir: Path, started: list[ManagedProcess]) -> ManagedProcess:
    process = spawn(name, [sys.executable, "-c", code], log_dir)
    started.append(process)
    return process


def test_a_killed_child_is_started_again_and_each_step_is_announced(
    tmp_path: Path, started: list[ManagedProcess]
) -> None:
    child = python("import time; time.sleep(60)", "sleeper", tmp_path, started)
    said: list[str] = []
    restarted: list[int] = []
    settled = RestartPolicy(first_delay=0.01, settle_time=0.0)  # it has served long enough already
    supervisor = Supervisor(
        [Supervised("sleeper", child, lambda: True)],
        settled,
        said.append,
        lambda: restarted.append(child.pid),
    )
    killed = child.pid
    os.kill(killed, signal.SIGKILL)
    supervisor.run(lambda: bool(restarted), interval=0.01)
    assert child.exit_code is None and child.pid != killed and restarted == [child.pid]
    assert said[0].startswith("devmesh: sleeper was killed by SIGKILL; restart 1 in 0.01s (log: ")
    assert said[1] == f"devmesh: sleeper is back (PID {child.pid})"


def test_a_child_that_keeps_failing_at_start_is_given_up_after_five_quick_failures(
    tmp_path: Path, started: list[ManagedProcess]
) -> None:
    child = python("raise SystemExit(3)", "broken", tmp_path, started)
    said: list[str] = []
    supervisor = Supervisor([Supervised("broken", child, lambda: False)], FAST, said.append)
    with pytest.raises(GaveUp) as gave_up:
        supervisor.run(lambda: False, interval=0.01)
    delays = [line.split(" in ", 1)[1].split("s ", 1)[0] for line in said]
    assert delays == ["0.02", "0.04", "0.08", "0.16"]  # doubling with each quick failure
    assert said[1].startswith("devmesh: broken exited with code 3 while starting; restart 2 in")
    assert "5 quick failures in a row" in str(gave_up.value) and "stopping the stack" in str(gave_up.value)


def test_a_restarted_child_that_never_gets_ready_is_stopped_and_counts_as_a_quick_failure(
    tmp_path: Path, started: list[ManagedProcess]
) -> None:
    child = python("import time; time.sleep(60)", "stuck", tmp_path, started)
    said: list[str] = []
    never_ready = RestartPolicy(first_delay=0.01, settle_time=0.0, max_quick_failures=2, ready_timeout=0.05)
    supervisor = Supervisor([Supervised("stuck", child, lambda: False)], never_ready, said.append)
    os.kill(child.pid, signal.SIGKILL)
    with pytest.raises(GaveUp) as gave_up:
        supervisor.run(lambda: False, interval=0.01)
    assert said[1].startswith("devmesh: stuck not ready after 0.05s; restart 2 in 0.02s")
    assert child.exit_code is not None  # stopped, not left running
    assert "stuck not ready" in str(gave_up.value)

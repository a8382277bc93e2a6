"""Processes the stack starts die with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.stack.processes import spawn, stop_together, wait_until

SPAWNER = """
import sys, time
from pathlib import Path
from tools.stack.processes import spawn
child = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], Path(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(60)
"""


def _exec_done(pid: int) -> bool:
    """Whether `pid` is past setpriv: setpriv sets the parent-death signal and then execs the
    command, so a parent killed before that would leave the child with no signal to get."""
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except FileNotFoundError:
        return False
    return bool(program) and not program.endswith(b"setpriv")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; nobody may be there to reap it


def test_a_child_gets_sigterm_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(tmp_path)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while not _exec_done(child) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the child's exec, not waiting for readiness
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the child's state, not waiting for readiness
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


# Exits 0 on SIGTERM once the other process has had its SIGTERM too (it leaves a file then).
WAITS_FOR_ITS_PEER = """
import signal, sys, time
from pathlib import Path
mine, peers = Path(sys.argv[1]), Path(sys.argv[2])
def stop(*_):
    mine.touch()
    while not peers.exists():
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_processes_stopped_together_all_get_sigterm_before_any_is_waited_for(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    pair = [
        spawn(name, [sys.executable, "-c", WAITS_FOR_ITS_PEER, str(mine), str(peer)], tmp_path)
        for name, mine, peer in (("a", a, b), ("b", b, a))
    ]
    for process in pair:
        wait_until(lambda p=process: "ready" in p.log_path.read_text(), 10, f"{process.name} ready", process)
    stop_together(pair, grace=5)
    assert [p.exit_code for p in pair] == [0, 0]  # one at a time, the first would wait for good

"""The per-RPC access line is buffered; nothing is lost and nothing is reordered.

Each case runs in a process of its own: configuring logging is global, and structlog's
loggers keep the stream they first wrote to.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(script: str, log: Path, *, to_stderr: bool = False) -> list[list[str]]:
    """Run `script` with logging configured as a service configures it, into `log` (opened
    by the script, or with `to_stderr` as the process's stderr); return what it printed (one
    JSON list per line)."""
    prelude = f"""
        import asyncio, json, sys
        from services.runtime import logging as runtime_logging
        LOG = {str(log)!r}
        stream = None if {to_stderr} else open(LOG, "ab")
        runtime_logging.configure("info", stream=stream)
        def events():
            return [json.loads(line)["event"] for line in open(LOG) if line.startswith("{{")]
    """
    with log.open("ab") if to_stderr else contextlib.nullcontext(subprocess.PIPE) as stderr:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(script)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr or log.read_text()
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_access_lines_wait_for_the_window_but_never_for_another_line(tmp_path: Path) -> None:
    seen = run(
        """
        async def main():
            runtime_logging.line("devmesh.rpc", "first", {})
            print(json.dumps(events()))  # still in this loop turn
            await asyncio.sleep(0)
            print(json.dumps(events()))  # after a quiet spell: written at the end of the turn
            runtime_logging.line("devmesh.rpc", "second", {})
            await asyncio.sleep(0)
            print(json.dumps(events()))  # within the window of the last write: it waits
            runtime_logging.get_logger("test").warning("other")
            print(json.dumps(events()))  # any other line brings it along, in order
            runtime_logging.line("devmesh.rpc", "third", {})
            await asyncio.sleep(runtime_logging.LINE_WINDOW * 2)  # real time on purpose: the window passes
            print(json.dumps(events()))
            runtime_logging.line("devmesh.rpc", "last", {})

        asyncio.run(main())
        """,
        tmp_path / "service.log",
    )
    assert seen == [
        [],
        ["first"],
        ["first"],
        ["first", "second", "other"],
        ["first", "second", "other", "third"],
    ]
    written = (tmp_path / "service.log").read_text().splitlines()
    assert json.loads(written[-1])["event"] == "last"  # still buffered at exit: exit wrote it


def test_stderr_gets_a_buffer_and_keeps_its_order(tmp_path: Path) -> None:
    """A service logs to stderr, which CPython opens unbuffered: each access line would be a
    system call of its own."""
    log = tmp_path / "service.log"
    seen = run(
        """
        import logging
        async def main():
            runtime_logging.line("devmesh.rpc", "first", {})
            await asyncio.sleep(0)
            runtime_logging.line("devmesh.rpc", "second", {})  # waits for the window
            print(json.dumps(events()))
            print("a bare print to stderr", file=sys.stderr)
            print(json.dumps(events()))
            runtime_logging.line("devmesh.rpc", "third", {})
            logging.getLogger("some.library").warning("from the standard library")
            runtime_logging.line("devmesh.rpc", "last", {})  # written at exit

        asyncio.run(main())
        """,
        log,
        to_stderr=True,
    )
    assert seen == [["first"], ["first", "second"]]
    written = log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in written[:2]] == ["first", "second"]
    assert written[2] == "a bare print to stderr"
    assert json.loads(written[3])["event"] == "third"
    assert written[4] == "from the standard library"
    assert json.loads(written[5])["event"] == "last"


def test_a_standard_library_line_also_brings_the_access_lines_before_it(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    run(
        """
        import logging
        text = open(stream.name, "a", buffering=1)  # text, line-buffered: as stderr is
        runtime_logging.configure("info", stream=text)

        async def main():
            runtime_logging.line("devmesh.rpc", "first", {})
            await asyncio.sleep(0)
            runtime_logging.line("devmesh.rpc", "second", {})  # waits for the window
            logging.getLogger("some.library").warning("from the standard library")

        asyncio.run(main())
        """,
        log,
    )
    written = log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in written[:2]] == ["first", "second"]
    assert written[2] == "from the standard library"


def test_without_an_event_loop_the_line_is_written_at_once(tmp_path: Path) -> None:
    seen = run(
        """
        runtime_logging.line("devmesh.rpc", "outside", {"n": 1})
        print(json.dumps(events()))
        """,
        tmp_path / "service.log",
    )
    assert seen == [["outside"]]

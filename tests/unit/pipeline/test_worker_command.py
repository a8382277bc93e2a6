"""`devmesh worker` is `devmesh pipeline worker` at the top, and says what it reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_devmesh_worker_help_works_and_lists_the_workers_settings_but_no_lease_of_its_own() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: devmesh worker")
    assert "DEVMESH_WORKER_PIPELINE_ADDR" in result.stdout
    assert "LEASE" not in result.stdout  # the coordinators' lease, not a second setting

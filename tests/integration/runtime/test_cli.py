"""`devmesh serve`: help lists every setting; bad settings and unknown services exit with a message."""

from __future__ import annotations

import subprocess
import sys


def devmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )  # fmt: skip


def test_help_documents_every_setting() -> None:
    result = devmesh("serve", "--help")
    assert result.returncode == 0
    for name in ("DEVMESH_REDIS_URL", "DEVMESH_GRPC_ADDR", "DEVMESH_CONFIG_MAX_DOCUMENT_BYTES"):
        assert name in result.stdout


def test_bad_settings_exit_with_a_readable_message() -> None:
    result = devmesh(
        "serve", "config", env={"DEVMESH_REDIS_URL": "http://nope", "DEVMESH_CONFIG_WATCH_QUEUE_SIZE": "0"}
    )
    assert result.returncode == 2
    assert "DEVMESH_REDIS_URL" in result.stderr
    assert "DEVMESH_CONFIG_WATCH_QUEUE_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_services_are_named() -> None:
    result = devmesh("serve", "nosuch")
    assert result.returncode == 2
    assert "nosuch" in result.stderr

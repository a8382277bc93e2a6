"""Whom a worker's steps run as, and whether that user can reach the workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.pipeline.worker import process
from services.pipeline.worker.main import _check_worker_dir
from services.pipeline.worker.settings import WorkerSettings
from services.runtime.settings import SettingsError, load

NOBODY = process.RunAs("nobody", 65534, 65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="the default depends on the worker being root")
def test_a_root_worker_runs_its_steps_as_nobody_unless_told_root() -> None:
    assert process.run_as("") == NOBODY
    assert process.run_as("root") is None


def test_a_user_that_does_not_exist_is_refused() -> None:
    with pytest.raises(process.BadUser):
        process.run_as("no-such-user-here")


def test_steps_run_as_another_user_drop_to_it_before_the_limits() -> None:
    argv = process.limited(["true"], process.Limits(1, 2, 3, 4), NOBODY)
    assert argv[:4] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert argv.index("prlimit") > argv.index("--clear-groups")


def test_a_private_directory_on_the_way_is_found(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "work").mkdir(parents=True)
    private.chmod(0o700)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o711)
    assert process.unreachable_by(str(private / "work"), NOBODY) != ""
    assert process.unreachable_by(str(open_dir), NOBODY) in ("", *(str(p) for p in open_dir.parents))


def test_a_pipeline_address_off_loopback_needs_tls() -> None:
    # Without an API key file the worker is its certificate's mesh identity: the key is optional,
    # TLS off loopback is not (a key would otherwise travel in the clear).
    with pytest.raises(SettingsError) as found:
        load(WorkerSettings, {"DEVMESH_WORKER_PIPELINE_ADDR": "10.0.0.1:443"})
    assert "DEVMESH_WORKER_TLS_" in str(found.value)
    assert load(WorkerSettings, {"DEVMESH_WORKER_PIPELINE_ADDR": "127.0.0.1:443"}).worker_pipeline_addr


def test_a_worker_dir_that_cannot_hold_workspaces_is_refused_at_start(tmp_path: Path) -> None:
    def check(directory: Path) -> str:
        with pytest.raises(SettingsError) as refused:
            _check_worker_dir(load(WorkerSettings, {"DEVMESH_WORKER_DIR": str(directory)}))
        return str(refused.value)

    assert "does not exist" in check(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    assert "is not a directory" in check(tmp_path / "file")
    _check_worker_dir(load(WorkerSettings, {"DEVMESH_WORKER_DIR": str(tmp_path)}))  # fine

"""What an artifact step packs: only what is inside the job's workspace, capped."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from services.pipeline.runs.plan import JobPlan
from services.pipeline.worker import artifacts


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "out" / "sub").mkdir(parents=True)
    (root / "src" / "out" / "a.txt").write_text("a\n")
    (root / "src" / "out" / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "src" / "out" / "skip.tmp").write_text("no\n")
    return root


def names(found: list[tuple[Path, str]]) -> list[str]:
    return [name for _, name in found]


def test_a_directory_is_collected_with_everything_under_it_minus_the_excluded(workspace: Path) -> None:
    found = artifacts.collect(workspace, workspace / "src", ["out", "!out/*.tmp"])
    assert names(found) == ["out", "out/sub", "out/a.txt", "out/sub/b.bin"]


@pytest.mark.parametrize("pattern", ["../secret", "/etc/passwd", "out/../../x", "~/.ssh/id_rsa"])
def test_a_pattern_that_climbs_out_of_the_workspace_is_refused(workspace: Path, pattern: str) -> None:
    with pytest.raises(artifacts.ArtifactStepFailed, match="escapes the workspace"):
        artifacts.collect(workspace, workspace / "src", [pattern])


def test_a_symlink_out_of_the_workspace_is_refused_whether_matched_or_found_under_a_directory(
    workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("private\n")
    os.symlink(outside, workspace / "src" / "out" / "sub" / "leak")
    for pattern in ("out", "out/sub/leak"):
        with pytest.raises(artifacts.ArtifactStepFailed, match="outside the workspace"):
            artifacts.collect(workspace, workspace / "src", [pattern])


def test_a_symlink_inside_the_workspace_is_packed_as_a_link(workspace: Path, tmp_path: Path) -> None:
    os.symlink("a.txt", workspace / "src" / "out" / "alias")
    target = tmp_path / "a.tar.gz"
    artifacts.pack(
        artifacts.collect(workspace, workspace / "src", ["out/a*"]), target, 1 << 20, "the archive"
    )
    with tarfile.open(target) as archive:
        alias = archive.getmember("out/alias")
        assert alias.issym() and alias.linkname == "a.txt"
        assert archive.extractfile("out/a.txt").read() == b"a\n"  # type: ignore[union-attr]


def test_packing_stops_at_the_cap_and_says_so(workspace: Path, tmp_path: Path) -> None:
    (workspace / "src" / "big.bin").write_bytes(os.urandom(200_000))
    files = artifacts.collect(workspace, workspace / "src", ["big.bin"])
    with pytest.raises(artifacts.ArchiveTooLarge, match="over the cap of 100000 bytes"):
        artifacts.pack(files, tmp_path / "big.tar.gz", 100_000, "the archive")


def test_an_artifact_id_is_its_name_made_an_id_and_a_matrix_index_keeps_combinations_apart() -> None:
    plain = JobPlan(key="build", job_id="build", index=0)
    combo = JobPlan(key="test.2", job_id="test", index=1, matrix={"py": "3.12"})
    assert artifacts.artifact_id("Test Reports", plain, False) == "test-reports"
    assert artifacts.artifact_id("reports", combo, False) == "reports.2"
    assert artifacts.artifact_id("reports-3.12", combo, True) == "reports-3.12"
    assert artifacts.artifact_id("..", plain, False) == "artifact"

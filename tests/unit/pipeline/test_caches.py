"""Cache steps' pure parts: which entry a restore takes, which entries an eviction drops, and
which archive members an unpack refuses before it writes anything."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from services.pipeline.runs.caches import CacheRecord, best_match, to_evict
from services.pipeline.worker.caches import ArchiveRefused, unpack, workspace_patterns


def entry(key: str, ct: int = 1, lu: int = 1, size: int = 10) -> CacheRecord:
    return CacheRecord(key=key, size=size, sha256="-", blob=f"p/{key}", ct=ct, lu=lu)


def test_an_exact_key_wins_over_a_newer_prefix_match() -> None:
    records = {r.key: r for r in (entry("deps-a", ct=1), entry("deps-b", ct=9))}
    assert best_match(records, "deps-a", ["deps-"]) == records["deps-a"]


def test_a_prefix_match_takes_the_newest_entry_of_the_first_prefix_that_matches() -> None:
    records = {r.key: r for r in (entry("deps-a", ct=1), entry("deps-b", ct=9), entry("other-c", ct=20))}
    assert best_match(records, "deps-z", ["nothing-", "deps-", "other-"]) == records["deps-b"]
    assert best_match(records, "deps-z", ["nothing-"]) is None


def test_eviction_drops_unused_entries_then_the_least_recently_used_past_the_cap() -> None:
    records = [entry("stale", lu=1), entry("old", lu=5), entry("mid", lu=6), entry("new", lu=7)]
    assert [r.key for r in to_evict(records, total_cap=20, oldest_use_us=2)] == ["stale", "old"]


def archive_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        for member, data in members:
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return payload.getvalue()


def link(name: str, target: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.SYMTYPE
    member.linkname = target
    return member


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (tarfile.TarInfo("../x"), "escapes the workspace"),
        (tarfile.TarInfo("a/../../x"), "escapes the workspace"),
        (tarfile.TarInfo("/etc/x"), "escapes the workspace"),
        (link("out", "/etc"), "links outside the workspace"),
        (link("a/out", "../../x"), "links outside the workspace"),
    ],
)
def test_a_member_that_lands_outside_the_workspace_refuses_the_whole_archive(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    archive = tmp_path / "cache.tar.gz"
    archive.write_bytes(
        archive_with((tarfile.TarInfo("fine.txt"), b"ok"), (member, b"" if member.issym() else b"x"))
    )
    with pytest.raises(ArchiveRefused, match=why):
        unpack(archive, workspace)
    assert not list(workspace.iterdir())  # checked before anything was written
    assert not (tmp_path / "x").exists()


def test_a_link_that_stays_inside_is_restored(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    archive = tmp_path / "cache.tar.gz"
    archive.write_bytes(
        archive_with((tarfile.TarInfo("d/real.txt"), b"ok"), (link("d/alias", "real.txt"), b""))
    )
    assert unpack(archive, workspace) == 2
    assert (workspace / "d" / "alias").read_text() == "ok"


def test_cache_paths_are_relative_to_the_checkout_and_home_is_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    assert workspace_patterns(["deps", "~/.cache/pip"], tmp_path, tmp_path / "src") == [
        "src/deps",
        ".cache/pip",
    ]
    assert workspace_patterns(["deps"], tmp_path, tmp_path) == ["deps"]

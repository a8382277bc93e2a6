"""Hostile repositories: bad paths, oversized snapshots, invalid UTF-8, malformed manifests,
archives with links, `..`, tar bombs and too many entries. Each is a clear INVALID_ARGUMENT
naming what is wrong; nothing is ever written to disk."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from services.pipeline import archive, generator
from services.pipeline.snapshot import Limits, Snapshot
from services.runtime.errors import InvalidArgument
from tests.unit.pipeline import repos

LIMITS = archive.ArchiveLimits(
    max_bytes=1 << 20, max_unpacked_bytes=4 << 20, max_entries=100, max_file_content=64 << 10
)


def refused(entries: list[tuple[str, int, bytes, bool]], limits: Limits = repos.LIMITS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        Snapshot.build(entries, limits, "snapshot.files")
    return caught.value


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "C:/x", "a\x00b", ""]
)
def test_a_path_that_could_leave_the_repository_is_refused_and_named(path: str) -> None:
    error = refused([("ok.txt", 1, b"", False), (path, 1, b"", False)])
    assert error.field_violations[0].field == "snapshot.files[1].path"


def test_a_duplicate_path_is_refused() -> None:
    assert (
        refused([("a", 1, b"", False), ("a", 1, b"", False)]).field_violations[0].reason == "DUPLICATE_PATH"
    )


def test_too_many_files_are_refused() -> None:
    error = refused([(f"f{i}", 1, b"", False) for i in range(11)], Limits(10, 100, 1000))
    assert error.reason == "SNAPSHOT_TOO_LARGE"


def test_content_over_the_caps_is_refused() -> None:
    assert refused([("package.json", 200, b"x" * 200, False)], Limits(10, 100, 1000)).field_violations[
        0
    ].reason == ("CONTENT_TOO_LARGE")
    too_much = [(f"p{i}/package.json", 90, b"{}" + b" " * 88, False) for i in range(12)]
    assert refused(too_much, Limits(100, 100, 1000)).reason == "SNAPSHOT_TOO_LARGE"


def test_invalid_utf8_in_a_manifest_is_refused_and_named() -> None:
    error = refused([("pyproject.toml", 4, b"ab\xff\xfe", False)])
    assert error.field_violations[0].reason == "NOT_UTF8"
    assert "pyproject.toml" in error.field_violations[0].description


def test_a_truncated_lockfile_cut_through_a_character_is_accepted() -> None:
    snapshot = Snapshot.build([("uv.lock", 5000, "é".encode()[:1], True)], repos.LIMITS, "f")
    assert snapshot.text("uv.lock") == ""


@pytest.mark.parametrize(
    ("path", "content", "kind"),
    [
        ("package.json", '{"name": ', "JSON"),
        ("pyproject.toml", "[project\nname = 1", "TOML"),
        ("pnpm-workspace.yaml", "packages: [a, b", "YAML"),
    ],
)
def test_a_malformed_manifest_is_invalid_argument_naming_the_file_and_line(
    path: str, content: str, kind: str
) -> None:
    files = {path: content, "package.json": '{"name": "x"}'} if path != "package.json" else {path: content}
    with pytest.raises(InvalidArgument) as caught:
        generator.generate(repos.snapshot(files), generator.Options())
    violation = caught.value.field_violations[0]
    assert violation.field == path and violation.reason == "MALFORMED_MANIFEST"
    assert kind in violation.description


def test_a_malformed_ci_file_is_only_a_warning() -> None:
    generated = generator.generate(
        repos.snapshot({**repos.GO, ".github/workflows/ci.yml": "jobs: [unclosed"}), generator.Options()
    )
    assert "CI_FILE_UNREADABLE" in {w.code for w in generated.report.warnings}


def test_unknown_gates_and_bad_branches_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        generator.Options.checked(["secret-scan", "nope"], "")
    with pytest.raises(InvalidArgument):
        generator.Options.checked([], "main branch")


# -- archives ----------------------------------------------------------------------------------


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def regular(name: str, data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def refused_archive(data: bytes, limits: archive.ArchiveLimits = LIMITS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        archive.entries(data, limits)
    return caught.value


def test_an_archive_of_a_repository_reads_its_manifests_under_its_top_directory() -> None:
    data = tar_gz(
        regular("repo-abc/go.mod", b"module x\n\ngo 1.22\n"), regular("repo-abc/main.go", b"package main\n")
    )
    found = {path: content for path, _, content, _ in archive.entries(data, LIMITS)}
    assert found == {"go.mod": b"module x\n\ngo 1.22\n", "main.go": b""}


def test_a_symlink_in_an_archive_is_refused() -> None:
    link = tarfile.TarInfo("repo/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    assert refused_archive(tar_gz(regular("repo/go.mod", b"module x"), (link, b""))).reason == "ARCHIVE_LINK"


def test_a_hard_link_in_an_archive_is_refused() -> None:
    link = tarfile.TarInfo("repo/evil")
    link.type, link.linkname = tarfile.LNKTYPE, "repo/go.mod"
    assert refused_archive(tar_gz(regular("repo/go.mod", b"x"), (link, b""))).reason == "ARCHIVE_LINK"


def test_a_device_in_an_archive_is_refused() -> None:
    device = tarfile.TarInfo("repo/null")
    device.type = tarfile.CHRTYPE
    assert refused_archive(tar_gz((device, b""))).reason == "ARCHIVE_SPECIAL_FILE"


@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d/x", "repo/../../x"])
def test_an_entry_that_leaves_the_archive_is_refused(name: str) -> None:
    assert refused_archive(tar_gz(regular(name, b"x"))).reason == "ARCHIVE_BAD_PATH"


def test_a_tar_bomb_stops_at_the_unpacked_cap_without_reading_it_all() -> None:
    # 64 MiB of zeros compress to about 64 KiB.
    data = tar_gz(regular("repo/big.bin", bytes(64 << 20)))
    assert len(data) < 1 << 20
    assert refused_archive(data).reason == "ARCHIVE_TOO_LARGE"


def test_too_many_entries_are_refused() -> None:
    data = tar_gz(*(regular(f"repo/f{i}", b"") for i in range(101)))
    assert refused_archive(data).reason == "ARCHIVE_TOO_MANY_ENTRIES"


def test_bytes_that_are_not_a_tar_gz_are_refused() -> None:
    assert refused_archive(b"PK\x03\x04 a zip, not a tarball").reason == "ARCHIVE_UNREADABLE"
    assert refused_archive(gzip.compress(b"not a tar at all" * 100)).reason == "ARCHIVE_UNREADABLE"


def test_an_oversized_archive_is_refused_before_unpacking() -> None:
    assert refused_archive(b"x" * (LIMITS.max_bytes + 1)).reason == "ARCHIVE_TOO_LARGE"


def test_reading_an_archive_writes_nothing_to_disk(tmp_path: Path) -> None:
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        archive.entries(tar_gz(regular("repo/go.mod", b"module x"), regular("repo/sub/a.txt", b"a")), LIMITS)
    finally:
        os.chdir(cwd)
    assert set(os.listdir(tmp_path)) == before

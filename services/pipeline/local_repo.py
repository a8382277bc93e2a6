"""A repository on disk as a snapshot (for `devmesh pipeline generate`): every file git would
keep (tracked and untracked, minus what .gitignore ignores), its size, and the contents of the
files detection reads, within the server's caps. Symbolic links are not followed; binary and
oversized files are listed without their contents."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from services.pipeline.snapshot import HEAD_BYTES, HEAD_ONLY, MANIFEST_DIRS, reads

DEFAULT_MAX_FILES = 20000
DEFAULT_MAX_FILE_CONTENT = 256 * 1024
DEFAULT_MAX_CONTENT = 3 * 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    path: str
    size: int
    content: bytes
    truncated: bool


@dataclass
class LocalRepository:
    files: list[LocalFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was left out, for the person running it


def _git_files(root: Path) -> list[str] | None:
    """What git lists (tracked, and untracked but not ignored); None outside a work tree."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({p for p in listed.decode("utf-8", "surrogateescape").split("\0") if p})


def _walked_files(root: Path) -> Iterator[str]:
    """Every regular file under `root` that its .gitignore files do not ignore."""
    specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        relative = "" if relative == "." else relative
        ignore = Path(directory) / ".gitignore"
        if ignore.is_file():
            lines = ignore.read_text(errors="replace").splitlines()
            specs.append((relative, pathspec.GitIgnoreSpec.from_lines(lines)))

        def ignored(path: str, is_dir: bool) -> bool:
            for base, spec in specs:
                if base and not path.startswith(f"{base}/"):
                    continue
                inner = path[len(base) + 1 :] if base else path
                if spec.match_file(inner + ("/" if is_dir else "")):
                    return True
            return False

        dirnames[:] = sorted(
            d for d in dirnames if d != ".git" and not ignored(f"{relative}/{d}".lstrip("/"), True)
        )
        for name in sorted(filenames):
            path = f"{relative}/{name}".lstrip("/")
            if not ignored(path, False):
                yield path


def read(
    root: Path,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_file_content: int = DEFAULT_MAX_FILE_CONTENT,
    max_content: int = DEFAULT_MAX_CONTENT,
) -> LocalRepository:
    """The repository at `root` as a snapshot's files."""
    listed = _git_files(root)
    paths = listed if listed is not None else list(_walked_files(root))
    repository = LocalRepository()
    if len(paths) > max_files:
        repository.notes.append(f"{len(paths)} files; only the first {max_files} are sent")
        # Keep the manifests, whatever their place in the order.
        paths = sorted(paths, key=lambda p: (not reads(p), p))[:max_files]
    total = 0
    for path in paths:
        full = root / path
        try:
            if full.is_symlink() or not full.is_file():
                continue
            size = full.stat().st_size
        except OSError:
            continue
        content, truncated = b"", False
        name = path.rsplit("/", 1)[-1]
        wanted = reads(path) and not (
            name.endswith((".yaml", ".yml")) and size > 64 * 1024 and _in_manifest_dir(path)
        )
        if wanted:
            limit = HEAD_BYTES if name in HEAD_ONLY else max_file_content
            if size <= limit or name in HEAD_ONLY:
                try:
                    with full.open("rb") as handle:
                        content = handle.read(limit)
                except OSError:
                    content = b""
                truncated = size > len(content)
                if b"\0" in content[:8192]:
                    content, truncated = b"", False  # binary: listed, not read
            else:
                repository.notes.append(f"{path}: {size} bytes, over {limit}; listed without its contents")
        if total + len(content) > max_content:
            repository.notes.append(
                f"{path}: the contents' cap ({max_content} bytes) is reached; listed without its contents"
            )
            content, truncated = b"", False
        total += len(content)
        repository.files.append(LocalFile(path, size, content, truncated))
    return repository


def _in_manifest_dir(path: str) -> bool:
    return any(part in MANIFEST_DIRS for part in path.split("/")[:-1])

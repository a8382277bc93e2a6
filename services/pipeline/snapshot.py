"""A repository as detection sees it: every file's path and size, and the text of the files
detection reads. Built from a caller's snapshot or an archive, checked on the way in: a path
that is absolute, has `..`, `.` or empty segments, NUL or a backslash, a duplicate, too many
files, content over the caps or not UTF-8 is INVALID_ARGUMENT naming the file.

Nothing here touches a disk: contents live in memory, bounded by the settings.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from services.runtime.errors import FieldViolation, InvalidArgument

MAX_PATH = 1024

# The files whose contents detection reads, by name (anywhere in the tree)...
READ_NAMES = frozenset(
    {
        # Python
        "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "tox.ini", "noxfile.py", "pytest.ini",
        ".python-version", "mypy.ini", ".flake8", "ruff.toml", ".ruff.toml", "manage.py", "uv.lock",
        "poetry.lock", "pdm.lock", "Pipfile.lock",
        # Node
        "package.json", ".nvmrc", ".node-version", "pnpm-workspace.yaml", "yarn.lock", "tsconfig.json",
        ".yarnrc.yml",
        # Go, Rust
        "go.mod", "go.work", "Cargo.toml", "rust-toolchain.toml", "rust-toolchain",
        ".golangci.yml", ".golangci.yaml", ".golangci.toml", ".golangci.json",
        # JVM
        "pom.xml", "build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts",
        "gradle-wrapper.properties", ".java-version", ".sdkmanrc",
        # .NET, Ruby, PHP
        "global.json", "Directory.Build.props", "Gemfile", ".ruby-version", ".rspec", ".rubocop.yml",
        "composer.json", "phpunit.xml", "phpunit.xml.dist", "phpstan.neon", "phpstan.neon.dist",
        # Containers, Helm, Kubernetes
        "Dockerfile", "Chart.yaml", "kustomization.yaml", "kustomization.yml",
        # Other CI
        ".gitlab-ci.yml", "Makefile", ".tool-versions",
    }
)  # fmt: skip
READ_SUFFIXES = (".csproj", ".fsproj", ".vbproj", ".sln", ".Dockerfile")
# ...and by place: CI workflows, Kubernetes manifests in the usual folders.
_CI_WORKFLOW = re.compile(r"\.github/workflows/[^/]+\.ya?ml")
_REQUIREMENTS = re.compile(r"(.*/)?requirements([\w.-]*\.txt|/[\w.-]+\.txt)")
MANIFEST_DIRS = frozenset({"k8s", "kubernetes", "manifests", "deploy", "kustomize"})
# Lockfiles detection only needs the beginning of (yarn's version header): a client may send
# just their first bytes, marked truncated.
HEAD_ONLY = frozenset({"uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock", "yarn.lock"})
HEAD_BYTES = 1024


def reads(path: str) -> bool:
    """Whether detection reads this file's contents (a client sends those, and only those)."""
    name = path.rsplit("/", 1)[-1]
    if name in READ_NAMES or name.endswith(READ_SUFFIXES) or name.startswith("Dockerfile."):
        return True
    if _CI_WORKFLOW.fullmatch(path) or _REQUIREMENTS.fullmatch(path):
        return True
    parts = path.split("/")
    return (
        name.endswith((".yaml", ".yml")) and any(p in MANIFEST_DIRS for p in parts[:-1]) and len(parts) <= 6
    )


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe repository-relative path (None when it is)."""
    if not path:
        return "is empty"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if "\x00" in path or "\\" in path:
        return "contains NUL or a backslash"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is absolute; paths are relative to the repository root"
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' segment"
    return None


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_file_content: int
    max_content: int


@dataclass(frozen=True)
class File:
    path: str
    size: int
    text: str | None  # None: not sent (detection knows it exists and its size)
    truncated: bool = False


class Snapshot:
    """The repository's files by path, with the text of those detection reads."""

    def __init__(self, files: dict[str, File]) -> None:
        self.files = files
        self._dirs: dict[str, list[str]] = {}
        for path in files:
            self._dirs.setdefault(posixpath.dirname(path), []).append(path)

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int, bytes, bool]], limits: Limits, field: str) -> Snapshot:
        """From (path, size, content, truncated) entries; INVALID_ARGUMENT naming `field[i]`."""
        problems: list[FieldViolation] = []
        files: dict[str, File] = {}
        total = 0
        for i, (path, size, content, truncated) in enumerate(entries):
            if i >= limits.max_files:
                raise InvalidArgument.for_field(
                    field,
                    f"more than {limits.max_files} files; send the repository's files only",
                    reason="SNAPSHOT_TOO_LARGE",
                )
            where = f"{field}[{i}]"
            problem = path_problem(path)
            if problem:
                problems.append(FieldViolation(f"{where}.path", f"{path[:120]!r} {problem}", "BAD_PATH"))
                continue
            if path in files:
                problems.append(
                    FieldViolation(f"{where}.path", f"{path[:120]!r} is listed twice", "DUPLICATE_PATH")
                )
                continue
            if size < 0:
                problems.append(FieldViolation(f"{where}.size", "must not be negative", "OUT_OF_RANGE"))
                continue
            text = None
            if content:
                if len(content) > limits.max_file_content:
                    problems.append(
                        FieldViolation(
                            f"{where}.content",
                            f"{path[:120]!r}: {len(content)} bytes; at most {limits.max_file_content} per file",
                            "CONTENT_TOO_LARGE",
                        )
                    )
                    continue
                total += len(content)
                if total > limits.max_content:
                    raise InvalidArgument.for_field(
                        field,
                        f"the contents add up to more than {limits.max_content} bytes; send only the files "
                        "detection reads (manifests, lockfile heads, tool and CI configs)",
                        reason="SNAPSHOT_TOO_LARGE",
                    )
                try:
                    text = content.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if not (truncated and exc.start >= len(content) - 4):  # a cut through a character
                        problems.append(
                            FieldViolation(
                                f"{where}.content",
                                f"{path[:120]!r} is not UTF-8 (byte {exc.start})",
                                "NOT_UTF8",
                            )
                        )
                        continue
                    text = content[: exc.start].decode("utf-8")
            files[path] = File(path, max(size, len(content)), text, truncated)
            if len(problems) >= 50:
                break
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidArgument(
                f"{problems[0].field}: {problems[0].description}{more}", problems, reason="BAD_SNAPSHOT"
            )
        return cls(files)

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, path: str) -> bool:
        return path in self.files

    def text(self, path: str) -> str | None:
        found = self.files.get(path)
        return found.text if found is not None else None

    def in_dir(self, directory: str) -> list[str]:
        """The files directly in `directory` (`` for the root)."""
        return self._dirs.get(directory, [])

    def named(self, *names: str) -> Iterator[str]:
        """Every path whose file name is one of `names`, in path order."""
        wanted = set(names)
        for path in sorted(self.files):
            if path.rsplit("/", 1)[-1] in wanted:
                yield path

    def under(self, directory: str) -> Iterator[str]:
        prefix = f"{directory}/" if directory else ""
        return (p for p in self.files if p.startswith(prefix))


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def display(directory: str) -> str:
    return directory or "."

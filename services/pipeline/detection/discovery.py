"""Broad detection: which directories hold which ecosystem's projects. Workspace members
(npm/pnpm/yarn workspaces, Cargo workspaces, Maven modules, Gradle builds, uv workspaces)
belong to their root; vendored code, fixtures and examples are nobody's project."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from services.pipeline.detection import dotnet, go, jvm, manifests, node, php, python, ruby, rust
from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report
from services.pipeline.detection.stack import Stack
from services.pipeline.snapshot import Snapshot, join

SKIP_DIRS = frozenset(
    {"node_modules", "vendor", "third_party", "third-party", "testdata", "fixtures", "__fixtures__", "test-fixtures",
     "examples", "example", "samples", "sample", ".git", "dist", "target", ".venv", "venv", "site-packages",
     "bower_components", ".tox", ".nox", "__pycache__", ".yarn"}
)  # fmt: skip
MAX_PROJECTS = 48
Detector = Callable[[Snapshot, str, CiEvidence, Report], Stack | None]


@dataclass(frozen=True)
class Ecosystem:
    name: str
    markers: tuple[str, ...]
    detect: Detector


ECOSYSTEMS = (
    Ecosystem("python", python.MARKERS, python.detect),
    Ecosystem("node", node.MARKERS, node.detect),
    Ecosystem("go", go.MARKERS, go.detect),
    Ecosystem("rust", rust.MARKERS, rust.detect),
    Ecosystem("java", jvm.MARKERS, jvm.detect),
    Ecosystem("ruby", ruby.MARKERS, ruby.detect),
    Ecosystem("php", php.MARKERS, php.detect),
)
LOOKED_FOR = (
    "pyproject.toml, setup.py, requirements.txt, Pipfile (Python); package.json (Node); go.mod (Go); "
    "Cargo.toml (Rust); pom.xml, build.gradle(.kts) (Java/Kotlin); *.sln, *.csproj (.NET); Gemfile (Ruby); "
    "composer.json (PHP); Dockerfile; Chart.yaml (Helm); Kubernetes manifests in k8s/, deploy/, manifests/"
)


def skipped(path: str) -> bool:
    """Whether a file lies in vendored code, fixtures or examples."""
    return any(part in SKIP_DIRS for part in path.split("/")[:-1])


def _under(directory: str, root: str) -> bool:
    return (root == "" and directory != "") or directory.startswith(f"{root}/")


def _node_members(snapshot: Snapshot, dirs: list[str]) -> set[str]:
    """Directories that are workspace members of another. Roots are read shallowest first, and a
    member's own package.json is never parsed here (fixtures inside workspaces may be broken
    on purpose)."""
    members: set[str] = set()
    for root in sorted(dirs, key=lambda d: (d.count("/") if d else -1, d)):
        if root in members:
            continue
        path = join(root, "package.json")
        text = snapshot.text(path)
        if not text or ('"workspaces"' not in text and join(root, "pnpm-workspace.yaml") not in snapshot):
            continue
        globs = node.workspace_globs(snapshot, root, manifests.json_object(path, text))
        for directory in dirs:
            relative = directory[len(root) + 1 :] if root else directory
            if _under(directory, root) and any(_matches(relative, g) for g in globs):
                members.add(directory)
    return members


def _matches(relative: str, glob: str) -> bool:
    glob = glob.strip().rstrip("/").removeprefix("./")
    if glob.startswith("!"):
        return False
    if glob.endswith("/**"):
        return relative == glob[:-3] or relative.startswith(glob[:-3] + "/")
    return fnmatch.fnmatch(relative, glob)


def _members_under_roots(dirs: list[str], roots: list[str]) -> set[str]:
    return {d for d in dirs for r in roots if _under(d, r)}


def _roots(snapshot: Snapshot, dirs: list[str], name: str, pattern: str) -> list[str]:
    return [d for d in dirs if re.search(pattern, snapshot.text(join(d, name)) or "", re.MULTILINE)]


def projects(snapshot: Snapshot, report: Report) -> list[tuple[Ecosystem, str]]:
    """(ecosystem, directory) of every project, roots before members, in directory order."""
    found: list[tuple[Ecosystem, str]] = []
    skipped_manifests = 0
    for ecosystem in ECOSYSTEMS:
        paths = list(snapshot.named(*ecosystem.markers))
        skipped_manifests += sum(1 for p in paths if skipped(p))
        dirs = sorted({posixpath.dirname(p) for p in paths if not skipped(p)})
        members: set[str] = set()
        if ecosystem.name == "node":
            members = _node_members(snapshot, dirs)
        elif ecosystem.name == "rust":
            members = _members_under_roots(dirs, _roots(snapshot, dirs, "Cargo.toml", r"^\[workspace\]"))
        elif ecosystem.name == "php":
            # Packages split out of a PHP monorepo (a composer.json under the root's) are the root's.
            members = _members_under_roots(dirs, [d for d in dirs if d == ""])
        elif ecosystem.name == "java":
            roots = _roots(snapshot, dirs, "pom.xml", r"<modules>")
            roots += [
                d
                for d in dirs
                if any(join(d, n) in snapshot for n in ("settings.gradle", "settings.gradle.kts"))
            ]
            members = _members_under_roots(dirs, roots)
        elif ecosystem.name == "python":
            roots = _roots(snapshot, dirs, "pyproject.toml", r"^\[tool\.uv\.workspace\]")
            members = _members_under_roots(dirs, roots)
            projects_so_far = [
                d for d in dirs if join(d, "pyproject.toml") in snapshot or join(d, "setup.py") in snapshot
            ]
            # A nested directory with only a requirements file (docs/, a script's) is not a project
            # of its own inside another Python project.
            members |= {
                d for d in dirs if d not in projects_so_far and any(_under(d, r) for r in projects_so_far)
            }
        for directory in dirs:
            if directory not in members:
                found.append((ecosystem, directory))
    solutions = sorted(
        {posixpath.dirname(p) for p in snapshot.files if p.endswith(dotnet.SUFFIXES) and not skipped(p)}
    )
    dotnet_roots = [d for d in solutions if any(p.endswith(dotnet.SOLUTIONS) for p in snapshot.in_dir(d))]
    for directory in solutions:
        if directory in dotnet_roots or not any(_under(directory, r) for r in dotnet_roots):
            found.append((Ecosystem("dotnet", (), dotnet.detect), directory))
    if skipped_manifests:
        report.decide(
            "skipped manifests",
            "",
            f"{skipped_manifests} manifest(s) in vendored, fixture or example directories",
            Evidence("", 0, ", ".join(sorted(SKIP_DIRS))),
        )
    if len(found) > MAX_PROJECTS:
        report.warn(
            "TOO_MANY_PROJECTS",
            f"{len(found)} projects found; the pipeline covers the first {MAX_PROJECTS} (by directory)",
        )
        found = sorted(found, key=lambda e: (e[1].count("/"), e[1]))[:MAX_PROJECTS]
    return sorted(found, key=lambda e: (e[1], e[0].name))

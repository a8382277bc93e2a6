"""The repository's own CI as evidence: the commands its workflows run (with file and line),
and the toolchain versions its matrices declare. A CI file that does not parse is a warning,
never a failure: it is evidence, not input."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from services.pipeline.detection import manifests
from services.pipeline.detection.report import Evidence, Report
from services.pipeline.snapshot import Snapshot
from services.runtime.errors import InvalidArgument

GITLAB_FILE = ".gitlab-ci.yml"
_WORKFLOW = re.compile(r"\.github/workflows/[^/]+\.ya?ml")
# Matrix keys that name a toolchain's versions, by setup tool.
VERSION_KEYS = {
    "python": ("python", "python-version", "python_version", "py"),
    "node": ("node", "node-version", "node_version", "nodejs"),
    "go": ("go", "go-version", "go_version", "golang"),
    "java": ("java", "java-version", "jdk", "java_version"),
    "rust": ("rust", "toolchain", "rust-version"),
    "ruby": ("ruby", "ruby-version"),
    "php": ("php", "php-version", "php-versions"),
    "dotnet": ("dotnet", "dotnet-version"),
}


@dataclass(frozen=True)
class CiCommand:
    command: str  # one line of a script
    evidence: Evidence
    directory: str = ""  # where it runs, relative to the checkout ("" for the root)


@dataclass
class CiEvidence:
    files: list[str] = field(default_factory=list)
    commands: list[CiCommand] = field(default_factory=list)
    versions: dict[str, tuple[list[str], Evidence]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.files)


def _item_line(sequence: Any, index: int) -> int:
    try:
        return int(sequence.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return 0


def _directory(value: Any) -> str:
    """A `working-directory` as a path relative to the checkout ("?" when it is not known)."""
    if not isinstance(value, str):
        return ""
    if "${{" in value or "$" in value:
        return "?"
    return value.strip().removeprefix("./").rstrip("/").removeprefix(".") or ""


def _lines(script: Any, path: str, line: int, directory: str = "") -> list[CiCommand]:
    """The commands of a script (a string of lines, or a list of them); `line` is where it starts."""
    if isinstance(script, list):
        return [
            c for i, item in enumerate(script) for c in _lines(item, path, _item_line(script, i), directory)
        ]
    if not isinstance(script, str):
        return []
    first = line + 1 if "\n" in script.strip() and line else line  # a block scalar starts below its key
    found = []
    for offset, text in enumerate(script.splitlines()):
        text = text.strip()
        if text and not text.startswith("#"):
            found.append(
                CiCommand(text, Evidence(path, first + offset if first else 0, text[:200]), directory)
            )
    return found


def _matrix_versions(matrix: Any, path: str, evidence: CiEvidence) -> None:
    if not isinstance(matrix, dict):
        return
    for tool, keys in VERSION_KEYS.items():
        for key in keys:
            values = matrix.get(key)
            if isinstance(values, list) and values and all(isinstance(v, str | int | float) for v in values):
                rendered = [str(v) for v in values]
                if tool not in evidence.versions:
                    evidence.versions[tool] = (
                        rendered,
                        Evidence(
                            path, manifests.yaml_line(matrix, key), f"matrix {key}: {', '.join(rendered)}"
                        ),
                    )


def _github(path: str, document: Any, evidence: CiEvidence) -> None:
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, dict):
        return
    for job in jobs.values():
        if not isinstance(job, dict):
            continue
        strategy = job.get("strategy")
        if isinstance(strategy, dict):
            _matrix_versions(strategy.get("matrix"), path, evidence)
        steps = job.get("steps")
        if not isinstance(steps, list):
            continue
        defaults = job.get("defaults")
        run_defaults = defaults.get("run") if isinstance(defaults, dict) else None
        job_directory = (
            _directory(run_defaults.get("working-directory")) if isinstance(run_defaults, dict) else ""
        )
        for step in steps:
            if isinstance(step, dict) and isinstance(step.get("run"), str):
                directory = (
                    _directory(step["working-directory"]) if "working-directory" in step else job_directory
                )
                evidence.commands += _lines(step["run"], path, manifests.yaml_line(step, "run"), directory)


def _gitlab(path: str, document: Any, evidence: CiEvidence) -> None:
    if not isinstance(document, dict):
        return
    for name, job in document.items():
        if not isinstance(job, dict) or str(name).startswith("."):
            continue
        for key in ("before_script", "script"):
            if key in job:
                evidence.commands += _lines(job[key], path, manifests.yaml_line(job, key))
        parallel = job.get("parallel")
        if isinstance(parallel, dict) and isinstance(parallel.get("matrix"), list):
            for entry in parallel["matrix"]:
                _matrix_versions(entry, path, evidence)


def read(snapshot: Snapshot, report: Report) -> CiEvidence:
    """What the repository's CI files say, as evidence."""
    evidence = CiEvidence()
    paths = sorted(p for p in snapshot.files if _WORKFLOW.fullmatch(p))
    if GITLAB_FILE in snapshot:
        paths.append(GITLAB_FILE)
    for path in paths:
        text = snapshot.text(path)
        if text is None:
            continue
        try:
            documents = manifests.yaml_documents(path, text)
        except InvalidArgument as exc:
            report.warn(
                "CI_FILE_UNREADABLE", f"the existing CI file could not be read: {exc.message}", Evidence(path)
            )
            continue
        evidence.files.append(path)
        for document in documents:
            (_gitlab if path == GITLAB_FILE else _github)(path, document, evidence)
    return evidence

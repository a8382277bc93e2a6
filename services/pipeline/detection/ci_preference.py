"""The existing CI as the strongest hint of how a project is really tested: when the CI runs a
test command the repository defines (a Makefile target, a package.json script, tox or nox,
rake) and not the one detection proposed, the project's own command wins, with the CI line as
its evidence. A CI line counts for the project in the directory it runs in (its step's or
job's `working-directory`), and never when it depends on the CI system's variables."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from services.pipeline import commands
from services.pipeline.detection import manifests
from services.pipeline.detection.existing_ci import CiCommand, CiEvidence
from services.pipeline.detection.report import Evidence, Report
from services.pipeline.detection.stack import TEST, Stack
from services.pipeline.snapshot import Snapshot, join

MAKE_TARGETS = frozenset({"test", "tests", "check", "ci", "unit", "unittest", "test-unit"})
MAX_ADOPTED = 4
_CI_VARIABLE = re.compile(r"\$\{\{|\$GITHUB_|\$CI_|\$\{CI_|\$RUNNER_")


def _make_targets(snapshot: Snapshot, directory: str) -> set[str]:
    text = snapshot.text(join(directory, "Makefile")) or ""
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}


def _scripts(snapshot: Snapshot, directory: str) -> dict[str, object]:
    path = join(directory, "package.json")
    text = snapshot.text(path)
    if not text:
        return {}
    scripts = manifests.json_object(path, text).get("scripts")
    return scripts if isinstance(scripts, dict) else {}


def candidates(stack: Stack, ci: CiEvidence, snapshot: Snapshot) -> list[CiCommand]:
    """The CI's test commands that this project defines, in the CI's order, each once."""
    targets = _make_targets(snapshot, stack.directory)
    scripts = _scripts(snapshot, stack.directory) if stack.ecosystem == "node" else {}
    found: dict[str, CiCommand] = {}
    for line in ci.commands:
        if line.directory != stack.directory or _CI_VARIABLE.search(line.command):
            continue
        signature = commands.signature(line.command)
        words = signature.split()
        if not words:
            continue
        tool = words[0]
        adopt = (
            (tool == "make" and len(words) > 1 and words[1] in MAKE_TARGETS and words[1] in targets)
            or (tool in ("npm", "pnpm", "yarn", "bun") and words[-1] in scripts and "test" in words[-1])
            or (stack.ecosystem == "python" and signature in ("tox", "nox"))
            or (stack.ecosystem == "ruby" and signature in ("rake", "rake test", "rake spec", "rake default"))
        )
        if adopt:
            found.setdefault(signature, line)
    return list(found.values())[:MAX_ADOPTED]


def prefer(stack: Stack, ci: CiEvidence, snapshot: Snapshot, report: Report) -> None:
    """Replace the detected test commands with the CI's own, when it runs others."""
    if not ci or not stack.commands.get(TEST):
        return
    ran = {commands.signature(c.command) for c in ci.commands if c.directory == stack.directory}
    if all(commands.signature(c) in ran for c in stack.commands[TEST]):
        return  # the CI runs what detection proposed
    found = candidates(stack, ci, snapshot)
    if not found:
        return
    stack.adopted[TEST] = list(stack.commands[TEST])
    stack.commands[TEST] = [c.command for c in found]
    report.decide(
        "test command",
        stack.directory,
        " && ".join(stack.commands[TEST])
        + f" (the existing CI's; detection proposed {' && '.join(stack.adopted[TEST])})",
        *(c.evidence for c in found),
    )


def several_lockfiles(
    found: Mapping[str, str],
    priority: Sequence[str],
    ci: CiEvidence,
    directory: str,
    report: Report,
    advice: str,
) -> str:
    """The package manager of a project with lockfiles of several (`found`: manager → lockfile):
    the one the existing CI runs, else the first in `priority`; a warning naming them either
    way, never a silent guess."""
    used = next(
        (m for m in priority if m in found and any(c.command.startswith(f"{m} ") for c in ci.commands)),
        None,
    )
    chosen = used or next(m for m in priority if m in found)
    report.warn(
        "SEVERAL_LOCKFILES",
        f"{', '.join(sorted(found.values()))} are lockfiles of different package managers; {chosen} was chosen "
        f"({'the existing CI uses it' if used else 'by precedence'}): {advice}",
        *(Evidence(p) for p in sorted(found.values())),
    )
    return report.decide("package manager", directory, chosen, Evidence(found[chosen], 0, "lockfile"))

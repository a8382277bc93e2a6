"""Generate pipelines for real repositories on disk and compare their build and test commands
with each project's own CI (a script run by hand, not part of `make test`).

    python -m tools.pipeline_compare /path/to/repo [...] [--markdown]

For every repository: the stacks detected, the generated test and build commands, whether
the repository's own CI (GitHub workflows, .gitlab-ci.yml) runs the same (compared by what
the command runs, `services.pipeline.commands.signature`), and whether both exports pass
their validators (schemas here; actionlint too when `make venv` installed it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services.pipeline import commands, exporter, generator, local_repo
from services.pipeline.detection import existing_ci
from services.pipeline.detection.report import Report
from services.pipeline.detection.stack import BUILD, TEST
from services.pipeline.snapshot import Limits, Snapshot
from tools import actionlint

LIMITS = Limits(max_files=20000, max_file_content=256 * 1024, max_content=3 * 1024 * 1024)


@dataclass
class Row:
    project: str
    stacks: list[str] = field(default_factory=list)
    detected: list[tuple[str, bool]] = field(default_factory=list)  # detection's own test commands
    test: list[tuple[str, bool]] = field(default_factory=list)  # (generated command, the CI runs it)
    build: list[tuple[str, bool]] = field(default_factory=list)
    ci_tests: list[str] = field(default_factory=list)
    exports_valid: bool = False
    error: str = ""


def compare(root: Path, linter: actionlint.Actionlint | None) -> Row:
    row = Row(root.name)
    repository = local_repo.read(root)
    try:
        snapshot = Snapshot.build(
            [(f.path, f.size, f.content, f.truncated) for f in repository.files], LIMITS, "files"
        )
        generated = generator.generate(snapshot, generator.Options())
    except Exception as exc:  # a report: say what failed and go on with the next repository
        row.error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        return row
    ci = existing_ci.read(snapshot, Report())
    ran = {commands.signature(c.command) for c in ci.commands}
    row.ci_tests = list(dict.fromkeys(c.command for c in ci.commands if commands.interesting(c.command)))
    for stack in generated.stacks:
        row.stacks.append(
            f"{stack.ecosystem}{'/' + stack.package_manager if stack.package_manager else ''}"
            f"{' @' + stack.directory if stack.directory else ''}"
        )
        for purpose, into in ((TEST, row.test), (BUILD, row.build)):
            for command in stack.commands.get(purpose, []):
                into.append((command, commands.signature(command) in ran))
        for command in stack.adopted.get(TEST, stack.commands.get(TEST, [])):
            row.detected.append((command, commands.signature(command) in ran))
    valid = True
    for target in exporter.Target:
        content = exporter.export(generated.definition, target).content
        valid &= not exporter.check(target, content)
        if linter is not None and target is exporter.Target.GITHUB_ACTIONS:
            valid &= not linter.lint(content)
    row.exports_valid = valid
    return row


def _cell(pairs: list[tuple[str, bool]]) -> str:
    if not pairs:
        return "—"
    if len(pairs) > 3:  # a monorepo: how many the CI runs, and the first few
        distinct = list(dict.fromkeys(pairs))
        shown = ", ".join(f"`{c.splitlines()[0]}` {'✓' if ok else '✗'}" for c, ok in distinct[:2])
        return f"{sum(ok for _, ok in pairs)}/{len(pairs)} run by its CI; {shown}, …"
    return "<br>".join(f"`{c.splitlines()[0]}` {'✓' if ok else '✗'}" for c, ok in pairs)


def _stacks(row: Row) -> str:
    if len(row.stacks) <= 4:
        return ", ".join(row.stacks)
    counts: dict[str, int] = {}
    for stack in row.stacks:
        name = stack.split("/")[0].split(" @")[0]
        counts[name] = counts.get(name, 0) + 1
    return f"{len(row.stacks)} projects: " + ", ".join(
        f"{n} {name}" for name, n in sorted(counts.items(), key=lambda e: -e[1])
    )


def markdown(rows: list[Row]) -> str:
    lines = [
        "| project | stacks detected | detected test command (✓: its CI runs it) | test command generated | "
        "build command generated | its CI runs | exports valid |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.project} | error: {row.error[:80]} | | | | | |")
            continue
        ci = "<br>".join(f"`{c[:50]}`" for c in row.ci_tests[:3]) + (
            f" (+{len(row.ci_tests) - 3})" if len(row.ci_tests) > 3 else ""
        )
        lines.append(
            f"| {row.project} | {_stacks(row)} | {_cell(row.detected)} | {_cell(row.test)} | {_cell(row.build)} | "
            f"{ci or '— (no CI in the repository)'} | {'yes' if row.exports_valid else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.pipeline_compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("repositories", nargs="+", type=Path)
    parser.add_argument("--markdown", action="store_true", help="a Markdown table instead of JSON")
    args = parser.parse_args(argv)
    linter = actionlint.Actionlint() if actionlint.available() else None
    try:
        rows = [compare(root, linter) for root in args.repositories]
    finally:
        if linter is not None:
            linter.close()
    if args.markdown:
        print(markdown(rows))
    else:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

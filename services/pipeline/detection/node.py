"""Node: npm, Yarn (classic and Berry), pnpm and Bun from `packageManager` and the lockfiles;
the test, lint, build and typecheck scripts of package.json; workspaces; the Node version from
`.nvmrc`, `.node-version`, `engines` (or the existing CI's matrix)."""

from __future__ import annotations

import re
from typing import Any

from services.pipeline.detection import ci_preference, manifests
from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, BUILD, INSTALL, LINT, TEST, TYPECHECK, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("package.json",)
LOCKFILES = {
    "pnpm-lock.yaml": "pnpm",
    "yarn.lock": "yarn",
    "bun.lockb": "bun",
    "bun.lock": "bun",
    "package-lock.json": "npm",
    "npm-shrinkwrap.json": "npm",
}
PRIORITY = ("pnpm", "yarn", "bun", "npm")
LTS = ("18", "20", "22")
DEFAULT_VERSION = "22"
NO_TEST = re.compile(r"no test specified")
TYPECHECK_SCRIPTS = ("typecheck", "type-check", "check-types", "types", "tsc")
CACHES = {
    "npm": "~/.npm",
    "pnpm": "~/.local/share/pnpm/store",
    "yarn": "~/.cache/yarn",
    "yarn-berry": ".yarn/cache",
    "bun": "~/.bun/install/cache",
}


def workspace_globs(snapshot: Snapshot, directory: str, package: dict[str, Any]) -> list[str]:
    """The workspace patterns of a root package (package.json `workspaces`, pnpm-workspace.yaml)."""
    workspaces = package.get("workspaces")
    globs: list[str] = []
    if isinstance(workspaces, list):
        globs = [str(w) for w in workspaces]
    elif isinstance(workspaces, dict) and isinstance(workspaces.get("packages"), list):
        globs = [str(w) for w in workspaces["packages"]]
    pnpm_path = join(directory, "pnpm-workspace.yaml")
    text = snapshot.text(pnpm_path)
    if text:
        document = manifests.yaml_mapping(pnpm_path, text)
        packages = document.get("packages")
        if isinstance(packages, list):
            globs += [str(p) for p in packages]
    return globs


def _manager(
    snapshot: Snapshot, directory: str, package: dict[str, Any], path: str, ci: CiEvidence, report: Report
) -> str:
    text = snapshot.text(path)
    declared = package.get("packageManager")
    found = {m: join(directory, n) for n, m in LOCKFILES.items() if join(directory, n) in snapshot}
    if isinstance(declared, str) and (name := declared.split("@", 1)[0]) in PRIORITY:
        if found and name not in found:
            report.warn(
                "LOCKFILE_MISMATCH",
                f"package.json declares {declared} but the lockfile is {', '.join(found.values())}",
                evidence_in(path, text, '"packageManager"'),
            )
        return report.decide("package manager", directory, name, evidence_in(path, text, '"packageManager"'))
    if len(found) > 1:
        return ci_preference.several_lockfiles(
            found, PRIORITY, ci, directory, report, "delete the others or set packageManager"
        )
    if found:
        manager, lockfile = next(iter(found.items()))
        return report.decide("package manager", directory, manager, Evidence(lockfile, 0, "lockfile"))
    report.warn(
        "NO_LOCKFILE",
        f"{path} has no lockfile: `npm install` resolves the newest versions its ranges allow",
        Evidence(path),
    )
    return report.decide("package manager", directory, "npm", Evidence(path, 0, "no lockfile: npm"))


def _versions(
    snapshot: Snapshot, directory: str, package: dict[str, Any], path: str, ci: CiEvidence, report: Report
) -> list[str]:
    for name in (".nvmrc", ".node-version"):
        pinned_path = join(directory, name)
        text = (snapshot.text(pinned_path) or "").strip()
        if text:
            version = text.splitlines()[0].strip().removeprefix("v")
            if version.startswith("lts/"):
                version = DEFAULT_VERSION
            major = version.split(".")[0]
            if major.isdigit():
                return [
                    report.decide(
                        "node version", directory, major, Evidence(pinned_path, 1, text.splitlines()[0])
                    )
                ]
    if "node" in ci.versions:
        values, where = ci.versions["node"]
        report.decide("node versions", directory, ", ".join(values), where)
        return values
    engines = package.get("engines")
    if isinstance(engines, dict) and isinstance(engines.get("node"), str):
        floor = re.search(r"(\d+)", engines["node"])
        if floor:
            versions = [v for v in LTS if int(v) >= int(floor.group(1))] or [floor.group(1)]
            report.decide(
                "node versions",
                directory,
                ", ".join(versions),
                evidence_in(path, snapshot.text(path), '"node"', f"engines.node {engines['node']}"),
            )
            return versions
    return [
        report.decide(
            "node version",
            directory,
            DEFAULT_VERSION,
            Evidence(path, 0, "no version declared: the newest LTS"),
        )
    ]


def _berry(snapshot: Snapshot, directory: str, package: dict[str, Any]) -> bool:
    """Yarn 2+ (Berry) rather than classic Yarn: its lockfile's header, .yarnrc.yml, packageManager."""
    declared = str(package.get("packageManager", ""))
    if declared.startswith("yarn@"):
        return not declared.startswith("yarn@1.")
    header = (snapshot.text(join(directory, "yarn.lock")) or "")[:400]
    if "yarn lockfile v1" in header:
        return False
    return "__metadata" in header or join(directory, ".yarnrc.yml") in snapshot


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    path = join(directory, "package.json")
    text = snapshot.text(path)
    if text is None:
        return None
    package = manifests.json_object(path, text)
    scripts = package.get("scripts") if isinstance(package.get("scripts"), dict) else {}
    assert isinstance(scripts, dict)
    manager = _manager(snapshot, directory, package, path, ci, report)
    berry = manager == "yarn" and _berry(snapshot, directory, package)
    stack = Stack("node", directory, package_manager=manager, tool="bun" if manager == "bun" else "node")
    stack.versions = (
        ["latest"] if manager == "bun" else _versions(snapshot, directory, package, path, ci, report)
    )
    locked = any(join(directory, n) in snapshot for n, m in LOCKFILES.items() if m == manager)
    install = {
        "npm": "npm ci" if locked else "npm install",
        "pnpm": "pnpm install --frozen-lockfile" if locked else "pnpm install",
        "yarn": ("yarn install --immutable" if berry else "yarn install --frozen-lockfile")
        if locked
        else "yarn install",
        "bun": "bun install --frozen-lockfile" if locked else "bun install",
    }[manager]
    stack.add(INSTALL, install)
    report.decide("install command", directory, install, Evidence(path))
    workspaces = workspace_globs(snapshot, directory, package)

    def script(name: str) -> str:
        if manager == "npm":
            return "npm test" if name == "test" else f"npm run {name}"
        if manager == "bun":
            return f"bun run {name}"
        return f"{manager} {'run ' if manager == 'pnpm' and name != 'test' else ''}{name}"

    def workspace_script(name: str) -> str:
        return {
            "npm": f"npm run {name} --workspaces --if-present",
            "pnpm": f"pnpm -r run {name}",
            "yarn": f"yarn workspaces foreach -A run {name}" if berry else f"yarn workspaces run {name}",
            "bun": f"bun run --filter '*' {name}",
        }[manager]

    for purpose, names in (
        (LINT, ("lint",)),
        (TYPECHECK, TYPECHECK_SCRIPTS),
        (TEST, ("test",)),
        (BUILD, ("build",)),
    ):
        name = next(
            (n for n in names if isinstance(scripts.get(n), str) and not NO_TEST.search(scripts[n])), None
        )
        if name is not None:
            stack.add(purpose, script(name))
            report.decide(
                f"{purpose} command",
                directory,
                script(name),
                evidence_in(path, text, f'"{name}"', f"scripts.{name}"),
            )
        elif workspaces and purpose in (LINT, TEST, BUILD):
            stack.add(purpose, workspace_script(names[0]))
            report.decide(
                f"{purpose} command", directory, workspace_script(names[0]),
                evidence_in(path, text, '"workspaces"', "workspaces: each package's own script"),
            )  # fmt: skip
    deps = {**(package.get("dependencies") or {}), **(package.get("devDependencies") or {})}
    if (
        TYPECHECK not in stack.commands
        and "typescript" in deps
        and join(directory, "tsconfig.json") in snapshot
    ):
        exec_ = {"npm": "npx", "pnpm": "pnpm exec", "yarn": "yarn", "bun": "bunx"}[manager]
        stack.add(TYPECHECK, f"{exec_} tsc --noEmit")
        report.decide(
            "typecheck command",
            directory,
            f"{exec_} tsc --noEmit",
            Evidence(join(directory, "tsconfig.json")),
        )
    if TEST not in stack.commands:
        report.warn(
            "NO_TEST_SCRIPT", f"{path} has no test script: the pipeline runs no tests for it", Evidence(path)
        )
    stack.tools = [
        t for t in ("eslint", "prettier", "typescript", "jest", "vitest", "mocha", "turbo", "nx") if t in deps
    ]
    audit = {
        "npm": "npm audit --audit-level=high",
        "pnpm": "pnpm audit --audit-level high",
        "yarn": "yarn npm audit --severity high" if berry else "yarn audit --level high",
    }.get(manager)
    if audit:
        stack.add(AUDIT, audit)
    lockfile = next(
        (join(directory, n) for n, m in LOCKFILES.items() if m == manager and join(directory, n) in snapshot),
        None,
    )
    if lockfile:
        stack.cache = Cache((CACHES["yarn-berry" if berry else manager],), (lockfile,), manager)
    if manager in ("pnpm", "yarn"):
        stack.env["COREPACK_ENABLE_DOWNLOAD_PROMPT"] = "0"
    return stack

"""Python: pip with requirements files, Poetry, uv, PDM, Pipenv; pytest, tox, nox; ruff, flake8,
black, mypy from their configs; the version from `.python-version`, `requires-python` and
classifiers (or the existing CI's matrix)."""

from __future__ import annotations

import re
from typing import Any

from services.pipeline import commands
from services.pipeline.detection import ci_preference, manifests
from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import (
    AUDIT,
    BUILD,
    FORMAT,
    INSTALL,
    LINT,
    TEST,
    TYPECHECK,
    Cache,
    Stack,
)
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "Pipfile", "manage.py")
LOCKFILES = {"uv.lock": "uv", "poetry.lock": "poetry", "pdm.lock": "pdm", "Pipfile.lock": "pipenv"}
PRIORITY = ("uv", "poetry", "pdm", "pipenv", "pip")
SUPPORTED = ("3.9", "3.10", "3.11", "3.12", "3.13")
LATEST = SUPPORTED[-1]
RUN_PREFIX = {"uv": "uv run ", "poetry": "poetry run ", "pdm": "pdm run ", "pipenv": "pipenv run ", "pip": ""}
CACHES = {
    "uv": ("~/.cache/uv", "uv.lock"),
    "poetry": ("~/.cache/pypoetry", "poetry.lock"),
    "pdm": ("~/.cache/pdm", "pdm.lock"),
    "pipenv": ("~/.cache/pipenv", "Pipfile.lock"),
    "pip": ("~/.cache/pip", ""),
}


def _dependencies(pyproject: dict[str, Any]) -> set[str]:
    """Every dependency name a pyproject declares, in any group (lowercase, no extras)."""
    names: list[str] = []
    project = pyproject.get("project", {})
    if isinstance(project, dict):
        names += project.get("dependencies", []) or []
        for group in (project.get("optional-dependencies", {}) or {}).values():
            names += group if isinstance(group, list) else []
    for group in (pyproject.get("dependency-groups", {}) or {}).values():
        names += [g for g in group if isinstance(g, str)] if isinstance(group, list) else []
    poetry = pyproject.get("tool", {}).get("poetry", {}) if isinstance(pyproject.get("tool"), dict) else {}
    if isinstance(poetry, dict):
        for table in ("dependencies", "dev-dependencies"):
            names += list((poetry.get(table) or {}).keys())
        for group in (poetry.get("group") or {}).values():
            if isinstance(group, dict):
                names += list((group.get("dependencies") or {}).keys())
    return {
        re.split(r"[\s\[<>=!~;@]", str(n).strip(), maxsplit=1)[0].lower() for n in names if str(n).strip()
    }


def _requirements(snapshot: Snapshot, directory: str) -> list[str]:
    return sorted(
        p
        for p in snapshot.in_dir(directory)
        if re.fullmatch(r"(.*/)?requirements[\w.-]*\.(txt|in)", p) and p.endswith(".txt")
    )


def _ini_has(snapshot: Snapshot, path: str, section: str) -> Evidence | None:
    text = snapshot.text(path)
    if text and re.search(rf"^\[{re.escape(section)}\]", text, re.MULTILINE):
        return evidence_in(path, text, f"[{section}]")
    return None


def _versions(
    snapshot: Snapshot,
    directory: str,
    pyproject: dict[str, Any],
    pyproject_path: str,
    ci: CiEvidence,
    report: Report,
) -> list[str]:
    pinned_path = join(directory, ".python-version")
    pinned = (snapshot.text(pinned_path) or "").strip().splitlines()
    if pinned and re.fullmatch(r"\d+\.\d+(\.\d+)?", pinned[0].strip()):
        version = ".".join(pinned[0].strip().split(".")[:2])
        report.decide("python version", directory, version, Evidence(pinned_path, 1, pinned[0].strip()))
        return [version]
    if "python" in ci.versions:
        values, where = ci.versions["python"]
        report.decide("python versions", directory, ", ".join(values), where)
        return values
    text = snapshot.text(pyproject_path)
    project = pyproject.get("project", {}) if isinstance(pyproject.get("project"), dict) else {}
    classifiers = [
        m.group(1)
        for c in project.get("classifiers", []) or []
        if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", str(c)))
    ]
    if classifiers:
        versions = sorted(set(classifiers), key=lambda v: tuple(int(p) for p in v.split(".")))
        report.decide(
            "python versions",
            directory,
            ", ".join(versions),
            evidence_in(pyproject_path, text, "Programming Language :: Python :: 3."),
        )
        return versions
    requires = str(project.get("requires-python", ""))
    lower = re.search(r">=?\s*(3\.\d+)", requires)
    if lower:
        floor = lower.group(1)
        versions = [floor, LATEST] if floor != LATEST and floor in SUPPORTED else [floor]
        report.decide(
            "python versions",
            directory,
            ", ".join(versions),
            evidence_in(pyproject_path, text, "requires-python"),
        )
        return versions
    report.decide(
        "python version",
        directory,
        LATEST,
        Evidence(pyproject_path or join(directory, "."), 0, "no version declared: the newest"),
    )
    return [LATEST]


def _package_manager(
    snapshot: Snapshot,
    directory: str,
    tool: dict[str, Any],
    pyproject_path: str,
    ci: CiEvidence,
    report: Report,
) -> str:
    found = {
        manager: join(directory, name)
        for name, manager in LOCKFILES.items()
        if join(directory, name) in snapshot
    }
    if not found and join(directory, "Pipfile") in snapshot:
        found["pipenv"] = join(directory, "Pipfile")
    text = snapshot.text(pyproject_path)
    if len(found) > 1:
        return ci_preference.several_lockfiles(
            found, PRIORITY, ci, directory, report, "delete the others or check the choice"
        )
    if found:
        manager, path = next(iter(found.items()))
        return report.decide("package manager", directory, manager, Evidence(path, 0, "lockfile"))
    for section, manager in (("poetry", "poetry"), ("pdm", "pdm"), ("uv", "uv")):
        if section in tool:
            report.warn(
                "NO_LOCKFILE",
                f"{pyproject_path} configures {manager} but has no lockfile: installs are not reproducible",
                evidence_in(pyproject_path, text, f"[tool.{section}"),
            )
            return report.decide(
                "package manager", directory, manager, evidence_in(pyproject_path, text, f"[tool.{section}")
            )
    requirements = _requirements(snapshot, directory)
    if requirements:
        return report.decide(
            "package manager", directory, "pip", Evidence(requirements[0], 0, "requirements file")
        )
    report.warn(
        "NO_LOCKFILE",
        f"the Python project in {directory or '.'} pins nothing (no lockfile, no requirements file): pip installs "
        "the newest versions its metadata allows",
        Evidence(pyproject_path or join(directory, "setup.py")),
    )
    return report.decide(
        "package manager",
        directory,
        "pip",
        Evidence(pyproject_path or join(directory, "setup.py"), 0, "no lockfile"),
    )


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    pyproject_path = join(directory, "pyproject.toml")
    pyproject_text = snapshot.text(pyproject_path)
    pyproject: dict[str, Any] = manifests.toml(pyproject_path, pyproject_text) if pyproject_text else {}
    tool = pyproject.get("tool", {}) if isinstance(pyproject.get("tool"), dict) else {}
    if not pyproject_text:
        pyproject_path = pyproject_path if pyproject_path in snapshot else ""
    stack = Stack("python", directory, tool="python")
    manager = _package_manager(snapshot, directory, tool, pyproject_path, ci, report)
    stack.package_manager = manager
    stack.versions = _versions(snapshot, directory, pyproject, pyproject_path, ci, report)
    deps = _dependencies(pyproject)
    requirements = _requirements(snapshot, directory)
    for path in requirements:
        deps |= {
            re.split(r"[\s\[<>=!~;@]", line.strip(), maxsplit=1)[0].lower()
            for line in (snapshot.text(path) or "").splitlines()
            if line.strip() and not line.startswith(("#", "-"))
        }
    run = RUN_PREFIX[manager]

    def runner(name: str) -> str:
        """How to call a tool: through the environment when it is a dependency, else isolated."""
        if name in deps or manager == "pip":
            return run + name if manager != "pip" else name
        return {"uv": f"uvx {name}", "pip": name}.get(manager, f"pipx run {name}")

    # Install.
    project_table = pyproject.get("project", {}) if isinstance(pyproject.get("project"), dict) else {}
    extras = [
        e
        for e in ("test", "tests", "testing", "dev")
        if e in (project_table.get("optional-dependencies") or {})
    ]
    if manager == "uv":
        stack.add(
            INSTALL,
            "uv sync --locked --all-extras"
            if join(directory, "uv.lock") in snapshot
            else "uv sync --all-extras",
        )
    elif manager == "poetry":
        stack.add(INSTALL, "poetry install --no-interaction")
    elif manager == "pdm":
        stack.add(INSTALL, "pdm install")
    elif manager == "pipenv":
        stack.add(
            INSTALL,
            "pipenv install --dev" + (" --deploy" if join(directory, "Pipfile.lock") in snapshot else ""),
        )
    else:
        parts = ["python -m pip install --upgrade pip"]
        names = [p.rsplit("/", 1)[-1] for p in requirements]
        install = " ".join(f"-r {n}" for n in names if not n.endswith(".in"))
        if (pyproject_text and "project" in pyproject) or join(directory, "setup.py") in snapshot:
            install = (install + " " if install else "") + (f"-e '.[{extras[0]}]'" if extras else "-e .")
        if install:
            parts.append(f"python -m pip install {install}")
        for line in parts:
            stack.add(INSTALL, line)
    report.decide(
        "install command",
        directory,
        stack.command(INSTALL),
        Evidence(pyproject_path or (requirements or [""])[0]),
    )
    # Tests: pytest when configured or depended on, else tox or nox.
    pytest_evidence = None
    if "pytest" in tool.get("ini_options", {}) or isinstance(tool.get("pytest"), dict):
        pytest_evidence = evidence_in(pyproject_path, pyproject_text, "[tool.pytest")
    for path, section in (
        (join(directory, "pytest.ini"), "pytest"),
        (join(directory, "tox.ini"), "pytest"),
        (join(directory, "setup.cfg"), "tool:pytest"),
    ):
        pytest_evidence = pytest_evidence or _ini_has(snapshot, path, section)
    if pytest_evidence is None and "pytest" in deps:
        source = (
            pyproject_path
            if pyproject_text and "pytest" in pyproject_text
            else (requirements or [pyproject_path])[0]
        )
        pytest_evidence = evidence_in(source, snapshot.text(source), "pytest", "pytest is a dependency")
    if pytest_evidence is None and join(directory, "conftest.py") in snapshot:
        pytest_evidence = Evidence(join(directory, "conftest.py"), 0, "a pytest conftest")
    nox_path, tox_path = join(directory, "noxfile.py"), join(directory, "tox.ini")
    ci_runner = next((c for c in ci.commands if commands.signature(c.command) in ("tox", "nox")), None)
    if ci_runner is not None and (nox_path in snapshot or tox_path in snapshot or "tox" in tool):
        name = commands.signature(ci_runner.command)
        stack.add(
            TEST,
            f"{'uvx' if manager == 'uv' else 'pipx run'} {name}" if manager != "pip" else f"pipx run {name}",
        )
        stack.tools.append(name)
        report.decide("test command", directory, stack.command(TEST), ci_runner.evidence)
    elif pytest_evidence is not None:
        stack.add(TEST, f"{run}pytest" if manager != "pip" else "python -m pytest")
        stack.tools.append("pytest")
        report.decide("test command", directory, stack.command(TEST), pytest_evidence)
    elif nox_path in snapshot:
        stack.add(TEST, "pipx run nox")
        stack.tools.append("nox")
        report.decide("test command", directory, "pipx run nox", Evidence(nox_path))
    elif tox_path in snapshot:
        stack.add(TEST, "pipx run tox")
        stack.tools.append("tox")
        report.decide("test command", directory, "pipx run tox", Evidence(tox_path))
    elif join(directory, "manage.py") in snapshot:
        stack.add(TEST, f"{run}python manage.py test")
        report.decide(
            "test command",
            directory,
            stack.command(TEST),
            Evidence(join(directory, "manage.py"), 0, "Django"),
        )
    else:
        stack.add(TEST, f"{run}python -m unittest discover")
        report.warn(
            "NO_TEST_RUNNER",
            f"no pytest, tox or nox configuration in {directory or '.'}: the tests run with unittest discovery",
            Evidence(pyproject_path or join(directory, "setup.py")),
        )
    # Lint, format, types: from their configs.
    setup_cfg, tox_ini = join(directory, "setup.cfg"), join(directory, "tox.ini")
    ruff = (evidence_in(pyproject_path, pyproject_text, "[tool.ruff") if "ruff" in tool else None) or next(
        (Evidence(p) for p in (join(directory, "ruff.toml"), join(directory, ".ruff.toml")) if p in snapshot),
        None,
    )
    if ruff:
        stack.tools.append("ruff")
        stack.add(LINT, f"{runner('ruff')} check .")
        report.decide("lint command", directory, f"{runner('ruff')} check .", ruff)
        if "format" in (tool.get("ruff") or {}) or "black" not in tool:
            stack.add(FORMAT, f"{runner('ruff')} format --check .")
    flake8 = next(
        (e for e in (Evidence(join(directory, ".flake8")) if join(directory, ".flake8") in snapshot else None,
                     _ini_has(snapshot, setup_cfg, "flake8"), _ini_has(snapshot, tox_ini, "flake8")) if e),
        None,
    )  # fmt: skip
    if flake8 and not ruff:
        stack.tools.append("flake8")
        stack.add(LINT, f"{runner('flake8')}")
        report.decide("lint command", directory, runner("flake8"), flake8)
    if "black" in tool:
        stack.tools.append("black")
        stack.add(FORMAT, f"{runner('black')} --check .")
        report.decide(
            "format command",
            directory,
            f"{runner('black')} --check .",
            evidence_in(pyproject_path, pyproject_text, "[tool.black"),
        )
    mypy = (evidence_in(pyproject_path, pyproject_text, "[tool.mypy") if "mypy" in tool else None) or next(
        (e for e in (Evidence(join(directory, "mypy.ini")) if join(directory, "mypy.ini") in snapshot else None,
                     _ini_has(snapshot, setup_cfg, "mypy")) if e),
        None,
    )  # fmt: skip
    if mypy:
        stack.tools.append("mypy")
        configured = isinstance(tool.get("mypy"), dict) and any(
            k in tool["mypy"] for k in ("files", "packages", "modules")
        )
        stack.add(TYPECHECK, f"{runner('mypy')}" + ("" if configured else " ."))
        report.decide("typecheck command", directory, stack.command(TYPECHECK), mypy)
    # Build: a package with a build system.
    build_system = pyproject.get("build-system")
    if (
        isinstance(build_system, dict) and build_system.get("build-backend") and "project" in pyproject
    ) or "poetry" in tool:
        command = {"uv": "uv build", "poetry": "poetry build", "pdm": "pdm build"}.get(
            manager, "pipx run build"
        )
        stack.add(BUILD, command)
        report.decide(
            "build command", directory, command, evidence_in(pyproject_path, pyproject_text, "[build-system]")
        )
    # Audit with pip-audit, from what is installed.
    audit = {
        "uv": "uv export --format requirements-txt --no-hashes --no-emit-project > /tmp/audit-requirements.txt\n"
        "uvx pip-audit -r /tmp/audit-requirements.txt",
        "poetry": "poetry run pip install pip-audit\npoetry run pip-audit",
        "pdm": "pdm export --without-hashes -o /tmp/audit-requirements.txt\npipx run pip-audit -r /tmp/audit-requirements.txt",
        "pipenv": "pipenv run pip install pip-audit\npipenv run pip-audit",
    }.get(manager, "python -m pip install pip-audit\npip-audit")
    stack.add(AUDIT, audit)
    cache_path, lockfile = CACHES[manager]
    key_files = (
        (join(directory, lockfile),)
        if lockfile
        else tuple(requirements) or ((pyproject_path,) if pyproject_path else ())
    )
    if key_files:
        stack.cache = Cache((cache_path,), key_files, f"{manager}")
    if manager in ("uv", "poetry", "pdm", "pipenv"):
        stack.tools.insert(0, manager)
    return stack

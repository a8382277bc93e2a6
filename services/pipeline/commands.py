"""What a shell command does, for comparing commands across pipelines: `uv run pytest -q tests`
and `python -m pytest` both run `pytest`; `npm test` is `npm run test`; `./gradlew check` and
`gradle check` are `gradle check`."""

from __future__ import annotations

import re

# Wrappers that run a tool in an environment: the tool is what matters.
WRAPPERS = (
    ("uv", "run"), ("poetry", "run"), ("pdm", "run"), ("pipenv", "run"), ("hatch", "run"), ("bundle", "exec"),
    ("pnpm", "exec"), ("yarn", "exec"), ("pipx", "run"), ("python", "-m"), ("python3", "-m"), ("npx",), ("bunx",),
    ("uvx",), ("sudo",), ("time",), ("env",), ("xvfb-run",), ("go", "run"),
)  # fmt: skip
# Tools whose first word says little: their subcommand is part of what they do.
WITH_SUBCOMMAND = frozenset(
    {"npm", "pnpm", "yarn", "bun", "go", "cargo", "mvn", "gradle", "dotnet", "bundle", "composer", "poetry", "uv",
     "pdm", "make", "just", "docker", "helm", "rake", "deno", "swift", "flutter", "dart", "mix",
     "ruff", "black", "turbo", "nx", "lerna", "bazel", "task"}
)  # fmt: skip
# Flags of the wrappers that take a value (`uv run --group dev tox`).
VALUE_FLAGS = frozenset(
    {"--group", "--only-group", "--with", "--extra", "--python", "-p", "--directory", "--project", "--package",
     "--env-file", "--from", "--spec", "-C", "--workspace", "--filter", "-F"}
)  # fmt: skip
# `${{ env.CARGO }}` in a workflow stands for the tool it names.
_ENV_TOOL = re.compile(r"\$\{\{\s*env\.([A-Za-z_]+)\s*\}\}")
ALIASES = {"mvnw": "mvn", "gradlew": "gradle", "python3": "python", "pytest-3": "pytest", "py.test": "pytest"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
# What a comparison cares about: commands that build, test or check.
INTERESTING = re.compile(
    r"(test|pytest|tox|nox|lint|vet|clippy|fmt|format|check|mypy|ruff|flake8|black|eslint|tsc|"
    r"typecheck|build|verify|assemble|rspec|phpunit|phpstan|rubocop|\bci\b)"
)
RUNNERS = frozenset({"make", "just", "rake", "task"})  # whatever their target does, it builds or checks


def _words(command: str) -> list[str]:
    line = command.strip().splitlines()[0] if command.strip() else ""
    line = _ENV_TOOL.sub(lambda m: m.group(1).lower(), line)
    line = re.sub(r"\$\{\{.*?\}\}", "CI_VALUE", line)  # one word, whatever spaces it holds
    line = re.split(r"\s(?:&&|\|\||;|\|)\s", line, maxsplit=1)[0]
    return [w.strip("'\"") for w in line.split()]


def signature(command: str) -> str:
    """The tool (and subcommand) a command runs, its flags and arguments left out; '' for none."""
    words = _words(command)
    while words and _ASSIGNMENT.fullmatch(words[0]):
        words = words[1:]
    changed = True
    while changed and words:
        changed = False
        for wrapper in WRAPPERS:
            if tuple(w.removeprefix("./").rsplit("/", 1)[-1] for w in words[: len(wrapper)]) == wrapper:
                words = words[len(wrapper) :]
                while words and words[0].startswith("-"):  # `uv run --frozen --group dev pytest`
                    flag, words = words[0], words[1:]
                    if flag in VALUE_FLAGS and words:
                        words = words[1:]
                changed = True
                break
    if not words:
        return ""
    tool = words[0].removeprefix("./").rsplit("/", 1)[-1]
    tool = ALIASES.get(tool, tool)
    if tool in WITH_SUBCOMMAND:
        # Maven's and Gradle's `clean` only clears earlier output: the goal after it is what runs.
        skipped = ("clean",) if tool in ("mvn", "gradle") else ()
        sub = next((w for w in words[1:] if not w.startswith("-") and w not in skipped), "")
        if tool in ("npm", "pnpm", "yarn", "bun") and sub not in (
            "run",
            "install",
            "ci",
            "exec",
            "audit",
            "",
        ):
            return f"{tool} run {sub}"
        if tool in ("npm", "pnpm", "yarn", "bun") and sub == "run":
            rest = [w for w in words[1:] if not w.startswith("-")]
            return f"{tool} run {rest[1]}" if len(rest) > 1 else f"{tool} run"
        return f"{tool} {sub}".strip()
    return tool


# Commands that install or prepare rather than build or check, whatever their arguments say.
PREPARING = frozenset(
    {"pip", "pip3", "pipx", "apt-get", "apt", "brew", "curl", "wget", "echo", "cd", "export", "mkdir", "cp", "mv",
     "rm", "cat", "ls", "npm ci", "npm install", "npm run install", "pnpm install", "yarn install", "bun install",
     "uv sync", "uv pip", "poetry install", "pdm install", "pipenv install", "bundle install", "composer install",
     "go mod", "go install", "cargo install", "rustup", "corepack", "git", "sudo", "chmod", "source", "set", "if"}
)  # fmt: skip


def interesting(command: str) -> bool:
    """Whether a command builds, tests or checks (installs and echoes are not compared)."""
    found = signature(command)
    if not found or found in PREPARING or found.split()[0] in PREPARING:
        return False
    return found.split()[0] in RUNNERS or bool(INTERESTING.search(found))

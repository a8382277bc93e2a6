"""A detected project: its ecosystem, directory, toolchain and the commands that build it."""

from __future__ import annotations

from dataclasses import dataclass, field

# The purposes of commands, in the order a job runs them.
INSTALL, FORMAT, LINT, TYPECHECK, TEST, BUILD, AUDIT = (
    "install",
    "format",
    "lint",
    "typecheck",
    "test",
    "build",
    "audit",
)
PURPOSES = (INSTALL, FORMAT, LINT, TYPECHECK, TEST, BUILD, AUDIT)
CHECKS = (FORMAT, LINT, TYPECHECK)


@dataclass(frozen=True)
class Cache:
    paths: tuple[str, ...]
    key_files: tuple[str, ...]
    prefix: str


@dataclass
class Stack:
    ecosystem: str
    directory: str  # "" for the root
    package_manager: str = ""
    tool: str = ""  # the SetupStep tool ("" for none: the runner has it)
    versions: list[str] = field(default_factory=list)  # toolchain versions, newest last
    tools: list[str] = field(default_factory=list)  # configured tools (pytest, ruff, eslint...)
    commands: dict[str, list[str]] = field(default_factory=dict)  # purpose -> commands
    cache: Cache | None = None
    env: dict[str, str] = field(default_factory=dict)
    container: str = ""  # an image the job runs in, for stacks without a setup tool
    shared_paths: list[str] = field(default_factory=list)  # root files its jobs also depend on
    adopted: dict[str, list[str]] = field(default_factory=dict)  # purpose -> what detection had proposed

    def add(self, purpose: str, command: str) -> None:
        self.commands.setdefault(purpose, []).append(command)

    def command(self, purpose: str) -> str:
        """The commands of a purpose as one line each (for reports)."""
        return " && ".join(self.commands.get(purpose, []))

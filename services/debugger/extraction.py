"""What the failing lines name: failing tests, source files and lines, packages and versions.

The forms test runners and build tools print (pytest, unittest, JUnit/Gradle/Maven, Go, Rust,
Jest/Mocha, RSpec/Minitest) and `file:line` locations of any language. At most a few of each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ITEMS = 10

_TESTS = (
    re.compile(r"^FAILED (?P<name>\S+::\S+)"),  # pytest summary
    re.compile(r"^_{3,} (?P<name>[\w.:\[\]-]+) _{3,}$"),  # pytest section
    re.compile(r"^(?:FAIL|ERROR): (?P<name>\w+) \((?P<cls>[\w.]+)\)"),  # unittest
    re.compile(r"^--- FAIL: (?P<name>\S+)"),  # go test
    re.compile(r"^test (?P<name>[\w:]+) \.\.\. FAILED"),  # cargo test
    re.compile(r"^(?P<name>[\w.$]+ > [\w\s()\[\],.-]+?) FAILED$"),  # gradle
    re.compile(r"^\s*(?:●|✕) (?P<name>.+?)(?: \(\d+ ?m?s\))?$"),  # jest
    re.compile(r"^rspec (?P<file>\./[\w/.-]+):(?P<line>\d+)"),  # rspec rerun line
    re.compile(r"^(?P<name>\w+#test_\w+)"),  # minitest
    re.compile(r"^\s*\d+\) (?P<name>\S.*[^:\s])$"),  # mocha, rspec numbered failures
)
_LOCATION = re.compile(
    r"(?P<file>(?:[A-Za-z]:)?[\w./\\-]*[\w-]\.(?:py|go|rs|java|kt|scala|js|jsx|ts|tsx|rb|erl|ex|exs|c|cc|cpp|h|hpp|cs"
    r"|swift|m|php|clj|coffee|css|scss|md|yml|yaml|json|toml|xml|gradle|sh))"
    r"(?:\", line |:|\()(?P<line>\d+)"
)
_PACKAGE = (
    re.compile(r"\b(?P<name>[A-Za-z][\w.-]*[\w])(?:==|@|:)(?P<version>\d+(?:\.\d+)+[\w.+-]*)"),
    re.compile(r"\b(?P<name>[A-Za-z][\w-]*) \(?v?(?P<version>\d+\.\d+(?:\.\d+)+)\)?"),
)


@dataclass(frozen=True)
class FailingTest:
    """A failing test as the runner names it."""

    name: str
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Location:
    """A source file and line."""

    file: str
    line: int


@dataclass(frozen=True)
class Package:
    """A package and its version."""

    name: str
    version: str


def failing_tests(lines: Iterable[str]) -> list[FailingTest]:
    """The failing tests `lines` name, in order, without repeats."""
    found: dict[str, FailingTest] = {}
    for line in lines:
        for pattern in _TESTS:
            match = pattern.search(line.rstrip())
            if match is None:
                continue
            groups = match.groupdict()
            name = groups.get("name") or groups.get("file") or ""
            if groups.get("cls"):
                name = f"{groups['cls']}.{name}"
            test = FailingTest(name.strip(), groups.get("file") or "", int(groups.get("line") or 0))
            found.setdefault(test.name, test)
            break
        if len(found) >= MAX_ITEMS:
            break
    return list(found.values())


def locations(lines: Iterable[str]) -> list[Location]:
    """The `file:line` locations `lines` name, in order, without repeats."""
    found: dict[tuple[str, int], Location] = {}
    for line in lines:
        for match in _LOCATION.finditer(line):
            location = Location(match.group("file"), int(match.group("line")))
            found.setdefault((location.file, location.line), location)
            if len(found) >= MAX_ITEMS:
                return list(found.values())
    return list(found.values())


def packages(lines: Iterable[str]) -> list[Package]:
    """The packages with versions `lines` name, in order, without repeats."""
    found: dict[str, Package] = {}
    for line in lines:
        for pattern in _PACKAGE:
            for match in pattern.finditer(line):
                name = match.group("name")
                if name.lower() in {"version", "v", "line", "python", "node"} and pattern is _PACKAGE[1]:
                    continue
                found.setdefault(name, Package(name, match.group("version")))
                if len(found) >= MAX_ITEMS:
                    return list(found.values())
    return list(found.values())

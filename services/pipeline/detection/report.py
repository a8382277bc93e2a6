"""What detection decided and why: decisions with their evidence, and warnings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Evidence:
    path: str
    line: int = 0  # from 1; 0: the file as a whole
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    subject: str
    directory: str
    choice: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    evidence: tuple[Evidence, ...] = ()


@dataclass
class Report:
    """Collects the decisions and warnings of one detection run."""

    decisions: list[Decision] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    def decide(self, subject: str, directory: str, choice: str, *evidence: Evidence) -> str:
        self.decisions.append(Decision(subject, directory or ".", choice, tuple(evidence)))
        return choice

    def warn(self, code: str, message: str, *evidence: Evidence) -> None:
        self.warnings.append(Finding(code, message, tuple(evidence)))


def line_of(text: str | None, needle: str) -> int:
    """The first line (from 1) of `text` that contains `needle`; 0 when none does."""
    if not text:
        return 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return 0


def evidence_in(path: str, text: str | None, needle: str, detail: str = "") -> Evidence:
    """Evidence pointing at the line of `path` that contains `needle`."""
    return Evidence(path, line_of(text, needle), detail or needle)

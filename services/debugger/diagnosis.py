"""A diagnosis made from what a log reader kept: root-cause ranges, category, signature, and
what the failing lines name.

The signature is a hash of the failing lines' masked tokens (values are parameters), so the
same failure seen again, with other timestamps, ids or durations, has the same signature
whatever the template set has learnt in between.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from services.debugger import classifier, extraction, root_cause
from services.debugger.log_masks import mask_line
from services.debugger.log_reader import KeptLine, ReadLog
from services.debugger.taxonomy import TRANSIENT, Category, Remediation, remediations

MAX_EXCERPT_CHARS = 4000
SIGNATURE_LINES = 10  # of the best range


@dataclass(frozen=True)
class PreviousAttempt:
    """An earlier attempt of the same job."""

    commit: str
    passed: bool


@dataclass(frozen=True)
class Context:
    """Where a log came from, when the caller knows."""

    job: str = ""
    commit: str = ""
    previous_attempts: tuple[PreviousAttempt, ...] = ()


@dataclass(frozen=True)
class RootCause:
    """One ranked range with its masked excerpt."""

    start_line: int
    end_line: int
    excerpt: str
    score: float


@dataclass(frozen=True)
class PodFindings:
    """What a pod's state says (AnalyzePod)."""

    pod: str = ""
    container: str = ""
    reason: str = ""
    last_termination_reason: str = ""
    exit_code: int = 0
    memory_limit: str = ""
    restart_count: int = 0
    events: tuple[str, ...] = ()


@dataclass
class Diagnosis:
    """What failed, where, how sure, and what to do."""

    id: str
    category: Category
    confidence: float
    transient: bool
    root_causes: list[RootCause]
    failing_tests: list[extraction.FailingTest]
    locations: list[extraction.Location]
    packages: list[extraction.Package]
    templates: list[tuple[str, str]]  # (template id, template)
    signature: str
    remediations: list[Remediation]
    kind: str
    job: str
    line_count: int
    create_time_us: int
    template_set: str
    explanation: str = ""
    explanation_provider: str = ""
    explanation_model: str = ""
    explanation_cached: bool = False
    explanation_fallback: bool = False
    from_feedback: bool = False
    evidence: dict[str, float] = field(default_factory=dict)
    pod: PodFindings | None = None
    attempt: int = 0  # the job's attempt, for a job's diagnosis


def signature_of(lines: list[str]) -> str:
    """The signature of a failure whose best root-cause lines are `lines`."""
    seen: list[str] = []
    for line in lines:
        masked = " ".join(mask_line(line))
        if masked and masked not in seen:
            seen.append(masked)
    return hashlib.sha256("\n".join(seen).encode()).hexdigest()[:24]


def diagnose(
    read: ReadLog,
    *,
    diagnosis_id: str,
    kind: str,
    context: Context,
    template_set: str,
    now_us: int,
    extra_evidence: list[str] | None = None,
) -> Diagnosis:
    """The diagnosis of a read log. `extra_evidence`: lines that are not in the log but count as
    failing lines for the category (a pod's state and events)."""
    kept = read.lines
    by_number = {line.number: line for line in kept}
    ranges = root_cause.localise(
        [line.text for line in kept],
        [line.template_id for line in kept],
        numbers=[line.number for line in kept],
        counts=read.template_counts,
    )
    causes = [_cause(found, by_number) for found in ranges]
    region_lines = [by_number[n].text for found in ranges[:3] for n in range(found.start, found.end + 1)]
    best_lines = (
        [by_number[n].text for n in range(ranges[0].start, ranges[0].end + 1)][:SIGNATURE_LINES]
        if ranges
        else []
    )
    in_region = {n for found in ranges[:3] for n in range(found.start, found.end + 1)}
    rest = [line.text for line in kept if line.number not in in_region]
    verdict = classifier.classify([*(extra_evidence or []), *region_lines], rest)
    category = verdict.category
    if category is Category.TEST_FAILURE and _passed_before(context):
        category = Category.FLAKY_TEST
    templates: list[tuple[str, str]] = []
    for found in ranges[:3]:
        for n in range(found.start, found.end + 1):
            template = read.templates.get(by_number[n].template_id)
            if template is not None and (template.id, template.text) not in templates:
                templates.append((template.id, template.text))
    return Diagnosis(
        id=diagnosis_id,
        category=category,
        confidence=verdict.confidence,
        transient=category in TRANSIENT,
        root_causes=causes,
        failing_tests=extraction.failing_tests(region_lines),
        locations=extraction.locations(region_lines),
        packages=extraction.packages(region_lines),
        templates=templates[:20],
        signature=signature_of([*(extra_evidence or []), *best_lines]),
        remediations=remediations(category),
        kind=kind,
        job=context.job,
        line_count=read.line_count,
        create_time_us=now_us,
        template_set=template_set,
        evidence=verdict.evidence,
    )


def _passed_before(context: Context) -> bool:
    return bool(context.commit) and any(
        attempt.passed and attempt.commit == context.commit for attempt in context.previous_attempts
    )


def _cause(found: root_cause.Range, by_number: dict[int, KeptLine]) -> RootCause:
    excerpt = "\n".join(by_number[n].text for n in range(found.start, found.end + 1))
    if len(excerpt) > MAX_EXCERPT_CHARS:
        excerpt = excerpt[:MAX_EXCERPT_CHARS] + "…"
    return RootCause(found.start, found.end, excerpt, found.score)

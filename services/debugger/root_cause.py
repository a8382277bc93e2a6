"""Where in a failed log the failure is: ranked line ranges, most likely first.

Generic rules, no tool's or repository's own: each line scores by the failure markers it
holds (an error, a failed test, an exception, a panic, an assertion, a compiler diagnostic)
and loses for the markers of boilerplate (a CI runner's exit notice, a summary that counts
zero failures); a line whose template fills the log (one warning printed a thousand times)
scores less. Lines inside the step that failed count more than lines of steps that passed:
CI logs echo each command (`$ cmd`, `##[group]Run cmd`), and the failing step is the last one
before the runner's non-zero exit notice. The best lines then grow into ranges with their
context (the stack frames and indented lines under an error, the lines of its block), and
the ranges are ranked by their best line, later ranges first among equals.

The marker patterns run on RE2: alternations of many words cost it a fraction of what they
cost `re` on every line of a long log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import re2

MAX_RANGES = 10
MAX_RANGE_LINES = 30
MAX_LINES = 100  # lines returned in all, as many as k8sgpt's log analyzer keeps
# The score of a line of the failing step with no marker (a linter's finding, a diff line),
# against 2 for one failure marker; the failing step's lines then count three times.
UNMARKED_IN_FAILING_STEP = 0.25
# A line scores by its beginning: markers come first, and a 16 KiB line of minified code or
# data would cost the regular expressions more than the whole rest of a log.
MAX_SCORED_CHARS = 500

_STRONG = re2.compile(
    r"\berror\b|\berrors\b|\bERR!|\bfail(?:ed|ure|ures|s)?\b|\bFAIL\b|exception\b|traceback"
    r"|panic(?:ked)?\b|assert(?:ion)?|\bexpected\b.*\b(?:but|got|to)\b|[✗✖❌]|\bfatal\b"
    r"|cannot|can't|could not|couldn't|unable to|not found|no such file|undefined|unresolved"
    r"|segmentation fault|core dumped|timed out|\btimeout\b|killed|denied|refused|unreachable"
    r"|\bmissing\b|not ok\b|broken|\binvalid\b|\bunexpected\b|conflict",
)
_WEAK = re2.compile(
    r"\bwarn(?:ing)?\b|deprecat|^\s+at |^\s+File \".*\", line|:\d+:in |^\s*\d+\)\s|^\s*#\d+\s|reason:"
    r"|\bgot\b|\bactual\b|\bdiff\b|^[-+]{1}\S|^e\s{2,}|^>\s|\w\.\w{1,5}:\s?\d+\b",
)
# Boilerplate that names a failure without being its reason.
_NOISE = re2.compile(
    r"^the command \".*\" (?:exited|failed) with|^done\. your build exited with|exited with code|"
    r"process completed with exit code|^error: job failed|\b0 (?:errors?|failures?|failed)\b|\berrors?[:=]? 0\b|"
    r"travis_(?:fold|time)|^\$ |^##\[(?:group|endgroup)\]|^npm err! (?:a complete log|this is probably"
    r"|tell the author|not with npm|failed at the|you can get|code elifecycle|errno \d|exit status)"
    r"|^\s*$",
)
# A failure's consequence, not its reason: counts of failed tests, a tool giving up, a build
# tool's or a package manager's closing words. The reason is in the lines before them.
_CONSEQUENCE = re2.compile(
    r"exit (?:code|status)|exited with|command failed|build failed|\b\d+ (?:failed|failures?|errors?)\b"
    r"|^tests?:|^test suites?:|^failure:|build failure|recipe for target|^make(?:\[\d+\])?: \*\*\*|will not run"
    r"|^npm err!|^error: command|returned non-zero|^\s*\+ (?:categoryinfo|fullyqualifiederrorid)"
    r"|try running|for more information|see .* for details|re-run|--stacktrace|--info|--debug",
)
_WARNING_ONLY = re.compile(r"\bwarn(?:ing)?\b")
_STEP = re.compile(r"^(?:\$ |##\[group\]Run )")
_EXIT = re.compile(
    r"^the command \".*\" (?:exited|failed) with [1-9]|process completed with exit code [1-9]"
    r"|^error: job failed",
)
_CONTINUATION = re.compile(r"^\s+\S|^\s*(?:at |File |Caused by|\.\.\.|\^|~+|\|)")


@dataclass(frozen=True)
class Range:
    """Lines `start`..`end` (1-based, inclusive) of the log, and how strongly they point at the failure."""

    start: int
    end: int
    score: float


def line_score(text: str) -> float:
    """How much one (ANSI-free) line looks like a failure's reason, by its markers alone."""
    lowered = text[:MAX_SCORED_CHARS].lower()
    stripped = lowered.strip()
    if not stripped or _NOISE.search(stripped):
        return 0.0
    strong = len(_STRONG.findall(stripped))
    weak = 1 if _WEAK.search(lowered) else 0
    score = 2.0 * min(strong, 3) + 0.5 * weak
    if _CONSEQUENCE.search(stripped):
        score *= 0.2
    elif _WARNING_ONLY.search(stripped) and "error" not in stripped.lower():
        score *= 0.3
    return score


def failing_step(lines: Sequence[str]) -> tuple[int, int]:
    """The 0-based half-open span of the step that failed: from the last command echoed before
    the runner's last non-zero exit notice to that notice (the whole log when there is none)."""
    exit_at = next((i for i in range(len(lines) - 1, -1, -1) if _EXIT.search(lines[i].strip().lower())), None)
    if exit_at is None:
        return 0, len(lines)
    start = next((i for i in range(exit_at - 1, -1, -1) if _STEP.match(lines[i])), 0)
    return start, exit_at


def localise(
    lines: Sequence[str],
    template_of: Sequence[str] | None = None,
    *,
    numbers: Sequence[int] | None = None,
    counts: dict[str, int] | None = None,
) -> list[Range]:
    """The ranked ranges of `lines` (ANSI-free) that most likely hold the failure's reason.

    `template_of`: each line's template id, so that a line repeated throughout scores less
    (`counts`: how often each template occurs in the whole log, when `lines` are a part of
    it). `numbers`: each line's 1-based number in the log, when `lines` are not all of it (a
    long log's tail and its best earlier lines); a range never spans a gap."""
    n = len(lines)
    if n == 0:
        return []
    if counts is None:
        counts = {}
        for template in template_of or ():
            counts[template] = counts.get(template, 0) + 1
    line_numbers = list(numbers) if numbers is not None else list(range(1, n + 1))
    step_start, step_end = failing_step(lines)
    scores = [0.0] * n
    marked = [False] * n  # lines with a failure marker of their own: what ranges grow through
    for i, text in enumerate(lines):
        base = line_score(text)
        marked[i] = base > 0
        if step_start <= i < step_end:
            # The failing command's output: even a line without markers may be its reason.
            if base == 0.0 and text.strip() and not _NOISE.search(text.strip().lower()):
                base = UNMARKED_IN_FAILING_STEP
            base *= 3.0
        if base == 0.0:
            continue
        base *= 0.5 + 0.5 * line_numbers[i] / line_numbers[-1]  # failures are reported late
        if template_of is not None:
            base /= 1.0 + math.log(max(1, counts.get(template_of[i], 1)))
        scores[i] = base
    ranges: list[Range] = []
    taken = [False] * n
    for anchor in sorted(range(n), key=lambda i: (-scores[i], -i)):
        if scores[anchor] <= 0 or len(ranges) >= MAX_RANGES:
            break
        if taken[anchor]:
            continue
        start, end = _grow(lines, marked, taken, anchor, line_numbers)
        for i in range(start, end + 1):
            taken[i] = True
        ranges.append(Range(line_numbers[start], line_numbers[end], round(scores[anchor], 3)))
    return _bounded(ranges)


def _grow(
    lines: Sequence[str], marked: list[bool], taken: list[bool], anchor: int, numbers: list[int]
) -> tuple[int, int]:
    """The range around `anchor`: neighbouring lines that score or continue it (frames,
    indented lines), at most MAX_RANGE_LINES, never into another range nor across a gap."""
    start = end = anchor
    while (
        end + 1 < len(lines)
        and not taken[end + 1]
        and end - start + 1 < MAX_RANGE_LINES
        and numbers[end + 1] == numbers[end] + 1
    ):
        following = lines[end + 1]
        if marked[end + 1] or (
            _CONTINUATION.match(following) and not _NOISE.search(following.strip().lower())
        ):
            end += 1
        else:
            break
    while (
        start > 0
        and not taken[start - 1]
        and end - start + 1 < MAX_RANGE_LINES
        and marked[start - 1]
        and numbers[start - 1] == numbers[start] - 1
    ):
        start -= 1
    return start, end


def _bounded(ranges: list[Range]) -> list[Range]:
    kept: list[Range] = []
    total = 0
    for found in ranges:
        room = MAX_LINES - total
        if room <= 0:
            break
        end = min(found.end, found.start + room - 1)
        kept.append(Range(found.start, end, found.score))
        total += end - found.start + 1
    return kept


def ranked_lines(ranges: Sequence[Range]) -> list[int]:
    """The 1-based line numbers of `ranges`, best range first, each in log order."""
    return [line for found in ranges for line in range(found.start, found.end + 1)]

"""The category of a failure, from the evidence in its root-cause lines and the rest of the log.

Each category has generic patterns (what tools print for it, in any language); the lines of
the best root-cause ranges count sixteen times as much as the other lines kept. The
confidence is the best category's share of the evidence, shrunk when there is little of it:
one weak match is not a sure diagnosis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.debugger.taxonomy import Category

# (category, weight, pattern). Specific infrastructure signs weigh more than generic words.
_PATTERNS: tuple[tuple[Category, float, str], ...] = (
    (Category.OUT_OF_MEMORY, 4.0, r"oomkilled|out of memory|outofmemoryerror|cannot allocate memory"
     r"|heap out of memory|memoryerror|exit code 137|killed process \d+|memory limit exceeded"),
    (Category.DISK_FULL, 4.0, r"no space left on device|enospc|disk (?:is )?full|diskpressure|disk quota exceeded"),
    (Category.IMAGE_PULL, 4.0, r"imagepullbackoff|errimagepull|manifest unknown|pull access denied"
     r"|failed to pull image|invalidimagename|repository does not exist"),
    (Category.CRASH_LOOP, 4.0, r"crashloopbackoff|back-off restarting failed container"),
    (Category.WORKER_LOST, 4.0, r"worker lost|lost (?:connection to|communication with) (?:the )?(?:agent|runner|worker)"
     r"|runner has received a shutdown signal|agent lost|node (?:was )?(?:shut down|lost|preempted)|preempted"
     r"|the job was not acquired"),
    (Category.TIMEOUT, 3.0, r"timed out|\btimeout\b|deadline exceeded|took too long|no output has been received"
     r"|exceeded the (?:maximum )?time|execution expired"),
    (Category.NETWORK, 3.0, r"connection (?:refused|reset|closed by|timed out)|could not resolve host"
     r"|temporary failure in name resolution|name or service not known|network is unreachable|econnreset"
     r"|etimedout|econnrefused|eai_again|503 service unavailable|502 bad gateway|tls handshake|ssl(?:error)?\b"
     r"|failed to fetch|connection aborted|remote end closed|no route to host|readtimeout"),
    (Category.PERMISSION, 3.0, r"permission[ _]denied|\bdenied:|\b403\b|forbidden|\b401\b|unauthori[sz]ed|authentication failed"
     r"|access denied|eacces|not authorized|invalid credentials|bad credentials|invalid token|expired token"),
    (Category.DEPENDENCY_RESOLUTION, 3.0, r"could not resolve dependenc|no matching distribution|eresolve"
     r"|could not find a version|unable to resolve dependency|version solving failed|could not find artifact"
     r"|cannot find module|modulenotfounderror|no module named|package .{1,60} not found|unmet dependenc"
     r"|dependency conflict|could not find gem|failed to download|npm err! 404|unable to locate package"
     r"|could not find (?:hex|rebar|package)|requires? .{1,60} but .{1,40} (?:is|was) installed"),
    (Category.COMPILATION, 2.5, r"error\[e\d+\]|error cs\d+|error ts\d+|cannot find symbol|undefined reference"
     r"|syntaxerror|compilation (?:failed|error)|compile error|does not compile|expected ';'|fatal error:"
     r"|undeclared|cannot be resolved to a type|unresolved (?:import|reference)|type error|typeerror"
     r"|:\d+:\d+: error|build failed with errors|undefined (?:method|local variable|function|variable)"
     r"|invalid css|syntax error|parse error|unexpected token|is unbound|undefined in record"),
    (Category.TEST_FAILURE, 2.0, r"assertionerror|assert(?:ion)?\b|expected .{1,80} (?:to|but|got)"
     r"|failures?:|\bfail:|not ok \d|[✗✖❌]|tests? failed|there (?:were|was) \d+ failures?|test.{0,40}failed"
     r"|\d+ failing|minitest::assertion|expectation"),
    (Category.LINT, 3.0, r"eslint|rubocop|flake8|pylint|offenses|would reformat|gofmt|prettier|checkstyle"
     r"|\blint(?:er|ing)?\b|markdownlint|\bmd\d{3}/|clippy|black\b|stylelint|isort|code style|indent_char"
     r"|trailing whitespace|editorconfig|spellcheck|misspell"),
    (Category.CONFIGURATION, 3.0, r"createcontainerconfigerror|configuration error|invalid configuration"
     r"|missing required|is not set|not configured|no such (?:env|environment variable)|keyerror"
     r"|unknown (?:flag|option)|invalid value|could not parse|unrecognized (?:argument|option)|malformed"
     r"|no rakefile found|not a valid|misconfigur"),
)  # fmt: skip
_COMPILED = tuple((category, weight, re.compile(pattern)) for category, weight, pattern in _PATTERNS)
_REGION_WEIGHT = 4.0
# The rest of the log weighs little: setup steps print "timeout" and "denied" in passing.
_REST_WEIGHT = 0.25
# Evidence below which the confidence is shrunk toward 0: one generic match is not enough.
_SURE_EVIDENCE = 12.0


@dataclass(frozen=True)
class Verdict:
    """A category and how likely it is right."""

    category: Category
    confidence: float
    evidence: dict[str, float]


def _evidence(lines: Iterable[str], weight: float, into: dict[Category, float]) -> None:
    for line in lines:
        lowered = line.lower()
        for category, strength, pattern in _COMPILED:
            if pattern.search(lowered):
                into[category] = into.get(category, 0.0) + strength * weight


def classify(region: Sequence[str], rest: Sequence[str]) -> Verdict:
    """The category the root-cause lines (`region`) and the other lines (`rest`) point at."""
    found: dict[Category, float] = {}
    _evidence(region, _REGION_WEIGHT, found)
    _evidence(rest, _REST_WEIGHT, found)
    if not found:
        return Verdict(Category.UNKNOWN, 0.2, {})
    ranked = sorted(found.items(), key=lambda item: -item[1])
    best, best_score = ranked[0]
    total = sum(found.values())
    share = best_score / total
    certainty = min(1.0, best_score / _SURE_EVIDENCE)
    confidence = round(0.15 + 0.8 * share * certainty, 3)
    return Verdict(best, confidence, {c.value: round(s, 2) for c, s in ranked})

"""The fixed taxonomy of failures: each category, whether a retry can help, and what to do.

The names are the contract's `Category` values without their prefix; the README's debugger
section documents them. A category is transient when the same job can pass unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Category(Enum):
    """What kind of failure a diagnosis found."""

    DEPENDENCY_RESOLUTION = "DEPENDENCY_RESOLUTION"
    COMPILATION = "COMPILATION"
    TEST_FAILURE = "TEST_FAILURE"
    FLAKY_TEST = "FLAKY_TEST"
    LINT = "LINT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CRASH_LOOP = "CRASH_LOOP"
    IMAGE_PULL = "IMAGE_PULL"
    TIMEOUT = "TIMEOUT"
    NETWORK = "NETWORK"
    PERMISSION = "PERMISSION"
    DISK_FULL = "DISK_FULL"
    CONFIGURATION = "CONFIGURATION"
    WORKER_LOST = "WORKER_LOST"
    UNKNOWN = "UNKNOWN"


TRANSIENT = frozenset(
    {Category.FLAKY_TEST, Category.TIMEOUT, Category.NETWORK, Category.WORKER_LOST, Category.IMAGE_PULL}
)


class RemediationType(Enum):
    """What a suggestion asks for (the contract's `RemediationType` without its prefix)."""

    RERUN = "RERUN"
    RERUN_WITH_BACKOFF = "RERUN_WITH_BACKOFF"
    ROLLBACK_CONFIG = "ROLLBACK_CONFIG"
    ROTATE_SECRET = "ROTATE_SECRET"
    RAISE_MEMORY_LIMIT = "RAISE_MEMORY_LIMIT"
    PIN_DEPENDENCY = "PIN_DEPENDENCY"
    FIX_CODE = "FIX_CODE"
    INVESTIGATE = "INVESTIGATE"


@dataclass(frozen=True)
class Remediation:
    """One typed suggestion."""

    type: RemediationType
    reason: str
    parameters: dict[str, str] = field(default_factory=dict)


_FIRST_STEPS: dict[Category, tuple[tuple[RemediationType, str], ...]] = {
    Category.DEPENDENCY_RESOLUTION: (
        (
            RemediationType.PIN_DEPENDENCY,
            "pin the dependency that failed to resolve to a version that exists",
        ),
        (RemediationType.RERUN_WITH_BACKOFF, "a registry outage also looks like this: retry after a delay"),
    ),
    Category.COMPILATION: ((RemediationType.FIX_CODE, "the code does not compile: fix the error it names"),),
    Category.TEST_FAILURE: ((RemediationType.FIX_CODE, "a test fails: fix the code or the test it names"),),
    Category.FLAKY_TEST: (
        (RemediationType.RERUN, "the same commit passed before: rerun, and mark the test as flaky"),
    ),
    Category.LINT: ((RemediationType.FIX_CODE, "run the linter or formatter locally and commit its fixes"),),
    Category.OUT_OF_MEMORY: (
        (RemediationType.RAISE_MEMORY_LIMIT, "the process ran out of memory: raise its memory limit"),
    ),
    Category.CRASH_LOOP: (
        (RemediationType.ROLLBACK_CONFIG, "the container crashes at start: roll back the last config change"),
        (RemediationType.INVESTIGATE, "read the previous container's log for the crash"),
    ),
    Category.IMAGE_PULL: (
        (RemediationType.RERUN_WITH_BACKOFF, "registries fail for a while: retry after a delay"),
        (RemediationType.INVESTIGATE, "check the image name, tag and pull secret"),
    ),
    Category.TIMEOUT: ((RemediationType.RERUN_WITH_BACKOFF, "it ran out of time: retry after a delay"),),
    Category.NETWORK: (
        (RemediationType.RERUN_WITH_BACKOFF, "the network failed for a while: retry after a delay"),
    ),
    Category.PERMISSION: (
        (RemediationType.ROTATE_SECRET, "the credential was refused: rotate it and update its reference"),
    ),
    Category.DISK_FULL: ((RemediationType.INVESTIGATE, "a disk is full: free space or use a larger volume"),),
    Category.CONFIGURATION: (
        (RemediationType.ROLLBACK_CONFIG, "a configuration is missing or wrong: roll back the last change"),
    ),
    Category.WORKER_LOST: ((RemediationType.RERUN, "the worker went away: rerun on another one"),),
    Category.UNKNOWN: ((RemediationType.INVESTIGATE, "no known failure pattern: read the root-cause lines"),),
}


def remediations(category: Category) -> list[Remediation]:
    """The default suggestions for a category, most useful first."""
    suggestions = []
    for kind, reason in _FIRST_STEPS[category]:
        parameters = {"delay": "60s"} if kind is RemediationType.RERUN_WITH_BACKOFF else {}
        suggestions.append(Remediation(kind, reason, parameters))
    return suggestions

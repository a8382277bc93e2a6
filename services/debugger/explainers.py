"""Explanations of a diagnosis, by pluggable providers.

The offline explainer is the default and the fallback: deterministic, one explanation per
category citing the root-cause lines by number, no model. Model providers (`model_explainers`)
implement the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.debugger.diagnosis import Diagnosis
from services.debugger.taxonomy import Category


@dataclass(frozen=True)
class Explained:
    """An explanation and who wrote it."""

    text: str
    provider: str
    model: str = ""
    cached: bool = False
    fallback: bool = False


class Explainer(Protocol):
    """Writes the explanation of a diagnosis (whose excerpts are already masked of secrets)."""

    async def explain(self, diagnosis: Diagnosis) -> Explained: ...


_WHAT: dict[Category, str] = {
    Category.DEPENDENCY_RESOLUTION: "A dependency could not be resolved, downloaded or installed",
    Category.COMPILATION: "The code did not compile",
    Category.TEST_FAILURE: "Tests ran and failed",
    Category.FLAKY_TEST: "Tests failed on a commit that passed before, so the failure is likely flaky",
    Category.LINT: "A linter or formatter refused the code",
    Category.OUT_OF_MEMORY: "The process ran out of memory and was killed",
    Category.CRASH_LOOP: "The container keeps crashing and Kubernetes keeps restarting it",
    Category.IMAGE_PULL: "The container image could not be pulled",
    Category.TIMEOUT: "A step ran out of time",
    Category.NETWORK: "A network or infrastructure service failed",
    Category.PERMISSION: "A credential was missing, wrong or lacked a permission",
    Category.DISK_FULL: "A disk or volume ran out of space",
    Category.CONFIGURATION: "A configuration is missing or wrong",
    Category.WORKER_LOST: "The worker running the job went away",
    Category.UNKNOWN: "No known failure pattern matched",
}


def offline_text(diagnosis: Diagnosis) -> str:
    """The offline explanation: what the category means, where the evidence is, what to do."""
    parts = [f"{_WHAT[diagnosis.category]} (confidence {diagnosis.confidence:.2f})."]
    if diagnosis.pod is not None and diagnosis.pod.reason:
        pod = diagnosis.pod
        detail = f"Container {pod.container!r} of pod {pod.pod} is {pod.reason}"
        if pod.last_termination_reason:
            detail += f"; its last run ended with {pod.last_termination_reason} (exit code {pod.exit_code})"
        if pod.memory_limit:
            detail += f"; its memory limit is {pod.memory_limit}"
        parts.append(detail + ".")
    if diagnosis.root_causes:
        best = diagnosis.root_causes[0]
        first_line = best.excerpt.split("\n", 1)[0].strip()
        where = (
            f"line {best.start_line}"
            if best.start_line == best.end_line
            else f"lines {best.start_line}-{best.end_line}"
        )
        parts.append(f"The most likely cause is at {where}: {first_line[:300]}")
    if diagnosis.failing_tests:
        parts.append("Failing tests: " + ", ".join(t.name for t in diagnosis.failing_tests[:5]) + ".")
    if diagnosis.remediations:
        parts.append("Next step: " + diagnosis.remediations[0].reason + ".")
    return " ".join(parts)


class OfflineExplainer:
    """The deterministic explainer: the service works fully without a model."""

    async def explain(self, diagnosis: Diagnosis) -> Explained:
        return Explained(offline_text(diagnosis), "offline")

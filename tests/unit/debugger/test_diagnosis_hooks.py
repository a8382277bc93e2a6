"""The hook other code reacts to new diagnoses with: every subscriber hears of each one."""

from __future__ import annotations

from services.debugger.diagnosis import Diagnosis
from services.debugger.diagnosis_hooks import JOB, DiagnosisHooks, NewDiagnosis
from services.debugger.taxonomy import Category


def _diagnosis() -> Diagnosis:
    return Diagnosis(id="d1", category=Category.NETWORK, confidence=0.9, transient=True, root_causes=[],
                     failing_tests=[], locations=[], packages=[], templates=[], signature="s", remediations=[],
                     kind="CI_JOB", job="projects/p/pipelines/q/runs/r1/jobs/j", line_count=1, create_time_us=1,
                     template_set="templateSets/default")  # fmt: skip


async def test_a_failing_subscriber_does_not_keep_the_others_from_hearing_of_a_diagnosis() -> None:
    heard: list[NewDiagnosis] = []

    async def broken(new: NewDiagnosis) -> None:
        raise RuntimeError("a remediation trigger with a bug")

    async def listening(new: NewDiagnosis) -> None:
        heard.append(new)

    hooks = DiagnosisHooks(None)
    hooks.subscribe(broken)
    hooks.subscribe(listening)
    new = NewDiagnosis(
        _diagnosis(), JOB, job="projects/p/pipelines/q/runs/r1/jobs/j", attempt=1, first_of_attempt=True
    )
    await hooks.fire(new)
    assert heard == [new]

"""Who may have a pipeline job analysed, and which attempt is: the parts of AnalyzeJob that
need no pipeline."""

from __future__ import annotations

import pytest

from services.debugger.jobs import Attempt, JobView, known_category, pick_attempt
from services.debugger.servicer import job_credentials
from services.debugger.taxonomy import Category
from services.runtime import request_context
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.identity import roles
from services.runtime.identity.principal import MESH, Principal

JOB = "projects/p/pipelines/q/runs/r1/jobs/unit"


def _attempt(number: int, state: str, reason: str = "EXIT_CODE") -> Attempt:
    return Attempt(number, f"{JOB}/attempts/{number}", state, reason, 1, "")


def _job(*attempts: Attempt) -> JobView:
    return JobView(JOB, JOB.rsplit("/jobs/", 1)[0], "projects/p/pipelines/q", "unit", "", attempts)


def test_forwarded_credentials_are_used_as_they_came() -> None:
    token = request_context.forwardable.set((("x-api-key", "dmk_example"),))
    try:
        assert job_credentials() == (("x-api-key", "dmk_example"),)
    finally:
        request_context.forwardable.reset(token)


def test_a_mesh_caller_with_the_pipeline_reads_has_the_debugger_read_for_it() -> None:
    token = request_context.caller.set(
        Principal("spiffe://devmesh/ns/devmesh/sa/pipeline", roles.SERVICE, kind=MESH)
    )
    try:
        assert job_credentials() == ()
    finally:
        request_context.caller.reset(token)


def test_a_caller_narrowed_to_the_debugger_may_not_read_jobs_through_it() -> None:
    narrowed = Principal("spiffe://x", roles.OPERATOR, permissions=("debugger.*",), kind=MESH)
    token = request_context.caller.set(narrowed)
    try:
        with pytest.raises(PermissionDenied, match=r"pipeline\.runs\.get"):
            job_credentials()
    finally:
        request_context.caller.reset(token)


def test_the_latest_attempt_is_diagnosed_only_when_it_failed() -> None:
    retried = _job(_attempt(1, "FAILED"), _attempt(2, "SUCCEEDED"))
    with pytest.raises(FailedPrecondition, match="did not fail"):
        pick_attempt(retried, 0)
    assert pick_attempt(retried, 1).number == 1


def test_an_attempt_the_job_does_not_have_is_not_found_and_a_negative_one_invalid() -> None:
    with pytest.raises(NotFound):
        pick_attempt(_job(_attempt(1, "FAILED")), 2)
    with pytest.raises(InvalidArgument):
        pick_attempt(_job(_attempt(1, "FAILED")), -1)


def test_the_pipelines_facts_decide_a_lost_worker_and_a_timeout() -> None:
    assert known_category(_attempt(1, "FAILED", "WORKER_LOST")) is Category.WORKER_LOST
    assert known_category(_attempt(1, "TIMED_OUT", "TIMEOUT")) is Category.TIMEOUT
    assert known_category(_attempt(1, "FAILED")) is None

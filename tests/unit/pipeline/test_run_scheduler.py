"""The scheduling decision as a pure function: needs, conditions, matrices, retries, finally."""

from __future__ import annotations

import random
from typing import Any

from google.protobuf import json_format

from devmesh.pipeline.v1 import model_pb2
from services.pipeline.runs import plan, retries, scheduler, states
from services.pipeline.runs.records import JobRecord

NOW = 1_000_000


def _plan(definition: dict[str, Any]) -> plan.Plan:
    return plan.build(json_format.ParseDict(definition, model_pb2.PipelineDefinition()))


def _job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "steps": [{"run": {"command": "true"}}], **fields}


def _view(**fields: Any) -> scheduler.RunView:
    defaults: dict[str, Any] = {"state": states.RUNNING, "cancel_requested": False, "cancel_state": states.CANCELLED,
                                "deadline_ms": 0, "now_ms": NOW, "scope": {"inputs": {}, "event": "manual"}}  # fmt: skip
    return scheduler.RunView(**{**defaults, **fields})


def _ended(state: str, n: int = 1, reason: str = "", exit_code: int = 0) -> JobRecord:
    return JobRecord(s=state, n=n, f=n, d=0, rs=reason, x=exit_code)


def test_jobs_without_needs_are_queued_and_their_dependents_wait() -> None:
    p = _plan({"jobs": [_job("a"), _job("b"), _job("c", needs=["a", "b"])]})
    decision = scheduler.decide(p, {}, _view())
    assert decision.queued == ["a", "b"]
    assert decision.changes["a"].f == 1 and "c" not in decision.changes


def test_a_failed_need_skips_an_on_success_job_with_the_reason_and_runs_an_on_failure_one() -> None:
    p = _plan({"jobs": [_job("a"), _job("next", needs=["a"]), _job("alert", needs=["a"], condition={"when": "WHEN_ON_FAILURE"})]})  # fmt: skip
    decision = scheduler.decide(
        p, {"a": _ended(states.FAILED, reason=states.EXIT_CODE, exit_code=1)}, _view()
    )
    assert decision.changes["next"].s == states.SKIPPED
    assert decision.changes["next"].r == "on_success: a failed"
    assert decision.queued == ["alert"]


def test_a_matrix_job_runs_once_per_combination_and_its_dependents_need_them_all() -> None:
    p = _plan({"jobs": [_job("t", matrix={"axes": [{"name": "py", "values": ["3.11", "3.12"]}], "maxParallel": 1}),
                        _job("after", needs=["t"])]})  # fmt: skip
    assert [j.key for j in p.jobs] == ["t.0", "t.1", "after"]
    assert p.by_key()["after"].needs == ("t.0", "t.1")
    decision = scheduler.decide(p, {}, _view())
    assert decision.queued == ["t.0"]  # max_parallel 1


def test_fail_fast_cancels_the_other_combinations() -> None:
    p = _plan({"jobs": [_job("t", matrix={"axes": [{"name": "v", "values": ["1", "2", "3"]}]})]})
    jobs = {"t.0": _ended(states.FAILED, reason=states.EXIT_CODE, exit_code=2),
            "t.1": JobRecord(s=states.RUNNING, n=1, f=1), "t.2": JobRecord()}  # fmt: skip
    decision = scheduler.decide(p, jobs, _view())
    assert decision.changes["t.1"].c == 1  # its worker is asked to stop
    assert decision.changes["t.2"].s == states.CANCELLED and "fail_fast" in decision.changes["t.2"].r


def test_a_declared_exit_code_is_retried_after_a_jittered_backoff_and_another_is_not() -> None:
    retry = {"limit": 2, "backoff": {"initial": "10s", "factor": 2}, "on": {"exitCodes": [75]}}
    p = _plan({"jobs": [_job("a", retry=retry), _job("b", retry=retry)]})
    jobs = {"a": _ended(states.FAILED, reason=states.EXIT_CODE, exit_code=75),
            "b": _ended(states.FAILED, reason=states.EXIT_CODE, exit_code=1)}  # fmt: skip
    decision = scheduler.decide(p, jobs, _view(), random.Random(1))
    assert decision.changes["a"].s == states.RETRY_WAIT
    assert 8_000 <= decision.changes["a"].due - NOW <= 12_000
    assert decision.changes["b"] == jobs["b"].but(d=1)
    assert decision.run_state == ""  # a still has a retry to make


def test_a_lost_worker_is_retried_only_where_infrastructure_failures_are_declared_transient() -> None:
    lost = _ended(states.FAILED, reason=states.WORKER_LOST)
    declared = _plan({"jobs": [_job("a", retry={"limit": 1, "on": {"infrastructure": True}})]})
    undeclared = _plan({"jobs": [_job("a", retry={"limit": 1, "on": {"exitCodes": [1]}})]})
    retried = scheduler.decide(declared, {"a": lost}, _view())  # no backoff: queued again at once
    assert retried.queued == ["a"] and retried.changes["a"].n == 2 and retried.changes["a"].f == 2
    assert scheduler.decide(undeclared, {"a": lost}, _view()).run_state == states.FAILED


def test_the_classifier_is_asked_only_for_transient_policies_and_the_default_says_no() -> None:
    policy = _plan({"jobs": [_job("a", retry={"limit": 1, "on": {"transient": True}})]}).jobs[0].retry
    failed = _ended(states.FAILED, reason=states.EXIT_CODE, exit_code=1)
    assert retries.wants_classifier(policy, failed)
    assert not retries.should_retry(policy, failed, classified_transient=False)
    assert retries.should_retry(policy, failed, classified_transient=True)


def test_finally_jobs_wait_for_every_job_and_run_after_a_cancel() -> None:
    p = _plan({"jobs": [_job("a"), _job("b", needs=["a"])], "finallyJobs": [_job("cleanup")]})
    running = {"a": JobRecord(s=states.RUNNING, n=1, f=1)}
    decision = scheduler.decide(p, running, _view(cancel_requested=True))
    assert decision.changes["a"].c == 1 and decision.changes["b"].s == states.CANCELLED
    assert "cleanup" not in decision.queued  # a is still stopping
    stopped = {"a": _ended(states.CANCELLED, reason=states.CANCELLED_REASON), "b": decision.changes["b"]}
    assert scheduler.decide(p, stopped, _view(cancel_requested=True)).queued == ["cleanup"]


def test_a_gate_waits_until_approved_and_expires_into_rejection() -> None:
    p = _plan({"jobs": [_job("deploy", approval={"environment": "prod", "timeout": "60s"})]})
    waiting = scheduler.decide(p, {}, _view()).changes["deploy"]
    assert waiting.s == states.WAITING_FOR_APPROVAL and waiting.due == NOW + 60_000
    assert scheduler.decide(p, {"deploy": waiting.but(ap=1)}, _view()).queued == ["deploy"]
    expired = scheduler.decide(p, {"deploy": waiting}, _view(now_ms=NOW + 60_000))
    assert expired.changes["deploy"].s == states.REJECTED


def test_an_expression_over_inputs_skips_a_job_with_the_condition_as_reason() -> None:
    p = _plan({"jobs": [_job("a", condition={"expression": "inputs.env == 'prod'"})],
               "triggers": [{"manual": {"inputs": [{"name": "env"}]}}]})  # fmt: skip
    decision = scheduler.decide(p, {}, _view(scope={"inputs": {"env": "dev"}}))
    assert decision.changes["a"].r == "condition is false: inputs.env == 'prod'"


def test_the_summary_counts_as_tekton_does() -> None:
    p = _plan({"jobs": [_job("a"), _job("b"), _job("c"), _job("d")]})
    jobs = {"a": JobRecord(s=states.SUCCEEDED), "b": JobRecord(s=states.FAILED), "c": JobRecord(s=states.SKIPPED),
            "d": JobRecord(s=states.CANCELLED)}  # fmt: skip
    assert scheduler.summary(p, jobs) == "Tasks Completed: 3 (Failed: 1, Cancelled 1), Skipped: 1"


def test_a_run_past_its_deadline_is_timed_out() -> None:
    p = _plan({"jobs": [_job("a")]})
    assert scheduler.decide(p, {}, _view(deadline_ms=NOW)).time_out

"""The issue's chain through the real edge and the stack's mTLS mesh: a pipeline whose step fails
on a flaky network call gets a `network` diagnosis (the debugger follows failed jobs itself), a remediation policy proposes an automatic
re-run with backoff, the debugger's background executor re-runs it as its own service identity
(the pipeline grants the service role re-runs), and the run succeeds on the re-run; the
remediation's transitions are in the audit log."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Rest


def _until(what: str, probe: Any, within: float = 90.0) -> Any:
    end = time.monotonic() + within
    while not (found := probe()):
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.2)
    return found


def test_a_flaky_network_failure_is_re_run_by_a_policy_and_succeeds_through_the_edge(
    rest: Rest, tmp_path: Path
) -> None:
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    policy = rest(
        "POST",
        f"/v1/remediationPolicies?remediation_policy_id=net-{uuid.uuid4().hex[:8]}",
        json={
            "categories": ["CATEGORY_NETWORK"],
            "targets": [f"projects/{project}/"],
            "actions": ["ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF"],
            "threshold": 0.5,
            "parameters": {"delay": "100ms"},
        },
    )
    assert policy.status_code == 200, policy.text
    marker = tmp_path / "fetched-once"
    flaky = (
        f"if [ -e {marker} ]; then echo fetched; else touch {marker}; "
        "echo 'curl: (6) Could not resolve host: mirror.example.invalid'; exit 6; fi"
    )
    assert rest("POST", "/v1/projects", params={"projectId": project}, json={}).status_code == 200
    jobs = [{"id": "fetch", "steps": [{"run": {"command": flaky}}]}]
    created = rest("POST", f"/v1/projects/{project}/pipelines", params={"pipelineId": "ci"},
                   json={"definition": {"jobs": jobs}})  # fmt: skip
    assert created.status_code == 200, created.text
    run = rest("POST", f"/v1/projects/{project}/pipelines/ci/runs", json={}).json()["name"]

    # Nobody asks for a diagnosis: the debugger follows the pipeline's failures stream, diagnoses
    # the failed attempt on its own, and the policy proposes from that diagnosis.
    def succeeded() -> dict[str, Any] | None:
        found = rest("GET", "/v1/remediations", params={"target": f"{run}/jobs/fetch"}).json()
        done = [r for r in found.get("remediations", []) if r["state"] in ("REMEDIATION_STATE_SUCCEEDED",
                                                                           "REMEDIATION_STATE_FAILED")]  # fmt: skip
        return done[0] if done else None

    remediation = _until("the remediation to finish", succeeded)
    assert remediation["state"] == "REMEDIATION_STATE_SUCCEEDED", remediation["history"][-1]
    assert remediation["policy"] == policy.json()["name"] and remediation["automatic"]
    after = rest("GET", f"/v1/{run}").json()
    assert after["state"] == "RUN_STATE_SUCCEEDED" and after["rerunCount"] == 1
    first = after["jobs"][0]["attempts"][0]
    assert first["state"] == "JOB_STATE_FAILED", first
    diagnosed = rest("GET", "/v1/diagnoses", params={"job": f"{run}/jobs/fetch"}).json()["diagnoses"]
    assert [d["category"] for d in diagnosed] == ["CATEGORY_NETWORK"]
    assert remediation["diagnosis"] == diagnosed[0]["name"]
    audit = rest("GET", "/v1/auditEvents", params={"resourcePrefix": remediation["name"]}).json()
    actions = {e["action"] for e in audit.get("auditEvents", [])}
    assert {"debugger.remediations.proposed", "debugger.remediations.succeeded"} <= actions, actions

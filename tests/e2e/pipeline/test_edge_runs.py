"""Pipeline runs through the real edge: started over REST, followed as NDJSON (`curl -N`),
cancelled, audited."""

from __future__ import annotations

import json
import uuid

from tests.e2e.conftest import Rest


def test_a_run_streams_as_ndjson_through_the_edge_and_ends_with_its_cancel(rest: Rest) -> None:
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", "/v1/projects", params={"projectId": project}, json={}).status_code == 200
    gated = {"id": "deploy", "approval": {"environment": "prod"}, "steps": [{"run": {"command": "true"}}]}
    created = rest("POST", f"/v1/projects/{project}/pipelines", params={"pipelineId": "ci"},
                   json={"definition": {"jobs": [gated]}})  # fmt: skip
    assert created.status_code == 200, created.text
    started = rest("POST", f"/v1/projects/{project}/pipelines/ci/runs", json={"requestId": "e2e-1"})
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    with rest.session.get(f"{rest.base}/v1/{name}:streamEvents", stream=True, timeout=30) as stream:
        events = []
        for line in stream.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            events.append(event)
            if event["state"].get("jobState") == "JOB_STATE_WAITING_FOR_APPROVAL":
                assert rest("POST", f"/v1/{name}:cancel", json={}).status_code == 200
    assert events[-1]["state"]["runState"] == "RUN_STATE_CANCELLED"  # the stream ended with the run
    audit = rest("GET", "/v1/auditEvents", params={"resourcePrefix": name}).json()
    assert {"pipeline.runs.create", "pipeline.runs.cancel"} <= {e["action"] for e in audit["auditEvents"]}

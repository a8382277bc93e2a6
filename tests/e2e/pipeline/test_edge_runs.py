"""Pipeline runs through the real edge: started over REST, followed as NDJSON (`curl -N`),
cancelled, audited."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from services.pipeline import runs_client
from tests.e2e.conftest import Rest
from tools.stack.certs import CertPaths


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


def test_devmesh_pipeline_run_follows_a_run_on_the_stacks_worker_and_exits_with_its_status(
    rest: Rest, edge: str, operator: CertPaths, admin_key: str, tmp_path: Path
) -> None:
    repo = tmp_path / f"repo-{uuid.uuid4().hex[:8]}"
    repo.mkdir()
    (repo / "hello.txt").write_text("hello from the checkout\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["git", "init", "-q"], ["git", "add", "."], [*git, "commit", "-q", "-m", "first"]):
        subprocess.run(argv, cwd=repo, check=True)
    project = runs_client.project_id_of(repo)
    assert rest("POST", "/v1/projects", params={"projectId": project}, json={}).status_code == 200
    jobs = [
        {"id": "build", "steps": [{"checkout": {}}, {"run": {"command": "cat hello.txt"}}]},
        {"id": "test", "needs": ["build"], "steps": [{"run": {"command": "echo failing; exit 3"}}]},
    ]
    stored = rest("POST", f"/v1/projects/{project}/pipelines", params={"pipelineId": "ci"},
                  json={"definition": {"jobs": jobs}})  # fmt: skip
    assert stored.status_code == 200, stored.text
    connection = ["--edge", edge, "--ca", str(operator.ca), "--cert", str(operator.cert), "--key", str(operator.key),
                  "--api-key", admin_key]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "pipeline", "run", str(repo), "--follow", *connection],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_STACK_FILE": str(tmp_path / "no-stack.json")},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "[build] hello from the checkout" in lines
    assert "[test] FAILED: step 1: exit status 3" in lines
    assert lines[-2:] == ["Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0", "run FAILED"]

"""The pipeline service through the real edge: REST (transcoded JSON) and gRPC, and the
`devmesh pipeline generate` command a developer runs, against the mesh `make run` starts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
from ruamel.yaml import YAML

from devmesh.pipeline.v1 import pipeline_pb2 as pb
from devmesh.pipeline.v1 import pipeline_pb2_grpc
from services.pipeline import exporter
from tests.e2e.conftest import Rest
from tests.unit.pipeline import repos, samples
from tools.actionlint import Actionlint
from tools.stack.certs import CertPaths


def test_rest_creates_a_project_and_a_pipeline_and_reads_its_revisions(rest: Rest) -> None:
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    assert (
        rest("POST", "/v1/projects", params={"projectId": project}, json={"displayName": "E2E"}).status_code
        == 200
    )
    definition = {
        "jobs": [{"id": "test", "steps": [{"checkout": {}}, {"run": {"command": "make test"}}]}],
    }
    created = rest(
        "POST",
        f"/v1/projects/{project}/pipelines",
        params={"pipelineId": "ci"},
        json={"definition": definition},
    )
    assert created.status_code == 200, created.text
    assert created.json()["revision"] == "1"
    revisions = rest("GET", f"/v1/projects/{project}/pipelines/ci:listRevisions").json()
    assert [r["revision"] for r in revisions["revisions"]] == ["1"]


def test_rest_refuses_an_invalid_definition_with_400_naming_the_path(rest: Rest) -> None:
    definition = {"jobs": [{"id": "a", "needs": ["ghost"], "steps": [{"run": {"command": "true"}}]}]}
    response = rest("POST", "/v1/pipelines:validate", json={"definition": definition})
    assert response.status_code == 400, response.text
    violations = next(d for d in response.json()["details"] if d["@type"].endswith("BadRequest"))[
        "fieldViolations"
    ]
    assert violations[0]["field"] == "definition.jobs[0].needs[0]"


def test_rest_generates_and_exports_a_pipeline_both_validators_accept(
    rest: Rest, actionlint: Actionlint
) -> None:
    files = [
        {"path": p, "size": str(len(c)), "content": base64.b64encode(c.encode()).decode()}
        for p, c in repos.NODE_PNPM.items()
    ]
    generated = rest("POST", "/v1/pipelines:generate", json={"snapshot": {"files": files}})
    assert generated.status_code == 200, generated.text
    assert generated.json()["stacks"][0]["packageManager"] == "pnpm"
    for target in ("EXPORT_TARGET_GITHUB_ACTIONS", "EXPORT_TARGET_GITLAB_CI"):
        exported = rest(
            "POST",
            "/v1/pipelines:export",
            json={"definition": generated.json()["definition"], "target": target},
        )
        assert exported.status_code == 200, exported.text
        content = exported.json()["content"]
        kind = exporter.Target.GITHUB_ACTIONS if "GITHUB" in target else exporter.Target.GITLAB_CI
        assert exporter.check(kind, content) == []
        if kind is exporter.Target.GITHUB_ACTIONS:
            assert actionlint.lint(content) == []


def test_rest_answers_nothing_recognised_with_400(rest: Rest) -> None:
    files = [{"path": "README.md", "size": "3"}]
    response = rest("POST", "/v1/pipelines:generate", json={"snapshot": {"files": files}})
    assert response.status_code == 400
    assert (
        next(d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo"))["reason"]
        == "NOTHING_RECOGNISED"
    )


def test_grpc_through_the_edge_exports_a_definition(edge_channel: grpc.Channel) -> None:
    stub = pipeline_pb2_grpc.PipelineServiceStub(edge_channel)
    answer = stub.ExportPipeline(
        pb.ExportPipelineRequest(definition=samples.everything(), target=pb.EXPORT_TARGET_GITLAB_CI)
    )
    assert answer.path == ".gitlab-ci.yml" and "parallel:" in answer.content
    assert "SCHEDULE_DEGRADED" in {w.code for w in answer.warnings}


def devmesh(
    args: list[str], edge: str, tls: CertPaths, key: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    connection = [
        "--edge",
        edge,
        "--ca",
        str(tls.ca),
        "--cert",
        str(tls.cert),
        "--key",
        str(tls.key),
        "--api-key",
        key,
    ]
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "pipeline", "generate", *args, *connection],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_STACK_FILE": str(cwd / "no-stack.json")},
    )  # fmt: skip


def test_the_command_prints_github_actions_yaml_that_actionlint_accepts(
    edge: str, operator: CertPaths, admin_key: str, tmp_path: Path, actionlint: Actionlint
) -> None:
    repo = repos.write(repos.PYTHON_UV, tmp_path / "repo")
    result = devmesh([str(repo)], edge, operator, admin_key, tmp_path)
    assert result.returncode == 0, result.stderr
    assert YAML(typ="safe").load(result.stdout)["jobs"]["python-test"]
    assert exporter.check(exporter.Target.GITHUB_ACTIONS, result.stdout) == []
    assert actionlint.lint(result.stdout) == []


def test_the_command_writes_gitlab_ci_into_the_repository(
    edge: str, operator: CertPaths, admin_key: str, tmp_path: Path
) -> None:
    repo = repos.write(repos.GO, tmp_path / "repo")
    result = devmesh([str(repo), "--target", "gitlab-ci", "--write"], edge, operator, admin_key, tmp_path)
    assert result.returncode == 0, result.stderr
    written = (repo / ".gitlab-ci.yml").read_text()
    assert exporter.check(exporter.Target.GITLAB_CI, written) == []
    assert "go test ./..." in written


def test_the_command_prints_the_detection_report_as_json(
    edge: str, operator: CertPaths, admin_key: str, tmp_path: Path
) -> None:
    repo = repos.write(repos.RUST, tmp_path / "repo")
    result = devmesh([str(repo), "--json"], edge, operator, admin_key, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stacks"][0]["ecosystem"] == "rust"
    assert any(d["subject"] == "rust toolchain" for d in report["rationale"])


def test_the_command_says_clearly_when_the_key_is_refused(
    edge: str, operator: CertPaths, tmp_path: Path
) -> None:
    repo = repos.write(repos.GO, tmp_path / "repo")
    result = devmesh([str(repo)], edge, operator, "dmk_not-a-real-key", tmp_path)
    assert result.returncode == 1
    assert "UNAUTHENTICATED" in result.stderr and "dmk_not" not in result.stderr


def test_the_command_says_clearly_when_no_mesh_is_running(tmp_path: Path) -> None:
    repo = repos.write(repos.GO, tmp_path / "repo")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "pipeline", "generate", str(repo)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_STACK_FILE": str(tmp_path / "none.json")},
    )  # fmt: skip
    assert result.returncode == 2
    assert "make run" in result.stderr and "Traceback" not in result.stderr

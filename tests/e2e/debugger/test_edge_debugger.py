"""The debugger through the edge: a build log sent with `curl --data-binary`, over REST and gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from tests.e2e.conftest import Rest
from tests.integration.debugger.test_analyze_log import PYTEST_LOG
from tools.stack.certs import CertPaths
from tools.stack.local import Stack


def test_curl_data_binary_of_a_build_log_gets_a_diagnosis(
    edge: str, operator: CertPaths, admin_key: str, tmp_path: Path
) -> None:
    log = tmp_path / "build.log"
    log.write_text(PYTEST_LOG)
    result = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--noproxy", "*",
            "--cacert", str(operator.ca), "--cert", str(operator.cert), "--key", str(operator.key),
            "-H", f"x-api-key: {admin_key}", "-H", "content-type: text/plain",
            "--data-binary", f"@{log}", f"https://{edge}/v1/diagnoses:analyzeLog?kind=LOG_KIND_CI_JOB",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    diagnosis = json.loads(result.stdout)
    assert diagnosis["category"] == "CATEGORY_TEST_FAILURE", diagnosis
    assert diagnosis["rootCauses"][0]["excerpt"]
    assert diagnosis["explanation"]["text"]


def test_the_same_log_over_grpc_has_the_same_signature_as_over_rest(
    rest: Rest, edge_channel: grpc.Channel
) -> None:
    over_rest = rest(
        "POST", "/v1/diagnoses:analyzeLog", data=PYTEST_LOG.encode(), headers={"content-type": "text/plain"}
    )
    assert over_rest.status_code == 200, over_rest.text
    stub = debugger_pb2_grpc.DebuggerServiceStub(edge_channel)
    over_grpc = stub.AnalyzeLog(pb.AnalyzeLogRequest(text=PYTEST_LOG), timeout=10)
    assert over_grpc.signature == over_rest.json()["signature"]
    read = rest("GET", f"/v1/{over_grpc.name}")
    assert read.status_code == 200 and read.json()["name"] == over_grpc.name


def test_an_unknown_job_analysis_is_404_over_rest(rest: Rest) -> None:
    answer = rest("POST", "/v1/projects/pp/pipelines/qq/runs/r1/jobs/j:analyze", json={})
    assert answer.status_code == 404, answer.text


@pytest.fixture(scope="module")
def failed_job(mesh: Stack, edge: str, operator: CertPaths, admin_key: str) -> str:
    """A job of the stack's worker whose assertion failed (its run has ended)."""
    rest = Rest(edge, operator, admin_key)
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", "/v1/projects", params={"projectId": project}, json={}).status_code == 200
    check = {
        "id": "check",
        "steps": [{"run": {"command": f"{sys.executable} -c 'assert 2 + 3 == 6, 2 + 3'"}}],
    }
    created = rest("POST", f"/v1/projects/{project}/pipelines", params={"pipelineId": "ci"},
                   json={"definition": {"jobs": [check]}})  # fmt: skip
    assert created.status_code == 200, created.text
    run = rest("POST", f"/v1/projects/{project}/pipelines/ci/runs", json={}).json()["name"]
    deadline = time.monotonic() + 60
    while rest("GET", f"/v1/{run}").json()["state"] != "RUN_STATE_FAILED":
        assert time.monotonic() < deadline, rest("GET", f"/v1/{run}").text
        time.sleep(0.1)
    return f"{run}/jobs/check"


def test_a_failed_job_is_diagnosed_once_and_analysed_over_rest(rest: Rest, failed_job: str) -> None:
    analysed = rest("POST", f"/v1/{failed_job}:analyze", json={})
    assert analysed.status_code == 200, analysed.text
    assert (analysed.json()["job"], analysed.json()["attempt"]) == (failed_job, 1)
    assert analysed.json()["category"] == "CATEGORY_TEST_FAILURE"
    listed = rest("GET", "/v1/diagnoses", params={"job": failed_job}).json()["diagnoses"]
    assert [d["name"] for d in listed] == [analysed.json()["name"]]  # the attempt's own, made once


def _devmesh(
    edge: str, operator: CertPaths, admin_key: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    connection = [
        "--edge",
        edge,
        "--ca",
        str(operator.ca),
        "--cert",
        str(operator.cert),
        "--key",
        str(operator.key),
    ]
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "debug", "analyze", *args, *connection],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_API_KEY": admin_key, "DEVMESH_STACK_FILE": "/nonexistent"},
    )  # fmt: skip


def test_devmesh_debug_analyze_prints_the_category_the_lines_and_the_explanation(
    edge: str, operator: CertPaths, admin_key: str, tmp_path: Path
) -> None:
    log = tmp_path / "build.log"
    log.write_text(PYTEST_LOG)
    result = _devmesh(edge, operator, admin_key, str(log))
    assert result.returncode == 0, result.stderr
    assertion = PYTEST_LOG.splitlines().index("E       assert 0.30000000000000004 == 0.3") + 1
    assert result.stdout.startswith("test failure")
    assert f">{assertion:>7} | E       assert 0.30000000000000004 == 0.3" in result.stdout
    assert "fix_code" in result.stdout
    piped = _devmesh(edge, operator, admin_key, "-", "--json", stdin=PYTEST_LOG)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["category"] == "CATEGORY_TEST_FAILURE"


def test_devmesh_debug_analyze_of_a_pod_names_the_oom_killed_container(
    edge: str, operator: CertPaths, admin_key: str
) -> None:
    pods = Path(__file__).resolve().parents[2] / "fixtures" / "debugger" / "pods"
    result = _devmesh(
        edge, operator, admin_key,
        "--pod", str(pods / "oomkilled.pod.json"), "--events", str(pods / "oomkilled.events.json"),
        "--previous-log", str(pods / "oomkilled.previous.log"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("out of memory")
    assert "container api" in result.stdout and "128Mi" in result.stdout
    assert "S3cretPassw0rd" not in result.stdout


def test_devmesh_debug_analyze_job_prints_the_jobs_diagnosis(
    edge: str, operator: CertPaths, admin_key: str, failed_job: str
) -> None:
    result = _devmesh(edge, operator, admin_key, "--job", failed_job)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test failure")
    assert f"job {failed_job}, attempt 1" in result.stdout
    assert "AssertionError" in result.stdout
    as_json = _devmesh(edge, operator, admin_key, "--job", failed_job, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["job"] == failed_job

"""Remediations through the edge: a config change breaks a consumer, the consumer's pod is
diagnosed, the rollback it suggests is proposed over REST and waits for approval, someone other
than the proposer approves it over REST, it executes, verifies and is audited; and the
`devmesh debug remediation` commands against the same mesh."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Rest
from tools.stack.certs import CertPaths

PODS = Path(__file__).resolve().parents[2] / "fixtures" / "debugger" / "pods"


@pytest.fixture(scope="module")
def second_operator(edge: str, operator: CertPaths, admin_key: str) -> Iterator[Rest]:
    """REST as another principal: an operator key the admin creates."""
    admin = Rest(edge, operator, admin_key)
    made = admin("POST", "/v1/apiKeys", json={"role": "operator", "displayName": "on-call"})
    admin.session.close()
    assert made.status_code == 200, made.text
    client = Rest(edge, operator, made.json()["key"])
    yield client
    client.session.close()


def _broken_consumer_config(rest: Rest) -> tuple[str, int]:
    """An environment whose last change broke its consumer: (its name, the good revision)."""
    ns = f"shop-{uuid.uuid4().hex[:8]}"
    assert rest("POST", "/v1/namespaces", params={"namespace_id": ns}, json={}).status_code == 200
    env = f"/v1/namespaces/{ns}/environments/staging"
    good = rest("PATCH", env, params={"allow_missing": "true"}, json={"content": {"db": {"port": 5432}}})
    assert good.status_code == 200, good.text
    broken = rest("PATCH", env, json={"content": {"db": {"port": "not-a-port"}}})
    assert broken.status_code == 200, broken.text
    return f"namespaces/{ns}/environments/staging", int(good.json()["revision"])


def _consumer_diagnosis(rest: Rest) -> str:
    pod = json.loads((PODS / "configerror.pod.json").read_text())
    diagnosis = rest("POST", "/v1/diagnoses:analyzePod", json={"pod": pod})
    assert diagnosis.status_code == 200, diagnosis.text
    assert diagnosis.json()["remediations"][0]["type"] == "REMEDIATION_TYPE_ROLLBACK_CONFIG"
    return str(diagnosis.json()["name"])


def test_a_broken_config_is_rolled_back_after_another_persons_approval_verified_and_audited(
    rest: Rest, second_operator: Rest
) -> None:
    environment, good = _broken_consumer_config(rest)
    proposed = rest(
        "POST",
        "/v1/remediations",
        json={
            "diagnosis": _consumer_diagnosis(rest),
            "target": environment,
            "parameters": {"revision": str(good), "expect": "db.port=5432"},
            "reason": "the last config change broke the shop's consumer",
        },
    )
    assert proposed.status_code == 200, proposed.text
    remediation = proposed.json()
    name = remediation["name"]
    assert remediation["state"] == "REMEDIATION_STATE_AWAITING_APPROVAL"
    assert remediation["plan"][0]["kind"] == "ACTION_KIND_CONFIG_ROLLBACK"

    early = rest("POST", f"/v1/{name}:execute", json={})
    assert early.status_code == 400 and "NOT_APPROVED" in early.text
    own = rest("POST", f"/v1/{name}:approve", json={"reason": "mine"})
    assert own.status_code == 400 and "SELF_APPROVAL" in own.text

    approved = second_operator("POST", f"/v1/{name}:approve", json={"reason": "checked the diff"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "REMEDIATION_STATE_APPROVED"
    approver = approved.json()["approvals"][0]["approver"]
    assert approver != remediation["proposer"]

    executed = second_operator("POST", f"/v1/{name}:execute", json={})
    assert executed.status_code == 200, executed.text
    done = executed.json()
    assert done["state"] == "REMEDIATION_STATE_SUCCEEDED", done["history"][-1]
    assert [s["status"] for s in done["steps"]] == ["executing", "applied"]
    resolved = rest("GET", f"/v1/{environment}:resolve")
    assert resolved.json()["content"] == {"db": {"port": 5432}}

    events = rest("GET", "/v1/auditEvents", params={"resourcePrefix": name}).json()["auditEvents"]
    changes = sorted(e["action"] for e in events if e["resource"] == name and not e["method"])
    assert changes == sorted(
        [
            "debugger.remediations.proposed",
            "debugger.remediations.approved",
            "debugger.remediations.executing",
            "debugger.remediations.step",  # executing the rollback
            "debugger.remediations.step",  # applied
            "debugger.remediations.succeeded",
        ]
    )
    approve_call = [e for e in events if e["method"].endswith("/ApproveRemediation") and e["result"] == "OK"]
    assert [e["actor"] for e in approve_call] == [approver]


def _state(edge: str, operator: CertPaths, admin_key: str, name: str) -> str:
    return str(json.loads(_devmesh(edge, operator, admin_key, "get", name, "--json").stdout)["state"])


def _devmesh(edge: str, operator: CertPaths, admin_key: str, *args: str) -> subprocess.CompletedProcess[str]:
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
        [sys.executable, "-m", "services.cli", "debug", "remediation", *args, *connection],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_API_KEY": admin_key, "DEVMESH_STACK_FILE": "/nonexistent"},
    )  # fmt: skip


def test_devmesh_debug_remediation_proposes_shows_executes_lists_and_watches(
    edge: str, operator: CertPaths, admin_key: str, rest: Rest
) -> None:
    pod = json.loads((PODS / "oomkilled.pod.json").read_text())
    diagnosis = rest("POST", "/v1/diagnoses:analyzePod", json={"pod": pod}).json()["name"]
    target = f"namespaces/shop/deployments/api-{uuid.uuid4().hex[:6]}"
    proposed = _devmesh(
        edge, operator, admin_key, "propose", "--diagnosis", diagnosis, "--target", target, "--json"
    )
    assert proposed.returncode == 0, proposed.stderr
    name = json.loads(proposed.stdout)["name"]

    # The raise is automatic (low risk, a dry run): the stack's background executor runs it.
    deadline = time.monotonic() + 60
    while not _state(edge, operator, admin_key, name).endswith("DRY_RUN"):
        assert time.monotonic() < deadline, "the executor did not run the automatic remediation"
        time.sleep(0.2)
    shown = _devmesh(edge, operator, admin_key, "get", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{name}  DRY_RUN")
    assert "AWAITING_APPROVAL -> APPROVED -> EXECUTING -> [DRY_RUN]  (final)" in shown.stdout
    assert f"0. KUBERNETES_RAISE_MEMORY_LIMIT {target}" in shown.stdout

    again = _devmesh(edge, operator, admin_key, "execute", name.removeprefix("remediations/"))
    assert again.returncode == 1 and again.stderr.startswith("devmesh: FAILED_PRECONDITION"), again.stderr

    listed = _devmesh(edge, operator, admin_key, "list", "--target", target, "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == [name]

    watched = _devmesh(
        edge, operator, admin_key, "watch", "--after", "0-0", "--remediation", name, "--count", "4"
    )
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    # The proposal and the policy's approval are one write, so one event (its last transition).
    assert [line.split("  ")[2] for line in lines] == [
        "AWAITING_APPROVAL -> APPROVED",
        "APPROVED -> EXECUTING",
        "APPROVED -> EXECUTING",  # the step: the state stays, the line names it
        "EXECUTING -> DRY_RUN",
    ]
    assert "step 0 dry_run" in lines[2]


def test_devmesh_debug_remediation_explains_a_refusal_on_one_line(
    edge: str, operator: CertPaths, admin_key: str
) -> None:
    refused = _devmesh(edge, operator, admin_key, "approve", "remediations/rnothere")
    assert refused.returncode == 1 and refused.stderr.startswith("devmesh: NOT_FOUND")
    assert "Traceback" not in refused.stderr
    bad = _devmesh(edge, operator, admin_key, "list", "--state", "SLEEPING")
    assert bad.returncode == 2 and "AWAITING_APPROVAL" in bad.stderr

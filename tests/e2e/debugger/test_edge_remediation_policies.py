"""Remediation policies over REST through the edge, as the README shows them: created with the
JSON enum names, listed, patched under their etag (a stale one is 409), refused with 400 for a
bad pattern, deleted."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import Rest

POLICY = {
    "categories": ["CATEGORY_NETWORK"],
    "targets": ["projects/web/"],
    "actions": ["ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF"],
    "parameters": {"delay": "30s"},
}


def test_a_policy_is_created_listed_patched_under_its_etag_and_deleted_over_rest(rest: Rest) -> None:
    policy_id = f"flaky-{uuid.uuid4().hex[:8]}"
    made = rest("POST", f"/v1/remediationPolicies?remediation_policy_id={policy_id}", json=POLICY)
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["name"] == f"remediationPolicies/{policy_id}" and body["categories"] == ["CATEGORY_NETWORK"]
    listed = rest("GET", "/v1/remediationPolicies?page_size=500")
    assert listed.status_code == 200 and body["name"] in [
        p["name"] for p in listed.json()["remediationPolicies"]
    ]
    patched = rest(
        "PATCH", f"/v1/{body['name']}?update_mask=disabled", json={"disabled": True, "etag": body["etag"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["disabled"] is True and patched.json()["etag"] != body["etag"]
    stale = rest(
        "PATCH", f"/v1/{body['name']}?update_mask=disabled", json={"disabled": False, "etag": body["etag"]}
    )
    assert stale.status_code == 409, stale.text
    assert rest("DELETE", f"/v1/{body['name']}").status_code == 200
    assert rest("GET", f"/v1/{body['name']}").status_code == 404


def test_a_policy_without_targets_is_a_bad_request(rest: Rest) -> None:
    refused = rest(
        "POST", "/v1/remediationPolicies?remediation_policy_id=no-targets", json={**POLICY, "targets": []}
    )
    assert refused.status_code == 400 and "remediation_policy.targets" in refused.text

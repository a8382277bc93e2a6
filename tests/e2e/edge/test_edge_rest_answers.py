"""REST answers through the real edge: statuses a stream's early error maps to, and the headers
an HTTP client acts on (ETag, Retry-After) that the services send."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import Rest
from tools.stack.certs import CertPaths


def test_a_watch_of_a_missing_namespace_is_404_not_a_200_with_an_error_body(rest: Rest) -> None:
    missing = f"e2e-{uuid.uuid4().hex[:10]}"
    answer = rest("GET", f"/v1/namespaces/{missing}/environments/-:watch", stream=True)
    with answer:
        assert answer.status_code == 404, answer.text
        assert answer.json()["details"][0]["reason"] == "NOT_FOUND"


def test_a_resource_s_etag_is_its_etag_header(rest: Rest) -> None:
    ns = f"e2e-{uuid.uuid4().hex[:10]}"
    created = rest("POST", "/v1/namespaces", params={"namespace_id": ns}, json={})
    assert created.status_code == 200, created.text
    fetched = rest("GET", f"/v1/namespaces/{ns}")
    assert fetched.headers["etag"] == fetched.json()["etag"] == created.json()["etag"]


def test_a_rate_limited_rest_call_says_when_to_retry_in_retry_after(
    rest: Rest, edge: str, operator: CertPaths
) -> None:
    created = rest(
        "POST", "/v1/apiKeys", json={"role": "viewer", "rateLimitPerSecond": 0.5, "rateLimitBurst": 1}
    )
    assert created.status_code == 200, created.text
    slow = Rest(edge, operator, created.json()["key"])
    answers = [slow("GET", "/v1/namespaces") for _ in range(3)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert int(limited[0].headers["retry-after"]) >= 1
    slow.session.close()

"""A webhook subscription's URI: https anywhere, http only to loopback, never malformed; a
Slack body escapes what Slack would read as markup."""

from __future__ import annotations

import json

import pytest

from services.debugger.remediation_notifications import slack_body
from services.debugger.remediation_subscriptions import check_uri
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize(
    "uri",
    [
        "https://hooks.slack.com/services/T/B/x",
        "http://127.0.0.1:8080/h",
        "http://[::1]:80/h",
        "http://localhost/h",
    ],
)
def test_https_and_loopback_http_uris_are_accepted(uri: str) -> None:
    check_uri(uri, "uri")


@pytest.mark.parametrize(
    "uri",
    [
        "http://hooks.example.com/h",
        "ftp://127.0.0.1/h",
        "http://[::1",
        "https://\x00/h",
        "https://a:b/h",
        "https://u:p@h.io/",
    ],
)
def test_other_uris_are_invalid_arguments_naming_the_field(uri: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_uri(uri, "webhook_subscription.uri")
    assert [v.field for v in refused.value.field_violations] == ["webhook_subscription.uri"]


def test_a_slack_body_escapes_markup_in_a_reason() -> None:
    body = {"remediation": "remediations/r1", "state": "APPROVED", "actor": "bob", "event_id": "1-0",
            "reason": "<!channel> & go", "risk": 0.5, "plan": [], "steps": []}  # fmt: skip
    message = json.loads(slack_body("remediation.approved", body))
    assert "<!channel>" not in json.dumps(message) and "&lt;!channel&gt; &amp; go" in json.dumps(message)

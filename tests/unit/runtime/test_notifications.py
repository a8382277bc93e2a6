"""Which URLs a webhook may have: a bad one is a reason, never an exception."""

from __future__ import annotations

import pytest

from services.runtime.notifications import check_url


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "https://hooks.example.com/x?y=1", "http://[::1]:9/"]
)
def test_http_and_https_urls_with_a_host_can_be_webhooks(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1", "is not a URL"),
        ("http://host:99999/", "is not a URL"),
        ("http://host:port/", "is not a URL"),
        ("ftp://host/", "http:// or https://"),
        ("http:///path", "with a host"),
        ("https://h/" + "x" * 2048, "2048"),
    ],
)
def test_anything_else_says_why(url: str, reason: str) -> None:
    problem = check_url(url)
    assert problem is not None and reason in problem

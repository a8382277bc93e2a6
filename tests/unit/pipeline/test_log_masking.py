"""Secret values are masked in log lines as given, base64-encoded and URL-encoded."""

from __future__ import annotations

import base64
from urllib.parse import quote

from services.pipeline.worker.masking import MASK, Masker


def test_a_secret_is_masked_raw_base64_and_url_encoded() -> None:
    secret = "s3cr3t/value+x"
    mask = Masker([secret])
    for form in (secret, base64.b64encode(secret.encode()).decode(), quote(secret, safe="")):
        assert mask(f"token={form};") == f"token={MASK};"


def test_a_multi_line_secret_is_masked_line_by_line() -> None:
    mask = Masker(["line-one\nline-two"])
    assert mask("x line-two y") == f"x {MASK} y"


def test_ordinary_text_is_left_alone() -> None:
    assert Masker(["ab"])("about a cab") == "about a cab"

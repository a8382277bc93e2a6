"""Masking secret values in log lines: as given, base64-encoded and URL-encoded."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET = 3  # shorter values would mask ordinary text


class Masker:
    """Replaces every known form of the secrets in a line."""

    def __init__(self, secrets: list[str]) -> None:
        forms: set[str] = set()
        for value in secrets:
            for part in [value, *value.splitlines()]:
                if len(part) < MIN_SECRET:
                    continue
                raw = part.encode()
                forms.update(
                    {
                        part,
                        base64.b64encode(raw).decode(),
                        base64.b64encode(raw).decode().rstrip("="),
                        base64.urlsafe_b64encode(raw).decode().rstrip("="),
                        quote(part, safe=""),
                        quote_plus(part),
                    }
                )
        self.forms = sorted(forms, key=len, reverse=True)  # a longer form first: it may hold a shorter

    def __call__(self, line: str) -> str:
        for form in self.forms:
            if form in line:
                line = line.replace(form, MASK)
        return line

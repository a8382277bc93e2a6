"""Secrets masked out of logs and events before anything is stored, cached, logged or sent to
a model.

A secret becomes `[SECRET:<kind>]` and never comes back out of the service: diagnoses,
templates, examples, cache entries and model prompts all hold the mask. The masker is one
per analysis and stateful across lines, because a PEM block spans many. Known token formats
are found by their prefixes; values after `password=`, `token=`, `secret=` and similar keys,
passwords in URLs, and high-entropy values assigned to any name are found by shape.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import re2

from services.runtime.identity.keys import PREFIX as DEVMESH_KEY_PREFIX

_TOKENS: tuple[tuple[str, str], ...] = (
    ("devmesh-api-key", re.escape(DEVMESH_KEY_PREFIX) + r"[0-9A-Za-z_]{8,}"),
    ("aws-access-key-id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    ("github-token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    ("gitlab-token", r"\bgl(?:pat|dt|rt|ptt|ft|cbt|imt|agent|oas|soat)-[A-Za-z0-9_-]{16,}"),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("slack-webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("stripe-key", r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"),
    ("npm-token", r"\bnpm_[A-Za-z0-9]{36}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    ("bearer-token", r"(?<=[Bb]earer )[A-Za-z0-9._~+/=-]{16,}"),
    # scheme://user:password@host: the password only.
    ("url-password", r"(?<=://)(?:[^\s:/@]+):[^\s@/]+(?=@)"),
)
_TOKEN_RE = re.compile("|".join(f"(?P<t{i}>{pattern})" for i, (_, pattern) in enumerate(_TOKENS)))
_TOKEN_KIND = {f"t{i}": kind for i, (kind, _) in enumerate(_TOKENS)}

# key=value, key: value, "key": "value", KEY=value, --key value: the value, quoted or not.
_SECRET_KEYS = (
    r"[\w.-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credentials?|auth[_-]?key|session[_-]?key|signature)[\w.-]*"
)
_ASSIGNED_SECRET = re.compile(
    rf"(?i)(?P<key>(?<!\[)\b{_SECRET_KEYS}[\"']?\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)
# Any name assigned a long run of token characters: kept only when it looks random.
_ASSIGNED = re.compile(r"(?P<key>(?<!\[)\b[\w.-]+[\"']?\s*[=:]\s*[\"']?)(?P<value>[A-Za-z0-9+/=_-]{20,})")
# Cheap tests first: most lines hold no secret, and the patterns above cost more than these.
_TOKEN_HINTS = (
    DEVMESH_KEY_PREFIX, "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "gh", "github_pat_",
    "gl", "xox", "hooks.slack", "AIza", "k_live_", "k_test_", "npm_", "eyJ", "earer ", "://",
)  # fmt: skip
_KEY_HINTS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "signature")
_TOKEN_HINT = re2.compile("|".join(re.escape(hint) for hint in _TOKEN_HINTS))
_KEY_HINT = re2.compile("(?i)" + "|".join(_KEY_HINTS))
# The tail of _ASSIGNED (`=` or `:`, then a long run), which every match of it holds: RE2 finds
# it in linear time, and most lines with a long run (paths, hashes) have no `=` before it.
_ASSIGNED_HINT = re2.compile(r"[=:]\s*[\"']?[A-Za-z0-9+/=_-]{20,}")
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|CERTIFICATE|OPENSSH PRIVATE KEY)[A-Z ]*-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]+-----")
_HIGH_ENTROPY_BITS = 3.5  # per character; English words and paths sit below, keys above


def mask(kind: str) -> str:
    """What a secret of `kind` is replaced with."""
    return f"[SECRET:{kind}]"


def entropy(text: str) -> float:
    """Shannon entropy of `text`, in bits per character."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _looks_random(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_letter = any(c.isalpha() for c in value)
    return has_digit and has_letter and entropy(value) >= _HIGH_ENTROPY_BITS


def _token(match: re.Match[str]) -> str:
    kind = _TOKEN_KIND[match.lastgroup or ""]
    if kind == "url-password":
        # Only the password: the user name before it stays.
        whole = match.group(0)
        return whole[: whole.index(":") + 1] + mask(kind)
    return mask(kind)


def _assigned_secret(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.startswith("[SECRET:") or not value.strip("\"'"):
        return match.group(0)
    return match.group("key") + mask("assigned-secret")


def _assigned(match: re.Match[str]) -> str:
    value = match.group("value")
    return match.group("key") + mask("high-entropy") if _looks_random(value) else match.group(0)


def mask_text(text: str) -> str:
    """`text` (one line, or a value with no PEM block) with every secret masked."""
    if not text:
        return text
    if _TOKEN_HINT.search(text):
        text = _TOKEN_RE.sub(_token, text)
    if "=" not in text and ":" not in text:
        return text
    if _KEY_HINT.search(text):
        text = _ASSIGNED_SECRET.sub(_assigned_secret, text)
    if _ASSIGNED_HINT.search(text):
        text = _ASSIGNED.sub(_assigned, text)
    return text


class SecretMasker:
    """Masks the lines of one log, in order: a PEM block is masked from its BEGIN line to its
    END line whatever the lines between look like."""

    def __init__(self) -> None:
        self._in_pem = False
        self.masked = 0  # lines changed

    def line(self, text: str) -> str:
        """`text` with its secrets masked."""
        if self._in_pem:
            if _PEM_END.search(text):
                self._in_pem = False
            self.masked += 1
            return mask("pem-block")
        begin = _PEM_BEGIN.search(text)
        if begin is not None:
            self._in_pem = _PEM_END.search(text, begin.end()) is None
            self.masked += 1
            return text[: begin.start()] + mask("pem-block")
        masked = mask_text(text)
        if masked != text:
            self.masked += 1
        return masked

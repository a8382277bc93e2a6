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
from collections.abc import Sequence

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
_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credentials?|auth[_-]?key|session[_-]?key|signature"
)
_SECRET_KEYS = rf"[\w.-]*(?:{_SECRET_WORDS})[\w.-]*"
_ASSIGNED_SECRET = re.compile(
    rf"(?i)(?P<key>(?<!\[)\b{_SECRET_KEYS}[\"']?\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)
# Any name assigned a long run of token characters: kept only when it looks random.
_ASSIGNED = re.compile(r"(?P<key>(?<!\[)\b[\w.-]+[\"']?\s*[=:]\s*[\"']?)(?P<value>[A-Za-z0-9+/=_-]{20,})")
# Cheap tests first: most lines hold no secret, and the patterns above cost more than these.
# They are plain substring tests on ASCII text; text with another character skips them (the
# patterns' `(?i)` and `\s` take in characters that these would have to spell out).
_TOKEN_HINTS = (
    DEVMESH_KEY_PREFIX, "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "gh", "github_pat_",
    "gl", "xox", "hooks.slack", "AIza", "k_live_", "k_test_", "npm_", "eyJ", "earer ", "://",
)  # fmt: skip
_KEY_HINTS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "signature")
# The tail of _ASSIGNED (`=` or `:`, then a long run), which every match of it holds: RE2 finds
# it in linear time, and most lines with a long run (paths, hashes) have no `=` before it. The
# class is Python's `\s` on ASCII (RE2's `\s` lacks \v and \x1c-\x1f).
_ASSIGNED_HINT = re2.compile(r"[=:][\t-\r \x1c-\x1f]*[\"']?[A-Za-z0-9+/=_-]{20}")
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|CERTIFICATE|OPENSSH PRIVATE KEY)[A-Z ]*-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]+-----")
# What every match of a pattern above holds, on ASCII text, none of it across a newline (so that
# one pass over lines joined by newlines finds each line that holds a match): the token formats
# without their word boundaries and look-arounds, a secret name followed by `=` or `:`, the tail
# of _ASSIGNED, a PEM block's start. RE2 on ASCII text reads `\s` and `(?i)` as Python's `re`
# does except for the characters spelt out here (Python's `\s` also holds \v and \x1c-\x1f);
# a line with a non-ASCII character is always a candidate, because Python's `(?i)` folds some
# of them into ASCII letters (the long s into `s`, the Kelvin sign into `k`).
_SPACE = r"[\t\x0b\x0c\r \x1c-\x1f]"  # Python's \s on ASCII, less the newline
_NOT_SPACE_OR = r"\t-\r \x1c-\x1f"  # inside a negated class: Python's \s on ASCII
_CANDIDATE = re2.compile(
    "|".join(
        (
            r"-----BEGIN ",
            re.escape(DEVMESH_KEY_PREFIX) + r"[0-9A-Za-z_]{8}",
            r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}",
            r"gh[pousr]_[A-Za-z0-9]{30}",
            r"github_pat_[A-Za-z0-9_]{30}",
            r"gl(?:pat|dt|rt|ptt|ft|cbt|imt|agent|oas|soat)-[A-Za-z0-9_-]{16}",
            r"xox[abposr]-[A-Za-z0-9-]{10}",
            r"https://hooks\.slack\.com/services/",
            r"AIza[0-9A-Za-z_-]{35}",
            r"[rs]k_(?:live|test)_[0-9A-Za-z]{16}",
            r"npm_[A-Za-z0-9]{36}",
            r"eyJ[A-Za-z0-9_-]{8}",
            r"[Bb]earer [A-Za-z0-9._~+/=-]{16}",
            rf"://[^{_NOT_SPACE_OR}:/@]+:[^{_NOT_SPACE_OR}@/]+@",
            rf"(?i:{_SECRET_WORDS})[\w.-]*[\"']?{_SPACE}*[=:]",
            rf"[=:]{_SPACE}*[\"']?[A-Za-z0-9+/=_-]{{20}}",
        )
    ).encode()
)
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
    ascii_only = text.isascii()
    if not ascii_only or any(hint in text for hint in _TOKEN_HINTS):
        text = _TOKEN_RE.sub(_token, text)
    if "=" not in text and ":" not in text:
        return text
    lower = text.lower()
    if not ascii_only or any(hint in lower for hint in _KEY_HINTS):
        text = _ASSIGNED_SECRET.sub(_assigned_secret, text)
    if not ascii_only or _ASSIGNED_HINT.search(text):
        text = _ASSIGNED.sub(_assigned, text)
    return text


class SecretMasker:
    """Masks the lines of one log, in order: a PEM block is masked from its BEGIN line to its
    END line whatever the lines between look like."""

    def __init__(self) -> None:
        self._in_pem = False
        self.masked = 0  # lines changed

    def lines(self, texts: Sequence[str]) -> list[str]:
        """The next lines of the log with their secrets masked: what `line` gives for each, but
        only the lines that can hold a secret (or lie in a PEM block) pay for the patterns."""
        masked = list(texts)
        candidates = _candidates(masked)
        if candidates is None:
            return [self.line(text) for text in masked]
        index, count = 0, len(masked)
        upcoming = iter(candidates)
        while index < count:
            if not self._in_pem:
                # The next candidate not yet masked: a PEM block may have taken the ones before.
                index = next((i for i in upcoming if i >= index), count)
                if index == count:
                    break
            masked[index] = self.line(masked[index])
            index += 1
        return masked

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


def _candidates(texts: list[str]) -> list[int] | None:
    """The indexes, in order, of the lines that can hold a secret; None when a line holds a
    newline (the lines cannot be told apart once joined)."""
    joined = "\n".join(texts)
    if joined.count("\n") != len(texts) - 1:
        return None
    found: set[int] = set()
    if not joined.isascii():
        found.update(i for i, text in enumerate(texts) if not text.isascii())
    # On bytes: RE2's wrapper maps every match's offsets back to characters on a str, which
    # costs more than the search; a line is told by the newlines before it either way.
    data = joined.encode(errors="replace")  # a lone surrogate is not ASCII: a candidate already
    line, last = 0, 0
    for match in _CANDIDATE.finditer(data):
        start = match.start()
        line += data.count(b"\n", last, start)
        last = start
        found.add(line)
    return sorted(found)

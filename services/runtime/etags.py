"""Etags (AIP-154), one style for every service: a quoted token derived from the revision that
last changed the resource, `"r12"`, with more parts when more than that revision can change
what a conditional update depends on (`"r12-v3a9f"`).

A caller may send an etag back with or without the quotes, or weak (`W/"r12"`, as HTTP
clients do); a stale one is ABORTED `ETAG_MISMATCH`, quoting the etag sent and the current
one, with the current one in the ErrorInfo's `current_etag` for a client that retries.
"""

from __future__ import annotations

from services.runtime.bounds import clip
from services.runtime.errors import Aborted

MAX_QUOTED = 64  # characters of a caller's etag an error quotes


def of(revision: int, *more: str) -> str:
    """The etag of a resource last changed at `revision`, and in `more` ways (short tokens)."""
    return '"' + "-".join([f"r{revision}", *more]) + '"'


def _token(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def matches(given: str, current: str) -> bool:
    """Whether an etag a caller sent names the current state (an empty one names any state)."""
    return not given or _token(given) == _token(current)


def mismatch(given: str, current: str, resource: str) -> Aborted:
    """The error for a stale etag; `resource` says what changed (`environment 'default'`)."""
    sent = clip(given, MAX_QUOTED)
    now = f"it is now {current}" if current else "it no longer exists"
    return Aborted(
        f"{resource} changed since it was read: you sent etag {sent}, {now}; re-read it and retry",
        reason="ETAG_MISMATCH",
        metadata={"current_etag": current, "given_etag": sent},
    )


def check(given: str, current: str, resource: str) -> None:
    """Raise `mismatch` unless `given` is empty or names `current`."""
    if not matches(given, current):
        raise mismatch(given, current, resource)

"""A service calling another on behalf of a principal of its own, not of its caller: the
pipeline service reads a job's secrets as the job's pipeline (`pipelines/<project>/<pipeline>`),
so the secrets service's access policies decide what each pipeline may read.

The caller names that principal in the `x-devmesh-on-behalf-of` header. The callee honours it
only from a mesh identity (the caller's own certificate, never a forwarded key or token) that
its delegation table lets act for principals under a prefix: the pipeline service for
`pipelines/`, nobody for anything else. The principal it acts as holds no role (a policy's
`role:<role>` binding never matches it): only bindings naming it, or `*`, give it access.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Any

from services.runtime.errors import PermissionDenied
from services.runtime.identity.principal import MESH, Principal

HEADER = "x-devmesh-on-behalf-of"
# What a delegated principal's name may be: path segments of ids, no wildcard, bounded.
_NAME = re.compile(r"[a-z][a-z0-9-]*(/[A-Za-z0-9][A-Za-z0-9._-]{0,62}){1,4}")

Delegates = tuple[tuple[str, str], ...]  # (SPIFFE id glob, principal-name prefix it may act for)


def parse_delegates(raw: str) -> Delegates:
    """`<SPIFFE id glob>=<prefix>,...` -> pairs; ValueError on a malformed entry."""
    pairs = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        glob, sep, prefix = entry.rpartition("=")
        if not sep or not glob or not prefix.endswith("/"):
            raise ValueError(f"expected <SPIFFE id glob>=<prefix ending in />, got {entry!r}")
        pairs.append((glob, prefix))
    return tuple(pairs)


def requested(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The principal a call asks to act for; "" when it asks for none."""
    for key, value in metadata or ():
        if key == HEADER:
            return value if isinstance(value, str) else ""
    return ""


def acting(caller: Principal, metadata: Sequence[tuple[str, Any]] | None, delegates: Delegates) -> Principal:
    """The principal a call acts as: `caller`, or the one it names on its behalf when
    `delegates` let the caller's mesh identity act for it; PERMISSION_DENIED otherwise."""
    name = requested(metadata)
    if not name:
        return caller
    allowed = (
        caller.kind == MESH
        and _NAME.fullmatch(name) is not None
        and any(
            fnmatch.fnmatchcase(caller.name, glob) and name.startswith(prefix) for glob, prefix in delegates
        )
    )
    if not allowed:
        raise PermissionDenied(
            f"{caller.name} may not act on behalf of another principal here",
            reason="DELEGATION_REFUSED",
        )
    return Principal(name=name, role="", kind=MESH)

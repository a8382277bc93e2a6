"""Roles and the permissions they grant: the one place that decides who may do what, from the
grants each service's spec declares.

A permission is `<service>.<resource>.<verb>` as the contracts declare it. A pattern matches
permissions segment by segment; `*` matches one segment, and a trailing `*` matches every
remaining segment (`shop.*` covers `shop.orders.update`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

ADMIN = "admin"
OPERATOR = "operator"
VIEWER = "viewer"
SERVICE = "service"
WORKER = "worker"
ROLE_NAMES = (ADMIN, OPERATOR, VIEWER, SERVICE, WORKER)
# admin: everything, keys, access policies and the audit trail included. operator: runs the
# platform, every change within what access policies allow. viewer: reads, no secret value.
# service: another devmesh service (a mesh identity `ns/devmesh/sa/<service>`).
# worker: a `devmesh worker` process, holding only what running a job needs.
# role -> permission patterns; admin holds "*". Installed from the services' specs (`install`)
# when a server starts: which permissions each role holds is each service's to say.
ROLES: dict[str, tuple[str, ...]] = {ADMIN: ("*",), OPERATOR: (), VIEWER: (), SERVICE: (), WORKER: ()}
# Patterns deliberately held by admin alone (who holds credentials, who may read which secret).
ADMIN_ONLY: tuple[str, ...] = ()


def install(grants: Iterable[Mapping[str, Sequence[str]]], admin_only: Iterable[str] = ()) -> None:
    """Make the role table the union of `grants` (each a service's role -> patterns)."""
    global ADMIN_ONLY
    table: dict[str, list[str]] = {role: [] for role in ROLE_NAMES}
    for service_grants in grants:
        for role, patterns in service_grants.items():
            if role not in table or role == ADMIN:
                raise ValueError(
                    f"a service grants permissions to {role!r}; roles: {', '.join(ROLE_NAMES[1:])}"
                )
            bad = [p for p in patterns if not valid_pattern(p)]
            if bad:
                raise ValueError(f"invalid permission pattern(s) for {role}: {', '.join(bad)}")
            table[role].extend(p for p in patterns if p not in table[role])
    ROLES.clear()
    ROLES.update({role: tuple(patterns) for role, patterns in table.items()})
    ROLES[ADMIN] = ("*",)
    ADMIN_ONLY = tuple(dict.fromkeys(admin_only))
    role_allows.cache_clear()


_PATTERN_RE = re.compile(r"(\*|[a-z][a-z0-9_]*)(\.(\*|[a-z][a-z0-9_]*))*")


def valid_pattern(pattern: str) -> bool:
    return len(pattern) <= 128 and _PATTERN_RE.fullmatch(pattern) is not None


def matches(pattern: str, permission: str) -> bool:
    wanted = pattern.split(".")
    have = permission.split(".")
    for i, segment in enumerate(wanted):
        if segment == "*" and i == len(wanted) - 1:
            return len(have) > i
        if i >= len(have) or (segment != "*" and segment != have[i]):
            return False
    return len(have) == len(wanted)


@cache
def role_allows(role: str, permission: str) -> bool:
    return any(matches(pattern, permission) for pattern in ROLES.get(role, ()))


def allows(role: str, narrowed_to: tuple[str, ...], permission: str) -> bool:
    """Whether a principal with `role`, optionally narrowed to `narrowed_to`, holds `permission`."""
    if not role_allows(role, permission):
        return False
    return not narrowed_to or any(matches(pattern, permission) for pattern in narrowed_to)


def covered_by(pattern: str, role: str, narrowed_to: tuple[str, ...]) -> bool:
    """Whether everything `pattern` grants is held by `role` narrowed to `narrowed_to`: a
    principal may hand on (to a key it creates, a token it exchanges) only what it holds.

    `matches` serves here with `pattern` in the permission's place: a `*` segment of `pattern`
    is then only matched by a `*` of the held pattern, so held ⊇ pattern exactly when it matches."""
    within_role = any(matches(held, pattern) for held in ROLES.get(role, ()))
    return within_role and (not narrowed_to or any(matches(h, pattern) for h in narrowed_to))


def role_covered_by(granted: str, role: str, narrowed_to: tuple[str, ...]) -> bool:
    """Whether a principal with `role` (narrowed) holds every permission of role `granted`."""
    return all(covered_by(pattern, role, narrowed_to) for pattern in ROLES[granted])


def parse_mesh_roles(raw: str) -> tuple[tuple[str, str], ...]:
    """`glob=role,glob=role` -> pairs; ValueError on a malformed entry."""
    pairs = []
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        glob, sep, role = entry.rpartition("=")
        if not sep or not glob or not role:
            raise ValueError(f"expected <spiffe id glob>=<role>, got {entry!r}")
        pairs.append((glob, role))
    return tuple(pairs)

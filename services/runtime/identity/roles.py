"""Roles and the permissions they grant: the one place that says who may do what.

A permission is `<service>.<resource>.<verb>` as the contracts declare it. A pattern matches
permissions segment by segment; `*` matches one segment, and a trailing `*` matches every
remaining segment (`config.*` covers `config.environments.update`).
"""

from __future__ import annotations

import re
from functools import cache

ADMIN = "admin"
OPERATOR = "operator"
VIEWER = "viewer"
SERVICE = "service"

_READS = (
    "config.namespaces.get",
    "config.namespaces.list",
    "config.environments.get",
    "config.environments.list",
    "config.environments.resolve",
    "config.environments.watch",
    "config.revisions.*",
)

ROLES: dict[str, tuple[str, ...]] = {
    # Everything, key management, secret access policies and the audit trail included.
    ADMIN: ("*",),
    # Runs the platform: every configuration change, secrets (as far as the secrets' access
    # policies let it) and the audit trail; no keys, no access policies.
    OPERATOR: (
        "config.namespaces.*",
        "config.environments.*",
        "config.revisions.*",
        "config.audit.list",
        "config.tokens.exchange",
        "secrets.secrets.*",
        "secrets.versions.*",
        "secrets.events.watch",
        "secrets.crypto.*",
        "secrets.policies.get",
        "secrets.policies.list",
    ),
    # Reads configuration and secrets' metadata; changes nothing, reads no secret value.
    VIEWER: (
        *_READS,
        "config.tokens.exchange",
        "secrets.secrets.get",
        "secrets.secrets.list",
        "secrets.versions.list",
        "secrets.events.watch",
    ),
    # Another devmesh service (a mesh identity `ns/devmesh/sa/<service>`): reads configuration,
    # exchanges its identity for tokens, reads secret values its access policies allow, and
    # encrypts and decrypts.
    SERVICE: (
        *_READS,
        "config.tokens.exchange",
        "secrets.secrets.get",
        "secrets.secrets.list",
        "secrets.versions.list",
        "secrets.versions.access",
        "secrets.events.watch",
        "secrets.crypto.encrypt",
        "secrets.crypto.decrypt",
    ),
}

# Permissions deliberately held by admin alone: who holds credentials and who may read which
# secret are decided here, not delegated.
ADMIN_ONLY = ("config.apikeys.*", "secrets.policies.set", "secrets.policies.delete")

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

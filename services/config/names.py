"""Resource names of the config service (AIP-122) and the ids inside them."""

from __future__ import annotations

import functools
import re

from services.runtime.errors import InvalidArgument

ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
ID_RULE = "2-63 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"
BASE_ENVIRONMENT = "default"
ALL_ENVIRONMENTS = "-"


def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument.for_field(field, f"{value[:80]!r} is not a valid id ({ID_RULE})")
    return value


def _segments(name: str, field: str, collections: tuple[str, ...]) -> list[str]:
    parts = name.split("/")
    if len(parts) != 2 * len(collections) or any(parts[2 * i] != c for i, c in enumerate(collections)):
        pattern = "/".join(f"{c}/{{{c[:-1]}}}" for c in collections)
        raise InvalidArgument.for_field(field, f"{name[:200]!r} is not a resource name of the form {pattern}")
    return parts[1::2]


# The names of every read are parsed on every call, and a busy service sees the same few again
# and again: the parsed form of the recent ones is kept (a name that fails is not).
@functools.lru_cache(maxsize=4096)
def parse_namespace(name: str, field: str = "name") -> str:
    (namespace,) = _segments(name, field, ("namespaces",))
    return check_id(namespace, field)


@functools.lru_cache(maxsize=4096)
def parse_environment(name: str, field: str = "name", *, allow_all: bool = False) -> tuple[str, str]:
    namespace, environment = _segments(name, field, ("namespaces", "environments"))
    check_id(namespace, field)
    if not (allow_all and environment == ALL_ENVIRONMENTS):
        check_id(environment, field)
    return namespace, environment


def parse_revision(name: str, field: str = "name") -> tuple[str, int]:
    namespace, revision = _segments(name, field, ("namespaces", "revisions"))
    check_id(namespace, field)
    if not revision.isdigit() or int(revision) < 1 or len(revision) > 18:
        raise InvalidArgument.for_field(field, f"{revision[:40]!r} is not a revision number")
    return namespace, int(revision)


def namespace_name(namespace: str) -> str:
    return f"namespaces/{namespace}"


def environment_name(namespace: str, environment: str) -> str:
    return f"namespaces/{namespace}/environments/{environment}"


def revision_name(namespace: str, revision: int) -> str:
    return f"namespaces/{namespace}/revisions/{revision}"

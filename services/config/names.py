"""Resource names of the config service (AIP-122) and the ids inside them."""

from __future__ import annotations

from services.runtime.resource_names import AIP_ID, NUMBER, WILDCARD, ResourceName

BASE_ENVIRONMENT = "default"
ALL_ENVIRONMENTS = WILDCARD

NAMESPACE = ResourceName("namespaces/{namespace}")
ENVIRONMENT = ResourceName("namespaces/{namespace}/environments/{environment}")
ANY_ENVIRONMENT = ResourceName(
    "namespaces/{namespace}/environments/{environment}", wildcards=frozenset({"environment"})
)
REVISION = ResourceName("namespaces/{namespace}/revisions/{revision}", {"revision": NUMBER})


def check_id(value: str, field: str) -> str:
    return AIP_ID.check(value, field)


def parse_namespace(name: str, field: str = "name") -> str:
    (namespace,) = NAMESPACE.parse(name, field)
    return namespace


def parse_environment(name: str, field: str = "name", *, allow_all: bool = False) -> tuple[str, str]:
    """(namespace, environment); with `allow_all`, the environment may be `-` (every one)."""
    namespace, environment = (ANY_ENVIRONMENT if allow_all else ENVIRONMENT).parse(name, field)
    return namespace, environment


def parse_revision(name: str, field: str = "name") -> tuple[str, int]:
    namespace, revision = REVISION.parse(name, field)
    return namespace, int(revision)


def namespace_name(namespace: str) -> str:
    return NAMESPACE.format(namespace)


def environment_name(namespace: str, environment: str) -> str:
    return ENVIRONMENT.format(namespace, environment)


def revision_name(namespace: str, revision: int) -> str:
    return REVISION.format(namespace, str(revision))

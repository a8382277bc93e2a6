"""The config service's records, as the store keeps them and the domain returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.config.documents import Document
from services.runtime import etags

# Revision actions (the proto enum is Action with an ACTION_ prefix).
NAMESPACE_CREATED = "NAMESPACE_CREATED"
NAMESPACE_UPDATED = "NAMESPACE_UPDATED"
NAMESPACE_DELETED = "NAMESPACE_DELETED"
ENVIRONMENT_CREATED = "ENVIRONMENT_CREATED"
ENVIRONMENT_UPDATED = "ENVIRONMENT_UPDATED"
ENVIRONMENT_DELETED = "ENVIRONMENT_DELETED"
ENVIRONMENT_ROLLED_BACK = "ENVIRONMENT_ROLLED_BACK"

ENVIRONMENT_WRITES = {ENVIRONMENT_CREATED, ENVIRONMENT_UPDATED, ENVIRONMENT_ROLLED_BACK}


def etag_for(revision: int) -> str:
    """Etags derive from the revision that last changed a resource: unique, never reused."""
    return etags.of(revision)


@dataclass
class Namespace:
    id: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    revision: int = 0  # latest revision of the namespace
    meta_revision: int = 0  # revision that last changed the fields above
    create_time_us: int = 0
    update_time_us: int = 0

    @property
    def etag(self) -> str:
        return etag_for(self.meta_revision)


@dataclass
class Environment:
    namespace: str
    id: str
    content: Document
    revision: int
    create_time_us: int
    update_time_us: int

    @property
    def etag(self) -> str:
        return etag_for(self.revision)


@dataclass
class Revision:
    namespace: str
    revision: int
    action: str
    environment: str = ""
    content: Document | None = None
    author: str = ""
    reason: str = ""
    create_time_us: int = 0
    source_revision: int = 0


@dataclass(frozen=True)
class Resolved:
    namespace: str
    environment: str
    content: Document
    sources: list[tuple[str, str]]
    revision: int

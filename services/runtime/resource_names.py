"""AIP-122 resource names for every service: a pattern such as
`namespaces/{namespace}/environments/{environment}`, the rule each id in it follows, and one
parser whose errors name the request field and say what was expected.

    ENVIRONMENT = ResourceName("namespaces/{namespace}/environments/{environment}")
    ns, env = ENVIRONMENT.parse(request.name)          # INVALID_ARGUMENT naming `name`
    ENVIRONMENT.format(ns, env)                        # "namespaces/shop/environments/prod"

Ids follow AIP-122's rule unless a pattern says otherwise for a variable (one that takes
names from elsewhere, with upper case and dots; revision numbers). A variable may accept `-`, AIP-159's "every
one of them", where a method reads across a collection.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.errors import InvalidArgument

WILDCARD = "-"
_QUOTED = 80  # characters of a bad id or name an error quotes


@dataclass(frozen=True)
class IdRule:
    """What one id must look like, and how to say so."""

    regex: str
    description: str
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.regex))

    def matches(self, value: str) -> bool:
        return self._compiled.fullmatch(value) is not None

    def check(self, value: str, field: str) -> str:
        """`value`, or INVALID_ARGUMENT naming `field`."""
        if not self.matches(value):
            raise InvalidArgument.for_field(
                field, f"{value[:_QUOTED]!r} is not a valid id ({self.description})"
            )
        return value


AIP_ID = IdRule(
    r"[a-z][a-z0-9-]{0,61}[a-z0-9]",
    "2-63 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'",
)
NUMBER = IdRule(r"[1-9][0-9]{0,17}", "a positive number")


class ResourceName:
    """One resource-name pattern: `collection/{variable}` pairs, each variable with its id rule."""

    def __init__(
        self,
        pattern: str,
        ids: Mapping[str, IdRule] | None = None,
        *,
        wildcards: frozenset[str] = frozenset(),
    ) -> None:
        parts = pattern.split("/")
        if len(parts) % 2 or not all(p.startswith("{") and p.endswith("}") for p in parts[1::2]):
            raise ValueError(f"{pattern!r} is not a pattern of collection/{{variable}} pairs")
        self.pattern = pattern
        self.collections = tuple(parts[0::2])
        self.variables = tuple(p[1:-1] for p in parts[1::2])
        rules = dict(ids or {})
        self._rules = tuple(rules.get(v, AIP_ID) for v in self.variables)
        self._wildcards = wildcards
        # The names of every read are parsed on every call, and a busy service sees the same
        # few again and again: the parsed form of recent ones is kept (a name that fails is not).
        self.parse = functools.lru_cache(maxsize=4096)(self._parse)

    def _parse(self, name: str, field: str = "name") -> tuple[str, ...]:
        """The ids in `name`, in the pattern's order; INVALID_ARGUMENT naming `field`."""
        parts = name.split("/")
        if len(parts) != 2 * len(self.collections) or tuple(parts[0::2]) != self.collections:
            raise InvalidArgument.for_field(
                field, f"{name[:200]!r} is not a resource name of the form {self.pattern}"
            )
        ids = tuple(parts[1::2])
        for variable, rule, value in zip(self.variables, self._rules, ids, strict=True):
            if value == WILDCARD and variable in self._wildcards:
                continue
            rule.check(value, field)
        return ids

    def format(self, *ids: str) -> str:
        """The name of the resource with these ids."""
        if len(ids) != len(self.collections):
            raise ValueError(f"{self.pattern} takes {len(self.collections)} ids, not {len(ids)}")
        return "/".join(f"{c}/{i}" for c, i in zip(self.collections, ids, strict=True))

    def __repr__(self) -> str:
        return f"ResourceName({self.pattern!r})"

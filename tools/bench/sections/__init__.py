"""The bench sections, one module each, found here by the command: a module of this package
that declares `SECTION = Section(...)` is a section, with nothing to register elsewhere.

A section starts what it measures on free loopback ports (tools.stack), measures it against
a baseline in the same run with `tools.bench.load`, stops everything it started, and returns
its figures, goals included (reported, never asserted). Its module docstring says what it
measures; the first line is what `python -m tools.bench --help` lists.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Section:
    """One section of the benchmarks, as its module declares it."""

    name: str  # `python -m tools.bench <name>`
    run: Callable[[float], dict[str, Any]]  # seconds measured per target -> its figures
    # Its place in `make bench` (`python -m tools.bench all`), lowest first; None: on its own
    # only (a part of another section, say). The order is the one figures were taken in so
    # far: a section that runs first finds a cooler machine than one that runs after others.
    order: int | None
    # Its figures at the top of the JSON instead of under `name` (the config section's, since
    # before there were sections), so that figures from earlier runs stay comparable.
    top_level: bool = False
    summary: str = ""  # what it measures, in a line (the module docstring's first, when empty)


def discover() -> dict[str, Section]:
    """Every section of this package, by name."""
    found: dict[str, Section] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__, prefix=f"{__name__}."), key=lambda m: m.name):
        module = importlib.import_module(module_info.name)
        section = getattr(module, "SECTION", None)
        if not isinstance(section, Section):
            continue
        if section.name in found:
            raise RuntimeError(f"two bench sections are named {section.name!r}: {module.__name__} is one")
        if not section.summary:
            first_line = (module.__doc__ or "").strip().partition("\n")[0]
            section = Section(section.name, section.run, section.order, section.top_level, first_line)
        found[section.name] = section
    return found


def in_all(sections: dict[str, Section]) -> list[Section]:
    """The sections `make bench` runs, in their order."""
    return sorted((s for s in sections.values() if s.order is not None), key=lambda s: (s.order or 0, s.name))

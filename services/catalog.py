"""Every devmesh service, one line each: its name and the module whose `SPEC` declares it.

A spec is imported when first asked for.
"""

from __future__ import annotations

import importlib

from services.runtime.spec import ServiceSpec

SERVICES: dict[str, str] = {
    "config": "services.config.app",
    "secrets": "services.secrets.app",
    "cost": "services.cost.app",
    "pipeline": "services.pipeline.app",
    "debugger": "services.debugger.app",
}


def spec(name: str) -> ServiceSpec:
    """The spec of the service `name` (KeyError for an unknown one)."""
    found = importlib.import_module(SERVICES[name]).SPEC
    assert isinstance(found, ServiceSpec) and found.name == name, f"{SERVICES[name]}.SPEC is not {name}'s"
    return found


def every() -> list[ServiceSpec]:
    """Every service of the mesh."""
    return [spec(name) for name in SERVICES]


def resolve(requested: list[str]) -> list[ServiceSpec]:
    """Specs for `requested` names (`all`, or none, means every service); ValueError names unknown ones."""
    names = list(SERVICES) if "all" in requested or not requested else requested
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}; available: {', '.join(SERVICES)} or all")
    return [spec(name) for name in dict.fromkeys(names)]

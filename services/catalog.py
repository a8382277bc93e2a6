"""The devmesh services a process can host, by name. Loaded lazily: hosting `config` does not
import the others."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from services.runtime.server import ServiceFactory

# name -> module exposing `build(runtime) -> ServiceBinding`, `SETTINGS` (a settings class),
# `PROTO_SERVICES` (the gRPC services it serves) and `VAULT_POLICY` (HCL: what it may do in Vault)
SERVICES: dict[str, str] = {
    "config": "services.config.app",
    "secrets": "services.secrets.app",
}


@dataclass(frozen=True)
class ServiceModule:
    name: str
    build: ServiceFactory
    settings: type
    proto_services: tuple[str, ...]
    vault_policy: str


def _module(name: str) -> ModuleType:
    return importlib.import_module(SERVICES[name])


def resolve(requested: list[str]) -> list[ServiceModule]:
    """Service modules for `requested` names (`all` means every service); ValueError names unknown ones."""
    names = list(SERVICES) if "all" in requested or not requested else requested
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s): {', '.join(unknown)}; available: {', '.join(SERVICES)} or all")
    modules = []
    for name in dict.fromkeys(names):
        module = _module(name)
        modules.append(
            ServiceModule(
                name, module.build, module.SETTINGS, tuple(module.PROTO_SERVICES), module.VAULT_POLICY
            )
        )
    return modules

"""Check the boundaries between the runtime and the services with import-linter, with
contracts derived from the catalog (a new service is covered by its catalog line alone):

- `services.runtime` imports no service (nor the catalog or the command that list them);
- the services are independent: one calls another through its generated stubs only;
- a service's domain modules import no `grpc`. Which modules may: `app` (its spec and
  wiring), `servicer` and `*_servicer` (proto <-> domain), `*_client` (its calls to peers),
  `cli` (its `devmesh <service>` commands, which call the mesh).

    python -m tools.import_contracts       # what `make lint` runs
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

from services import catalog

ROOT = Path(__file__).resolve().parent.parent


def grpc_allowed(module: str) -> bool:
    """Whether a service module may import grpc, by its name."""
    name = module.rsplit(".", 1)[-1]
    return name in ("app", "servicer", "cli") or name.endswith(("_servicer", "_client"))


def domain_modules(service: str) -> list[str]:
    """The modules of a service that may not import grpc; a subpackage's by each of its
    modules, so that it may hold clients too (the worker's calls to the pipeline service)."""
    found = pkgutil.walk_packages([str(ROOT / "services" / service)], prefix=f"services.{service}.")
    return sorted(m.name for m in found if not m.ispkg and not grpc_allowed(m.name))


def config_text() -> str:
    services = [f"services.{name}" for name in catalog.SERVICES]
    lines = [
        "[importlinter]",
        "root_packages =\n    services",
        "include_external_packages = True",
        "",
        "[importlinter:contract:runtime-names-no-service]",
        "name = services.runtime imports no service",
        "type = forbidden",
        "source_modules =\n    services.runtime",
        "forbidden_modules =\n"
        + "\n".join(f"    {m}" for m in [*services, "services.catalog", "services.cli"]),
        "",
        "[importlinter:contract:services-are-independent]",
        "name = a service imports no other service's modules",
        "type = independence",
        "modules =\n" + "\n".join(f"    {m}" for m in services),
        "",
        "[importlinter:contract:domain-modules-import-no-grpc]",
        "name = domain modules import no grpc (only app, servicers and clients do)",
        "type = forbidden",
        "source_modules =\n" + "\n".join(f"    {m}" for s in catalog.SERVICES for m in domain_modules(s)),
        "forbidden_modules =\n    grpc",
        "allow_indirect_imports = True",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".ini", prefix="importlinter-") as config:
        config.write(config_text())
        config.flush()
        command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo", config.name]
        return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

"""What a service declares about itself, once, in its own package (`services/<name>/app.py`).

The runtime, the tools and the tests derive everything else from these specs: the roles'
permissions and which calls are audited as changes (the runtime), the processes, peers,
certificates and Vault policies of the local stack, the Envoy routes, the Kubernetes
manifests, the test fixtures. `services/catalog.py` lists them, one line per service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.runtime.identity import roles

if TYPE_CHECKING:
    from services.runtime.server import Runtime, ServiceBinding

# Permission verbs that change nothing, for services that do not say otherwise.
DEFAULT_READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class ServiceSpec:
    """One devmesh service: its name, how to build it, and what it needs and grants."""

    name: str  # `devmesh serve <name>`, its SPIFFE service account, its Deployment
    summary: str  # one line: what it does
    settings: type  # its settings class (`DEVMESH_<NAME>_*`), loaded once per process
    build: Callable[[Runtime, Any], ServiceBinding]  # (runtime, its loaded settings) -> binding
    # Proto service full name -> the servicer class that serves it. A method the servicer does
    # not define answers UNIMPLEMENTED; the contract tests fail unless it is in `unimplemented`.
    servicers: Mapping[str, type]
    # Role -> the permission patterns of this service the role holds (admin holds everything).
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Patterns deliberately held by admin alone (the contract tests check nothing else is).
    admin_only: tuple[str, ...] = ()
    # Permission verbs (the last segment) of calls that change nothing: not audited.
    read_verbs: frozenset[str] = DEFAULT_READ_VERBS
    # Vault: HCL beyond what every service may (vault.RUNTIME_POLICY), and the transit keys
    # (name -> creation parameters) the bootstrap creates for it.
    vault_policy: str = ""
    transit_keys: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # Other services it calls, by name: the stack and the manifests give it their addresses
    # (DEVMESH_PEERS); `Runtime.peer_channel` opens a channel to one.
    peers: tuple[str, ...] = ()
    # Full method names (`/pkg.Service/Method`) deliberately not built yet.
    unimplemented: frozenset[str] = frozenset()
    # The module of its `devmesh <name> ...` commands, if it has any: it exposes
    # `add_commands(parser)`, which adds subcommands that each set `run(args) -> exit status`.
    commands: str = ""

    @property
    def proto_services(self) -> tuple[str, ...]:
        return tuple(self.servicers)


def install_roles(specs: Iterable[ServiceSpec]) -> None:
    """Give the runtime's roles what `specs` (the whole mesh) grant."""
    mesh = list(specs)
    roles.install((spec.grants for spec in mesh), (pattern for spec in mesh for pattern in spec.admin_only))

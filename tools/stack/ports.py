"""Where every part of a local stack listens, decided once before anything starts."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tools.stack.processes import StackError, free_port

# Offsets from the base port (`make run`'s DEVMESH_BASE_PORT); the README lists them too.
SERVICE_OFFSET = 51  # + the service's index in the catalog
METRICS_OFFSET = 90  # + the service's index: its Prometheus /metrics
VALKEY_OFFSET = 79
RATELIMIT_VALKEY_OFFSET = 80
OPENBAO_OFFSET = 200
OPENBAO_CLUSTER_OFFSET = 201
MODEL_SERVER_OFFSET = 202  # the optional local model (`make llm`)
EDGE_OFFSET = 443
ENVOY_ADMIN_OFFSET = 901


@dataclass(frozen=True)
class PortPlan:
    """Every port of one stack. From a base port, each is a fixed offset from it; from base 0,
    each is a distinct port that was free when the plan was made."""

    valkey: int
    ratelimit_valkey: int
    openbao: int
    openbao_cluster: int
    edge: int
    envoy_admin: int
    services: Mapping[str, int]
    metrics: Mapping[str, int]
    model_server: int = 0

    @classmethod
    def from_base(cls, base: int, services: Sequence[str]) -> PortPlan:
        """The plan for `services` (in catalog order) from `base`; 0 picks free ports."""
        taken: set[int] = set()

        def port(offset: int) -> int:
            if base:
                return base + offset
            found = free_port()
            while found in taken:  # unbound, a port can be named twice (the kernel's choice does)
                found = free_port()
            taken.add(found)
            return found

        return cls(
            valkey=port(VALKEY_OFFSET),
            ratelimit_valkey=port(RATELIMIT_VALKEY_OFFSET),
            openbao=port(OPENBAO_OFFSET),
            openbao_cluster=port(OPENBAO_CLUSTER_OFFSET),
            edge=port(EDGE_OFFSET),
            envoy_admin=port(ENVOY_ADMIN_OFFSET),
            services={name: port(SERVICE_OFFSET + i) for i, name in enumerate(services)},
            metrics={name: port(METRICS_OFFSET + i) for i, name in enumerate(services)},
            model_server=port(MODEL_SERVER_OFFSET),
        )


def check_listeners(listeners: Mapping[str, str]) -> None:
    """Refuse, before anything starts, a plan in which two parts would listen on one address
    or one would listen where something already does. `listeners`: what -> host:port."""
    wanted: dict[tuple[str, int], list[str]] = {}
    for what, addr in listeners.items():
        host, _, digits = addr.rpartition(":")
        wanted.setdefault((host.strip("[]"), int(digits)), []).append(what)
    for (host, port), parts in wanted.items():
        if len(parts) > 1:
            raise StackError(
                f"{' and '.join(parts)} are given the same address, {host}:{port}; each needs its own"
            )
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                # As the servers themselves do: a port left in TIME_WAIT by the last run is free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as exc:
            raise StackError(
                f"{parts[0]} cannot listen on {host}:{port}: {exc.strerror}; is another stack or "
                "program using it? Stop it, or choose another DEVMESH_BASE_PORT"
            ) from None

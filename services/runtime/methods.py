"""What the contracts say about each RPC, read once from the generated descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pool

from devmesh.options.v1 import options_pb2


@dataclass(frozen=True)
class MethodInfo:
    """One RPC: its names, the permission and rate-limit cost its contract declares."""

    full_method: str  # "/devmesh.config.v1.ConfigService/GetNamespace"
    service: str  # "devmesh.config.v1.ConfigService"
    method: str  # "GetNamespace"
    short_service: str  # "config": the devmesh service that owns the RPC
    permission: str
    rate_limit_cost: int
    server_streaming: bool
    client_streaming: bool

    @property
    def error_domain(self) -> str:
        return f"{self.short_service}.devmesh"


@cache
def method_info(full_method: str) -> MethodInfo:
    """Look up `/package.Service/Method` in the default descriptor pool.

    Methods outside devmesh (health, reflection) get an empty permission: they are open.
    """
    service, _, method = full_method.lstrip("/").rpartition("/")
    parts = service.split(".")
    short = parts[1] if len(parts) > 2 and parts[0] == "devmesh" else parts[0]
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        return MethodInfo(full_method, service, method, short, "", 1, False, False)
    policy = descriptor.GetOptions().Extensions[options_pb2.policy]
    return MethodInfo(
        full_method=full_method,
        service=service,
        method=method,
        short_service=short,
        permission=policy.permission,
        rate_limit_cost=policy.rate_limit_cost or 1,
        server_streaming=descriptor.server_streaming,
        client_streaming=descriptor.client_streaming,
    )

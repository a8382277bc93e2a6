"""What the contracts say about each RPC, read once from the generated descriptors, and what the
services' specs say of it (whether it changes anything)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pool, message_factory

from devmesh.options.v1 import options_pb2


@dataclass(frozen=True)
class MethodInfo:
    """One RPC: its names, the permission and rate-limit cost its contract declares."""

    full_method: str  # "/devmesh.shop.v1.ShopService/GetOrder"
    service: str  # "devmesh.shop.v1.ShopService"
    method: str  # "GetNamespace"
    short_service: str  # "shop": the devmesh service that owns the RPC
    permission: str
    rate_limit_cost: int
    server_streaming: bool
    client_streaming: bool
    public: bool = False  # callable without credentials (health, reflection, JWKS)
    mutation: bool = False  # changes something: audited whatever its outcome
    input_type: str = field(default="", compare=False)

    @property
    def error_domain(self) -> str:
        return f"{self.short_service}.devmesh"

    @property
    def action(self) -> str:
        """What an audit event calls this call: its permission, else its method."""
        return self.permission or self.full_method

    def decode_request(self, raw: bytes) -> Any | None:
        """The request message, or None when there is no known type or it does not parse."""
        if not self.input_type:
            return None
        try:
            cls = message_factory.GetMessageClass(
                descriptor_pool.Default().FindMessageTypeByName(self.input_type)
            )
            return cls.FromString(raw)
        except Exception:
            return None


class MethodTable:
    """MethodInfo of every method a server may be called on, made on first use.

    `read_verbs`: proto service -> the permission verbs of its calls that change nothing (its
    spec's); every other call with a permission is a mutation.
    """

    def __init__(self, read_verbs: Mapping[str, frozenset[str]]) -> None:
        self._read_verbs = dict(read_verbs)
        self._known: dict[str, MethodInfo] = {}

    def info(self, full_method: str) -> MethodInfo:
        """`/package.Service/Method` as the default descriptor pool describes it. Methods outside
        devmesh (health, reflection) are public: no permission, no rate limit."""
        found = self._known.get(full_method)
        if found is None:
            found = self._known[full_method] = self._describe(full_method)
        return found

    def _describe(self, full_method: str) -> MethodInfo:
        service, _, method = full_method.lstrip("/").rpartition("/")
        parts = service.split(".")
        short = parts[1] if len(parts) > 2 and parts[0] == "devmesh" else parts[0]
        try:
            descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
        except KeyError:
            return MethodInfo(full_method, service, method, short, "", 1, False, False, public=True)
        policy = descriptor.GetOptions().Extensions[options_pb2.policy]
        verb = policy.permission.rsplit(".", 1)[-1]
        return MethodInfo(
            full_method=full_method,
            service=service,
            method=method,
            short_service=short,
            permission=policy.permission,
            rate_limit_cost=policy.rate_limit_cost or 1,
            server_streaming=descriptor.server_streaming,
            client_streaming=descriptor.client_streaming,
            public=policy.public or parts[0] != "devmesh",  # health, reflection: open
            mutation=bool(policy.permission) and verb not in self._read_verbs.get(service, frozenset()),
            input_type=descriptor.input_type.full_name,
        )


def resource_of(request: Any) -> str:
    """The resource a request names: its `name`, its `parent`, or the `name` of the resource
    message it carries (UpdateEnvironment's `environment`)."""
    if request is None:
        return ""
    for name in ("name", "parent"):
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return value
    for fd in request.DESCRIPTOR.fields:
        if fd.message_type is not None and not fd.is_repeated and request.HasField(fd.name):
            value = getattr(getattr(request, fd.name), "name", None)
            if isinstance(value, str) and value:
                return value
    return ""

"""One audit event per mutation (whatever its outcome) and per refused credential or
permission (reads included). Runs outside the access check so that it sees refusals.

Reads that succeed are not audited: a hot read at thousands of calls a second would drown
the trail. Public methods are never audited.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from grpc import aio

from services.runtime import request_context
from services.runtime.audit import AuditLog
from services.runtime.identity.authenticator import peer_spiffe_id
from services.runtime.interceptors.base import Metadata, metadata_value
from services.runtime.logging import get_logger
from services.runtime.methods import MethodInfo, resource_of

log = get_logger(__name__)

_REFUSALS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
# The caller's address (ip:port) as the edge saw it; the edge sets it on every request it
# forwards, replacing whatever the caller sent (envoy/edge.yaml).
CLIENT_ADDRESS_HEADER = "x-devmesh-client-address"
_MAX_ADDRESS = 64  # an IPv6 address with a port is at most 47 characters


def audited_peer(peer: str, peer_identity: str, client_address: str, edge_identities: Set[str]) -> str:
    """The peer an audit event records: for a call through the edge, the caller's own address
    with the edge as the hop (`ipv4:127.0.0.1:50312 via edge ipv4:127.0.0.1:40112`). A
    forwarded address is believed only when the direct peer proves to be an edge (its SPIFFE
    id); from anyone else it is ignored."""
    if not client_address or not peer_identity or peer_identity not in edge_identities:
        return peer
    address = client_address[:_MAX_ADDRESS]
    family = "ipv6" if address.startswith("[") else "ipv4"
    return f"{family}:{address} via edge {peer}"


class Audit:
    """Records a call's audit event once its outcome is known."""

    def __init__(self, audit: AuditLog, edge_identities: Set[str] = frozenset()) -> None:
        self._audit = audit
        self._edge_identities = edge_identities

    def peer_of(self, context: aio.ServicerContext, metadata: Metadata, peer: str) -> str:
        """The peer to record for this call (read while the call is open: grpc may free the
        context's auth data by its end). Only a call carrying the edge's address header pays
        for reading the peer's certificate."""
        client_address = metadata_value(metadata, CLIENT_ADDRESS_HEADER)
        if not client_address:
            return peer
        return audited_peer(peer, peer_spiffe_id(context), client_address, self._edge_identities)

    @staticmethod
    def applies(info: MethodInfo) -> bool:
        return not info.public

    async def record(
        self,
        info: MethodInfo,
        raw: Any,
        metadata: Metadata,
        peer: str,
        notes: dict[str, str],
        code: str,
    ) -> None:
        """Write the event when the call was a mutation or a refusal; never raises."""
        if not info.mutation and code not in _REFUSALS:
            return
        try:
            resource = notes.pop("resource", "") or resource_of(
                info.decode_request(raw) if isinstance(raw, bytes) else raw
            )
            await self._audit.record(
                actor=request_context.principal_name(),
                action=info.action,
                resource=resource,
                result=code,
                reason=request_context.error_reason.get() if code != "OK" else "",
                request_id=request_context.request_id.get(),
                peer=peer,
                method=info.full_method,
                service=info.short_service,
                details=notes,
            )
        except Exception:  # the call's outcome stands; the log keeps the failure
            log.exception("audit.record_failed", method=info.full_method)

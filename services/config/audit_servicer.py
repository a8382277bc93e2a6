"""AuditService over gRPC: the audit trail, filtered and paged."""

from __future__ import annotations

from grpc import aio

from devmesh.config.v1 import audit_pb2, audit_pb2_grpc
from services.config import audit_events
from services.runtime import protos
from services.runtime.redis_client import Redis


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: aio.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        filters = audit_events.Filters(
            actor=request.actor,
            resource_prefix=request.resource_prefix,
            action=request.action,
            result=request.result,
            start_us=protos.microseconds(request.start_time, "start_time")
            if request.HasField("start_time")
            else 0,
            end_us=protos.microseconds(request.end_time, "end_time") if request.HasField("end_time") else 0,
        )
        events, token = await audit_events.list_events(
            self._redis, filters, request.page_size, request.page_token
        )
        return audit_pb2.ListAuditEventsResponse(
            audit_events=[
                audit_pb2.AuditEvent(
                    id=event.id,
                    time=protos.optional_timestamp(int(event.fields.get("time_us", "0") or 0)),
                    actor=event.fields.get("actor", ""),
                    action=event.fields.get("action", ""),
                    resource=event.fields.get("resource", ""),
                    result=event.fields.get("result", ""),
                    reason=event.fields.get("reason", ""),
                    request_id=event.fields.get("request_id", ""),
                    peer=event.fields.get("peer", ""),
                    method=event.fields.get("method", ""),
                    service=event.fields.get("service", ""),
                    details=event.details,
                )
                for event in events
            ],
            next_page_token=token,
        )

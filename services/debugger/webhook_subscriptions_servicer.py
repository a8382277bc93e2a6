"""The webhook-subscription RPCs of RemediationService: protos to domain calls and back. A
mixin of RemediationServicer, so the remediation RPCs and these stay in their own modules."""

from __future__ import annotations

from google.protobuf import empty_pb2
from grpc import aio

from devmesh.debugger.v1 import webhook_subscriptions_pb2 as pb
from services.debugger.remediation_subscriptions import (
    SUBSCRIPTION,
    Fields,
    PayloadFormat,
    Subscription,
    Subscriptions,
)
from services.runtime import pagination, protos, request_context
from services.runtime.errors import InvalidArgument

_FORMAT_PREFIX = "PAYLOAD_FORMAT_"


def subscription_proto(s: Subscription) -> pb.WebhookSubscription:
    """A subscription as the contract shows it (the secret's name, never its key)."""
    return pb.WebhookSubscription(
        name=s.name,
        uri=s.uri,
        event_types=s.event_types,
        signing_secret=s.signing_secret,
        payload_format=pb.PayloadFormat.Value(_FORMAT_PREFIX + s.payload_format),
        description=s.description,
        creator=s.creator,
        create_time=protos.timestamp(s.create_time_us),
        update_time=protos.timestamp(s.update_time_us),
        etag=s.etag,
    )


def _fields(message: pb.WebhookSubscription, field: str) -> Fields:
    if message.payload_format not in pb.PayloadFormat.values():
        raise InvalidArgument.for_field(
            f"{field}.payload_format", f"{message.payload_format} is not a PayloadFormat value"
        )
    payload_format = (
        PayloadFormat(pb.PayloadFormat.Name(message.payload_format).removeprefix(_FORMAT_PREFIX)).value
        if message.payload_format != pb.PAYLOAD_FORMAT_UNSPECIFIED
        else ""
    )
    return Fields(
        uri=message.uri,
        event_types=tuple(message.event_types),
        signing_secret=message.signing_secret,
        payload_format=payload_format,
        description=message.description,
    )


class WebhookSubscriptionRpcs:
    """Create, Get, List, Update and Delete WebhookSubscription."""

    _subscriptions: Subscriptions

    async def CreateWebhookSubscription(
        self, request: pb.CreateWebhookSubscriptionRequest, context: aio.ServicerContext
    ) -> pb.WebhookSubscription:
        made = await self._subscriptions.create(
            request.webhook_subscription_id,
            _fields(request.webhook_subscription, "webhook_subscription"),
            request_context.current_caller().name,
        )
        request_context.note_audit(resource=made.name)
        return subscription_proto(made)

    async def GetWebhookSubscription(
        self, request: pb.GetWebhookSubscriptionRequest, context: aio.ServicerContext
    ) -> pb.WebhookSubscription:
        return subscription_proto(await self._subscriptions.get(request.name))

    async def ListWebhookSubscriptions(
        self, request: pb.ListWebhookSubscriptionsRequest, context: aio.ServicerContext
    ) -> pb.ListWebhookSubscriptionsResponse:
        size = pagination.page_size(request.page_size)
        query = ("webhookSubscriptions",)
        after = pagination.decode_token(request.page_token, query) or ""
        found, last = await self._subscriptions.page(after, size)
        return pb.ListWebhookSubscriptionsResponse(
            webhook_subscriptions=[subscription_proto(s) for s in found],
            next_page_token=pagination.encode_token(last, query) if last else "",
        )

    async def UpdateWebhookSubscription(
        self, request: pb.UpdateWebhookSubscriptionRequest, context: aio.ServicerContext
    ) -> pb.WebhookSubscription:
        message = request.webhook_subscription
        updated = await self._subscriptions.update(
            message.name,
            _fields(message, "webhook_subscription"),
            list(request.update_mask.paths),
            message.etag,
        )
        request_context.note_audit(resource=updated.name)
        return subscription_proto(updated)

    async def DeleteWebhookSubscription(
        self, request: pb.DeleteWebhookSubscriptionRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        SUBSCRIPTION.parse(request.name)
        await self._subscriptions.delete(request.name, request.etag)
        request_context.note_audit(resource=request.name)
        return empty_pb2.Empty()

"""Webhook subscriptions to remediation events, the domain: what a subscription is, what is a
valid one, and create, read, list, update, delete.

A subscription names where to POST (https://, or http:// to loopback only: a plain-text POST
to another host would carry the events in the clear), which event types to send (empty: all),
the body's format (JSON, or Slack's `{"text", "blocks"}`), and the secret in the secrets
service whose latest version signs the POSTs. Only the secret's name is kept: the key itself is
read when a POST is queued, and never returned or logged.
"""

from __future__ import annotations

import enum
import ipaddress
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.debugger.remediation_plan import SECRET
from services.runtime import etags, notifications
from services.runtime.errors import Aborted, AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from services.runtime.resource_names import ResourceName

SUBSCRIPTION = ResourceName("webhookSubscriptions/{webhook_subscription}")
MAX_SUBSCRIPTIONS = 100
MAX_EVENT_TYPES = 16
MAX_DESCRIPTION_CHARS = 256
# Every event type a remediation change is announced as (see remediation_notifications).
EVENT_TYPES = (
    "remediation.proposed",
    "remediation.approval",
    "remediation.approved",
    "remediation.rejected",
    "remediation.cancelled",
    "remediation.executing",
    "remediation.step",
    "remediation.undone",
    "remediation.succeeded",
    "remediation.failed",
    "remediation.dry_run",
)
# The fields an update may change (AIP-134 mask paths).
MUTABLE = ("uri", "event_types", "signing_secret", "payload_format", "description")


class PayloadFormat(enum.Enum):
    """The body of a subscription's POSTs (the proto's PayloadFormat without the prefix)."""

    JSON = "JSON"
    SLACK = "SLACK"


@dataclass(frozen=True)
class Subscription:
    """One webhook subscription as it is kept (no key: only the secret's name)."""

    id: str
    uri: str
    event_types: tuple[str, ...]
    signing_secret: str
    payload_format: str
    description: str
    creator: str
    create_time_us: int
    update_time_us: int
    version: int = 1

    @property
    def name(self) -> str:
        return SUBSCRIPTION.format(self.id)

    @property
    def etag(self) -> str:
        return etags.of(self.version)

    def wants(self, event_type: str) -> bool:
        """Whether this subscription is sent events of `event_type`."""
        return not self.event_types or event_type in self.event_types


class SigningKeys(Protocol):
    """Reads a subscription's signing key from the secrets service."""

    async def key(self, secret: str, *, fresh: bool = False) -> str:
        """The latest version of `secret` (`fresh`: read now, not cached); FAILED_PRECONDITION
        when the debugger cannot read it."""
        ...


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_uri(uri: str, field: str) -> None:
    """INVALID_ARGUMENT naming `field` unless `uri` is https://, or http:// to loopback."""
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise InvalidArgument.for_field(field, "must not contain spaces or control characters")
    try:
        problem = notifications.check_url(uri)
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:  # e.g. an unclosed IPv6 bracket: urlsplit raises
        raise InvalidArgument.for_field(field, "is not a URL") from None
    if problem:
        raise InvalidArgument.for_field(field, problem)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument.for_field(field, "must not carry a user or password (the POSTs are signed)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise InvalidArgument.for_field(
            field,
            "must be an https:// URL (http:// only to a loopback address: events are not sent in the clear)",
        )


@dataclass(frozen=True)
class Fields:
    """What a caller sets on a subscription (empty payload_format: JSON)."""

    uri: str = ""
    event_types: tuple[str, ...] = ()
    signing_secret: str = ""
    payload_format: str = ""
    description: str = ""


def check_fields(fields: Mapping[str, Any], field: str) -> None:
    """Each given field of a subscription checked; INVALID_ARGUMENT naming `<field>.<path>`."""
    if "uri" in fields:
        check_uri(str(fields["uri"]), f"{field}.uri")
    if "event_types" in fields:
        types = fields["event_types"]
        if len(types) > MAX_EVENT_TYPES:
            raise InvalidArgument.for_field(f"{field}.event_types", f"at most {MAX_EVENT_TYPES}")
        for index, name in enumerate(types):
            if name not in EVENT_TYPES:
                raise InvalidArgument.for_field(
                    f"{field}.event_types[{index}]",
                    f"{str(name)[:64]!r} is not an event type; one of " + ", ".join(EVENT_TYPES),
                )
    if "signing_secret" in fields:
        SECRET.parse(str(fields["signing_secret"]), f"{field}.signing_secret")
    if "description" in fields and len(str(fields["description"])) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument.for_field(
            f"{field}.description", f"longer than {MAX_DESCRIPTION_CHARS} characters"
        )


def new_id() -> str:
    """A fresh subscription id (AIP-122: a letter, then hex)."""
    return "w" + secrets.token_hex(8)


def _now_us() -> int:
    return time.time_ns() // 1000


class SubscriptionStorage(Protocol):
    """Where subscriptions are kept (remediation_subscription_store.SubscriptionStore)."""

    async def create(self, subscription: Subscription, maximum: int) -> int: ...
    async def replace(self, subscription: Subscription | None, sub_id: str, version: int) -> int: ...
    async def get(self, sub_id: str) -> Subscription | None: ...
    async def all(self) -> list[Subscription]: ...


class Subscriptions:
    """Creates, reads, updates and deletes webhook subscriptions."""

    def __init__(self, store: SubscriptionStorage, keys: SigningKeys | None) -> None:
        self._store = store
        self.keys = keys

    async def _check_readable(self, secret: str, field: str) -> None:
        if self.keys is None:
            raise InvalidArgument.for_field(
                field, "no secrets service is configured (DEVMESH_PEERS secrets=...) to sign with"
            )
        await self.keys.key(secret, fresh=True)

    async def create(self, sub_id: str, fields: Fields, creator: str) -> Subscription:
        """A new subscription; its signing secret must be readable by the debugger."""
        if sub_id:
            SUBSCRIPTION.parse(SUBSCRIPTION.format(sub_id), "webhook_subscription_id")
        field = "webhook_subscription"
        for required in ("uri", "signing_secret"):
            if not getattr(fields, required):
                raise InvalidArgument.for_field(f"{field}.{required}", "is required")
        check_fields(asdict(fields), field)
        await self._check_readable(fields.signing_secret, f"{field}.signing_secret")
        now = _now_us()
        subscription = Subscription(
            id=sub_id or new_id(),
            uri=fields.uri,
            event_types=tuple(dict.fromkeys(fields.event_types)),
            signing_secret=fields.signing_secret,
            payload_format=fields.payload_format or PayloadFormat.JSON.value,
            description=fields.description,
            creator=creator,
            create_time_us=now,
            update_time_us=now,
        )
        done = await self._store.create(subscription, MAX_SUBSCRIPTIONS)
        if done == 0:
            raise AlreadyExists(
                f"{subscription.name} exists",
                resource_type="debugger.devmesh.io/WebhookSubscription",
                resource_name=subscription.name,
            )
        if done < 0:
            raise ResourceExhausted(
                f"at most {MAX_SUBSCRIPTIONS} webhook subscriptions; delete one first",
                reason="TOO_MANY_SUBSCRIPTIONS",
            )
        return subscription

    async def get(self, name: str, field: str = "name") -> Subscription:
        """A subscription by name."""
        (sub_id,) = SUBSCRIPTION.parse(name, field)
        found = await self._store.get(sub_id)
        if found is None:
            raise NotFound(
                f"{name} does not exist",
                resource_type="debugger.devmesh.io/WebhookSubscription",
                resource_name=name,
            )
        return found

    async def page(self, after: str, size: int) -> tuple[list[Subscription], str | None]:
        """Subscriptions after the id `after`, in id order; the last id when more follow."""
        found = [s for s in await self._store.all() if s.id > after]
        if len(found) > size:
            return found[:size], found[size - 1].id
        return found, None

    async def update(self, name: str, fields: Fields, mask: Sequence[str], etag: str) -> Subscription:
        """Change the masked fields (all mutable ones when `mask` is empty)."""
        before = await self.get(name, "webhook_subscription.name")
        etags.check(etag, before.etag, name)
        for index, path in enumerate(mask):
            if path not in MUTABLE:
                raise InvalidArgument.for_field(
                    f"update_mask.paths[{index}]",
                    f"{path[:64]!r} is not a field an update changes; one of " + ", ".join(MUTABLE),
                )
        changes: dict[str, Any] = {path: getattr(fields, path) for path in (mask or MUTABLE)}
        for required in ("uri", "signing_secret"):
            if required in changes and not changes[required]:
                raise InvalidArgument.for_field(f"webhook_subscription.{required}", "is required")
        check_fields(changes, "webhook_subscription")
        if "payload_format" in changes:
            changes["payload_format"] = changes["payload_format"] or PayloadFormat.JSON.value
        if "event_types" in changes:
            changes["event_types"] = tuple(dict.fromkeys(changes["event_types"]))
        if changes.get("signing_secret", before.signing_secret) != before.signing_secret:
            await self._check_readable(changes["signing_secret"], "webhook_subscription.signing_secret")
        after = replace(before, **changes, update_time_us=_now_us(), version=before.version + 1)
        await self._write(after, before)
        return after

    async def delete(self, name: str, etag: str) -> None:
        """Remove a subscription (POSTs already queued are still made)."""
        before = await self.get(name)
        etags.check(etag, before.etag, name)
        await self._write(None, before)

    async def matching(self, event_type: str) -> list[Subscription]:
        """The subscriptions that want events of `event_type`."""
        return [s for s in await self._store.all() if s.wants(event_type)]

    async def _write(self, after: Subscription | None, before: Subscription) -> None:
        done = await self._store.replace(after, before.id, before.version)
        if done == 0:
            raise NotFound(
                f"{before.name} does not exist",
                resource_type="debugger.devmesh.io/WebhookSubscription",
                resource_name=before.name,
            )
        if done < 0:
            raise Aborted(
                f"{before.name} changed meanwhile; re-read it and retry", reason="CONCURRENT_CHANGE"
            )

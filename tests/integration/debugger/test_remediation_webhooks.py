"""Webhook subscriptions to remediation events: real loopback receivers get signed POSTs of the
event types they asked for (JSON or Slack's body), a forged signature is detectable, the key
never shows, and a dead receiver ends in the dead-letter list after its retries."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio

from devmesh.debugger.v1 import remediation_pb2 as pb
from devmesh.debugger.v1 import remediation_pb2_grpc
from devmesh.debugger.v1 import webhook_subscriptions_pb2 as wpb
from devmesh.secrets.v1 import secrets_pb2 as spb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.debugger import app as debugger_app
from services.runtime import notifications
from services.runtime.redis_client import connect
from services.runtime.settings import SettingsError
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import error_info, eventually, refused, violated_fields
from tests.integration.secrets.conftest import start_secrets
from tools.stack.valkey import Valkey, start_valkey

SIGNING_KEY = "whsec-test-only-signing-key"
# Fast retries so that a dead receiver's delivery is given up within a second or two.
FAST_RETRIES = {"DEVMESH_DEBUGGER_WEBHOOK_MAX_ATTEMPTS": "3", "DEVMESH_DEBUGGER_WEBHOOK_FIRST_BACKOFF": "0.1"}


@dataclass
class Receiver:
    """A loopback HTTP server that keeps every POST it gets: (headers, body)."""

    url: str
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks", posts)
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass(frozen=True)
class Stack:
    """A debugger whose peer is a secrets service holding the signing key `secret`."""

    remediations: remediation_pb2_grpc.RemediationServiceStub
    secret: str
    valkey_url: str


@pytest.fixture(scope="module")
def own_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Valkey]:
    """A Valkey of this module's debugger alone: every debugger replica on a Valkey delivers its
    webhooks, and the other modules' debuggers retry with the default (slow) backoff."""
    server = start_valkey(tmp_path_factory.mktemp("webhook-valkey"))
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
async def stack(
    valkey: Valkey, own_valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> AsyncIterator[Stack]:
    # Auth off on both: the debugger reads the key as itself, which plaintext tests cannot show.
    _, secrets_addr = await start_secrets(start_config_server, valkey, openbao, auth="off")
    _, addr = await start_config_server(
        own_valkey.url, env=FAST_RETRIES, specs=[debugger_app.SPEC], peers=(("secrets", secrets_addr),)
    )
    secret = f"secrets/whsec{uuid.uuid4().hex[:8]}"
    async with aio.insecure_channel(secrets_addr) as s, aio.insecure_channel(addr) as d:
        secrets = secrets_pb2_grpc.SecretsServiceStub(s)
        await secrets.CreateSecret(spb.CreateSecretRequest(secret_id=secret.split("/")[1]))
        await secrets.AddSecretVersion(
            spb.AddSecretVersionRequest(parent=secret, payload=spb.SecretPayload(data=SIGNING_KEY.encode()))
        )
        yield Stack(remediation_pb2_grpc.RemediationServiceStub(d), secret, own_valkey.url)


def _subscription(stack: Stack, uri: str, **fields: object) -> wpb.CreateWebhookSubscriptionRequest:
    return wpb.CreateWebhookSubscriptionRequest(
        webhook_subscription=wpb.WebhookSubscription(uri=uri, signing_secret=stack.secret, **fields)  # type: ignore[arg-type]
    )


def _restart(name: str) -> pb.ProposeRemediationRequest:
    target = f"namespaces/shop/deployments/{name}{uuid.uuid4().hex[:6]}"
    return pb.ProposeRemediationRequest(
        plan=[pb.Action(kind=pb.ACTION_KIND_KUBERNETES_RESTART, target=target)]
    )


def _of(receiver: Receiver, name: str, key: str = "remediation") -> list[tuple[dict[str, str], bytes]]:
    found = []
    for headers, body in list(receiver.posts):
        document = json.loads(body)
        if document.get(key) == name or name in document.get("text", ""):
            found.append((headers, body))
    return found


async def test_a_subscription_gets_every_change_signed_and_never_shows_its_key(
    stack: Stack, receiver: Receiver
) -> None:
    made_sub = await stack.remediations.CreateWebhookSubscription(_subscription(stack, receiver.url))
    assert made_sub.name.startswith("webhookSubscriptions/") and made_sub.signing_secret == stack.secret
    assert SIGNING_KEY not in str(made_sub)
    made = await stack.remediations.ProposeRemediation(_restart("hooked"))
    await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))

    async def all_four() -> bool:
        return len(_of(receiver, made.name)) >= 4

    await eventually(all_four, "the proposal, the execution, its step and its outcome to be posted")
    posts = _of(receiver, made.name)
    assert sorted(json.loads(b)["type"] for _, b in posts) == [
        "remediation.dry_run",
        "remediation.executing",
        "remediation.proposed",
        "remediation.step",
    ]
    for headers, body in posts:
        assert headers[notifications.EVENT_HEADER] == json.loads(body)["type"]
        assert notifications.verify(SIGNING_KEY, headers[notifications.SIGNATURE_HEADER], body)
        assert SIGNING_KEY not in body.decode()
    await stack.remediations.DeleteWebhookSubscription(
        wpb.DeleteWebhookSubscriptionRequest(name=made_sub.name)
    )


async def test_a_forged_or_tampered_post_is_detectable(stack: Stack, receiver: Receiver) -> None:
    sub = await stack.remediations.CreateWebhookSubscription(_subscription(stack, receiver.url))
    made = await stack.remediations.ProposeRemediation(_restart("forged"))

    async def posted() -> bool:
        return bool(_of(receiver, made.name))

    await eventually(posted, "the proposal to be posted")
    headers, body = _of(receiver, made.name)[0]
    signature = headers[notifications.SIGNATURE_HEADER]
    assert notifications.verify(SIGNING_KEY, signature, body)
    assert not notifications.verify("a-wrong-key", signature, body)
    assert not notifications.verify(SIGNING_KEY, signature, body.replace(b"APPROVED", b"REJECTED"))
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert not notifications.verify(
        SIGNING_KEY, notifications.sign("someone-elses-key", timestamp, body), body
    )
    assert not notifications.verify(SIGNING_KEY, signature, body, now=timestamp + 3600)  # a replay, later
    await stack.remediations.DeleteWebhookSubscription(wpb.DeleteWebhookSubscriptionRequest(name=sub.name))


async def test_a_slack_subscription_of_some_event_types_gets_only_those_as_slack_messages(
    stack: Stack, receiver: Receiver
) -> None:
    sub = await stack.remediations.CreateWebhookSubscription(
        _subscription(
            stack,
            receiver.url.replace("/hooks", "/slack"),
            event_types=["remediation.dry_run"],
            payload_format=wpb.PAYLOAD_FORMAT_SLACK,
        )
    )
    made = await stack.remediations.ProposeRemediation(_restart("slacked"))
    await stack.remediations.ExecuteRemediation(pb.ExecuteRemediationRequest(name=made.name))

    def slack_posts() -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in list(receiver.posts) if made.name in json.loads(b).get("text", "")]

    async def posted() -> bool:
        return bool(slack_posts())

    await eventually(posted, "the dry run to be posted to Slack")
    ((headers, body),) = slack_posts()
    message = json.loads(body)
    assert set(message) == {"text", "blocks"}
    assert message["text"] == f"{made.name} is DRY_RUN (remediation.dry_run)"
    assert message["blocks"][0]["type"] == "section" and message["blocks"][0]["text"]["type"] == "mrkdwn"
    assert headers[notifications.EVENT_HEADER] == "remediation.dry_run"
    assert notifications.verify(SIGNING_KEY, headers[notifications.SIGNATURE_HEADER], body)
    await stack.remediations.DeleteWebhookSubscription(wpb.DeleteWebhookSubscriptionRequest(name=sub.name))


async def test_a_dead_receiver_ends_in_the_dead_letter_list_after_its_retries(stack: Stack) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as closed:
        dead_url = f"http://127.0.0.1:{closed.server_address[1]}/gone"  # nothing listens once closed
    sub = await stack.remediations.CreateWebhookSubscription(
        _subscription(stack, dead_url, event_types=["remediation.proposed"])
    )
    made = await stack.remediations.ProposeRemediation(_restart("dead"))
    redis = connect(stack.valkey_url, 5.0)
    notifier = notifications.Notifier(redis, None, "devmesh:debugger:notify:")  # type: ignore[arg-type]

    async def dead_lettered() -> list[dict[str, object]]:
        return [d for d in await notifier.dead_letters() if made.name in str(d["body"])]

    try:
        await eventually(dead_lettered, "the dead receiver's delivery to be given up")
        (letter,) = await dead_lettered()
        assert letter["url"] == dead_url and letter["attempts"] == 3 and letter["secret"] == ""
        assert SIGNING_KEY not in json.dumps(letter)
    finally:
        await redis.aclose()
        await stack.remediations.DeleteWebhookSubscription(
            wpb.DeleteWebhookSubscriptionRequest(name=sub.name)
        )


@pytest.mark.parametrize(
    ("uri", "fields", "violated"),
    [
        ("http://hooks.example.com/x", {}, "webhook_subscription.uri"),
        ("ftp://127.0.0.1/x", {}, "webhook_subscription.uri"),
        ("https://user:pw@hooks.example.com/x", {}, "webhook_subscription.uri"),
        (
            "https://hooks.example.com/x",
            {"event_types": ["remediation.exploded"]},
            "webhook_subscription.event_types[0]",
        ),
        (
            "https://hooks.example.com/x",
            {"signing_secret": "not a secret"},
            "webhook_subscription.signing_secret",
        ),
    ],
)
async def test_a_bad_subscription_is_refused_naming_its_field(
    stack: Stack, uri: str, fields: dict[str, object], violated: str
) -> None:
    request = _subscription(stack, uri)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(request.webhook_subscription, name).extend(value)
        else:
            setattr(request.webhook_subscription, name, value)
    error = await refused(stack.remediations.CreateWebhookSubscription, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [violated]


async def test_a_signing_secret_the_debugger_cannot_read_is_a_failed_precondition(stack: Stack) -> None:
    request = _subscription(stack, "https://hooks.example.com/x")
    request.webhook_subscription.signing_secret = "secrets/does-not-exist"
    error = await refused(stack.remediations.CreateWebhookSubscription, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "SIGNING_SECRET_UNREADABLE"


async def test_subscriptions_are_listed_updated_with_their_etag_and_deleted(stack: Stack) -> None:
    sid = f"w{uuid.uuid4().hex[:10]}"
    request = _subscription(stack, "https://localhost:9/a", description="on call")
    request.webhook_subscription_id = sid
    made = await stack.remediations.CreateWebhookSubscription(request)
    assert made.name == f"webhookSubscriptions/{sid}" and made.payload_format == wpb.PAYLOAD_FORMAT_JSON
    again = await refused(stack.remediations.CreateWebhookSubscription, request)
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await stack.remediations.ListWebhookSubscriptions(wpb.ListWebhookSubscriptionsRequest())
    assert made in listed.webhook_subscriptions
    change = wpb.UpdateWebhookSubscriptionRequest(
        webhook_subscription=wpb.WebhookSubscription(
            name=made.name, uri="https://localhost:9/b", etag=made.etag
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["uri"]),
    )
    updated = await stack.remediations.UpdateWebhookSubscription(change)
    assert updated.uri.endswith("/b") and updated.description == "on call" and updated.etag != made.etag
    stale = await refused(stack.remediations.UpdateWebhookSubscription, change)
    assert stale.code() == grpc.StatusCode.ABORTED
    error = await refused(
        stack.remediations.DeleteWebhookSubscription,
        wpb.DeleteWebhookSubscriptionRequest(name=made.name, etag=made.etag),
    )
    assert error.code() == grpc.StatusCode.ABORTED
    await stack.remediations.DeleteWebhookSubscription(
        wpb.DeleteWebhookSubscriptionRequest(name=made.name, etag=updated.etag)
    )
    gone = await refused(
        stack.remediations.GetWebhookSubscription, wpb.GetWebhookSubscriptionRequest(name=made.name)
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_the_old_webhook_setting_is_refused_saying_where_webhooks_went(
    valkey: Valkey, start_config_server: ServerFactory
) -> None:
    with pytest.raises(SettingsError, match="webhook subscriptions"):
        await start_config_server(
            valkey.url,
            env={"DEVMESH_DEBUGGER_REMEDIATION_WEBHOOK_URL": "https://hooks.example.com/x"},
            specs=[debugger_app.SPEC],
        )

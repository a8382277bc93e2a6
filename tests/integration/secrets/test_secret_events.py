"""WatchSecretEvents: its prefix and cursor are checked like every name, an idle stream hears
progress, a draining server ends streams, and every event is a SecretEvent on its channel."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from grpc import aio

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.runtime import protos
from services.secrets import app as secrets_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import error_info, key_metadata, mint_key, refused, violated_fields
from tests.integration.conftest import Servers
from tests.integration.secrets.conftest import Secrets, following, next_event, start_secrets
from tools.stack.valkey import Valkey


@pytest.mark.parametrize("prefix", ["x" * (1 << 20), "a\x00b", "../../x", "-leading-dash", "ns/secret"])
async def test_a_watch_prefix_that_no_secret_id_can_start_with_is_invalid(
    servers: Servers, prefix: str
) -> None:
    stub = secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)
    stream = stub.WatchSecretEvents(
        pb.WatchSecretEventsRequest(prefix=prefix), metadata=servers.admin, timeout=10
    )
    error = await refused(stream.read)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error)[0] == "prefix"


async def test_a_list_prefix_is_checked_the_same_way(servers: Servers) -> None:
    stub = secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)
    error = await refused(stub.ListSecrets, pb.ListSecretsRequest(prefix="../x"), metadata=servers.admin)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_ARGUMENT"


async def test_an_idle_watch_gets_progress_events_to_resume_from(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> None:
    server, addr = await start_config_server(
        valkey.url,
        env={"DEVMESH_SECRETS_WATCH_PROGRESS_INTERVAL": "0.2"},
        specs=[secrets_app.SPEC],
        **openbao.settings("secrets"),
    )
    admin = key_metadata(await mint_key(server, "admin"))
    async with aio.insecure_channel(addr) as channel:
        stub = secrets_pb2_grpc.SecretsServiceStub(channel)
        quiet = pb.WatchSecretEventsRequest(prefix="no-secret-has-this-prefix")
        stream = stub.WatchSecretEvents(quiet, metadata=admin)
        first = await asyncio.wait_for(stream.read(), 10)
        second = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()
        assert first.type == second.type == pb.SecretEvent.TYPE_PROGRESS
        assert first.secret == "" and first.id
        # The progress id is a resume point: a stream after it starts cleanly.
        again = stub.WatchSecretEvents(
            pb.WatchSecretEventsRequest(prefix="no-secret-has-this-prefix", after_id=second.id),
            metadata=admin,
        )
        assert (await asyncio.wait_for(again.read(), 10)).type == pb.SecretEvent.TYPE_PROGRESS
        again.cancel()


async def test_every_event_is_announced_as_a_secret_event_on_the_channel_the_contract_names(
    servers: Servers,
) -> None:
    stub = secrets_pb2_grpc.SecretsServiceStub(servers.secrets_channel)
    sid = f"n{uuid.uuid4().hex[:8]}"
    pubsub = servers.config.runtime.redis.pubsub()
    await pubsub.subscribe(protos.channel_of(pb.SecretEvent))
    try:
        await stub.CreateSecret(
            pb.CreateSecretRequest(secret_id=sid, secret=pb.Secret()), metadata=servers.admin
        )
        request = pb.AddSecretVersionRequest(parent=f"secrets/{sid}", payload=pb.SecretPayload(data=b"v"))
        await stub.AddSecretVersion(request, metadata=servers.admin)
        announced = None
        while announced is None or announced.secret != f"secrets/{sid}":
            message = await asyncio.wait_for(
                pubsub.get_message(ignore_subscribe_messages=True, timeout=5), 10
            )
            if message is not None:
                announced = pb.SecretEvent.FromString(message["data"])
    finally:
        await pubsub.aclose()
    assert (announced.type, announced.version) == (pb.SecretEvent.TYPE_VERSION_ADDED, 1)
    assert announced.id.count("-") == 1


async def test_a_bad_watch_cursor_is_invalid_argument(secrets: Secrets) -> None:
    admin = await secrets.key("admin")
    stream = secrets.stub.WatchSecretEvents(pb.WatchSecretEventsRequest(after_id="yesterday"), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_draining_server_ends_event_streams_instead_of_waiting_for_them(
    valkey: Valkey, openbao: BootstrappedVault, start_config_server: ServerFactory
) -> None:
    server, addr = await start_secrets(start_config_server, valkey, openbao)
    async with aio.insecure_channel(addr) as channel:
        s = Secrets(server, addr, channel)
        quiet = pb.WatchSecretEventsRequest(
            prefix="no-secret-has-this-prefix"
        )  # other tests' events stay out
        stream = s.stub.WatchSecretEvents(quiet, metadata=await s.key("admin"))
        await following(stream)
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop(grace=8))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_event(stream)  # progress events may come first
        await stopping
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "SHUTTING_DOWN"
    assert time.monotonic() - started < 5  # not the whole grace period

"""WatchConfig: replay then live, in order, none lost or repeated, across replicas sharing one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio
from prometheus_client import REGISTRY

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from services.config import store
from services.config.servicer import change_response
from tests.conftest import ServerFactory
from tests.helpers import error_info, eventually
from tests.integration.config.conftest import create, env_name, put

Stub = config_pb2_grpc.ConfigServiceStub


async def collect(
    stub: Stub, name: str, since: int, until: int, opened: asyncio.Event | None = None
) -> list[int]:
    """Revisions a watcher receives until it has seen `until`; `opened` is set at the stream's
    first message (a change or a progress beat: either way it is registered with the feed)."""
    seen: list[int] = []
    async for event in stub.WatchConfig(pb.WatchConfigRequest(name=name, since_revision=since)):
        if opened is not None:
            opened.set()
        if event.HasField("change"):
            seen.append(event.change.revision)
            if event.change.revision >= until:
                return seen
    return seen


async def first_change(call: Any) -> bytes:
    """The first change message of a stream read as bytes, as it came off the wire."""
    while True:
        raw = await asyncio.wait_for(call.read(), 5)
        if pb.WatchConfigResponse.FromString(raw).HasField("change"):
            return bytes(raw)


async def test_two_replicas_and_concurrent_writers_deliver_every_revision_once_in_order(
    valkey: Any, start_config_server: ServerFactory, ns: str
) -> None:
    _, addr_a = await start_config_server(valkey.url)
    _, addr_b = await start_config_server(valkey.url)
    async with aio.insecure_channel(addr_a) as ch_a, aio.insecure_channel(addr_b) as ch_b:
        a, b = Stub(ch_a), Stub(ch_b)
        await create(a, ns)
        writers, writes_each = 4, 15
        last = 1 + writers * writes_each
        everything = f"namespaces/{ns}/environments/-"
        # Two watchers are live before the writes start, two open while they run.
        early = [asyncio.Event(), asyncio.Event()]
        watchers = [
            asyncio.create_task(collect(stub, everything, 1, last, e))
            for stub, e in zip((a, b), early, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in early)), 10)
        watchers += [asyncio.create_task(collect(stub, everything, 1, last)) for stub in (a, b)]

        async def writer(stub: Stub, env: str) -> None:
            for i in range(writes_each):
                await put(stub, ns, env, {"i": i})

        late = []
        await asyncio.gather(*(writer((a, b)[w % 2], f"env-{w}") for w in range(writers)))
        late.append(asyncio.create_task(collect(b, everything, 0, last)))  # replays everything
        results = await asyncio.wait_for(asyncio.gather(*watchers, *late), 20)
    expected = list(range(2, last + 1))
    for seen in results[:-1]:
        assert seen == expected
    assert results[-1] == [1, *expected]


async def test_watching_one_environment_sees_its_changes_and_the_base_layers(config: Stub, ns: str) -> None:
    await create(config, ns)
    await put(config, ns, "default", {"a": 1})  # 2
    await put(config, ns, "staging", {"a": 2})  # 3: not prod's
    await put(config, ns, "prod", {"a": 3})  # 4
    seen = await asyncio.wait_for(collect(config, env_name(ns, "prod"), 0, 4), 5)
    assert seen == [1, 2, 4]


async def test_idle_streams_get_progress(config: Stub, ns: str) -> None:
    await create(config, ns)
    call = config.WatchConfig(pb.WatchConfigRequest(name=env_name(ns, "prod"), since_revision=1))
    event = await asyncio.wait_for(call.read(), 5)
    call.cancel()
    assert event.HasField("progress")
    assert event.progress.revision == 1


async def test_an_idle_stream_keeps_getting_progress_that_covers_revisions_it_did_not_need(
    config: Stub, ns: str
) -> None:
    await create(config, ns)
    call = config.WatchConfig(pb.WatchConfigRequest(name=env_name(ns, "prod"), since_revision=1))
    assert (await asyncio.wait_for(call.read(), 5)).progress.revision == 1
    await put(config, ns, "staging", {"a": 1})  # revision 2: not prod's
    beats = [await asyncio.wait_for(call.read(), 5) for _ in range(2)]
    call.cancel()
    assert [b.WhichOneof("event") for b in beats] == ["progress", "progress"]
    assert beats[-1].progress.revision == 2


async def test_a_draining_server_ends_watch_streams_with_the_revision_to_resume_from(
    valkey: Any, start_config_server: ServerFactory, ns: str
) -> None:
    server, addr = await start_config_server(valkey.url)
    async with aio.insecure_channel(addr) as ch:
        stub = Stub(ch)
        await create(stub, ns)
        await put(stub, ns, "default", {"a": 1})  # revision 2
        call = stub.WatchConfig(pb.WatchConfigRequest(name=env_name(ns, "default"), since_revision=1))
        assert (await asyncio.wait_for(call.read(), 5)).change.revision == 2
        stopping = asyncio.create_task(server.stop(grace=8))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            for _ in range(10):  # a progress message may come first
                assert (await asyncio.wait_for(call.read(), 5)).HasField("progress")
        await stopping
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert (info.reason, info.metadata["since_revision"]) == ("SHUTTING_DOWN", "2")


async def test_a_live_change_goes_out_to_every_watcher_as_the_bytes_its_message_serializes_to(
    config: Stub, channel: aio.Channel, valkey: Any, ns: str
) -> None:
    await create(config, ns)
    watch_bytes = channel.unary_stream(
        "/devmesh.config.v1.ConfigService/WatchConfig",
        request_serializer=pb.WatchConfigRequest.SerializeToString,
    )  # no response deserializer: the messages exactly as they came off the wire
    request = pb.WatchConfigRequest(name=env_name(ns, "-"), since_revision=1)
    calls = [watch_bytes(request) for _ in range(3)]
    for call in calls:  # every stream is live: registered, nothing to replay
        assert pb.WatchConfigResponse.FromString(await asyncio.wait_for(call.read(), 5)).HasField("progress")
    await put(config, ns, "default", {"db": {"host": "h", "port": 5432}, "flags": [True, None, 1.5]})
    received = [await first_change(call) for call in calls]
    for call in calls:
        call.cancel()
    client = aioredis.Redis.from_url(valkey.url)
    try:
        record = store.decode_revision(ns, await client.hget(store.revisions_key(ns), "2"))
    finally:
        await client.aclose()
    assert received == [change_response(record).SerializeToString()] * 3
    revision = await config.GetRevision(pb.GetRevisionRequest(name=f"namespaces/{ns}/revisions/2"))
    assert pb.WatchConfigResponse.FromString(received[0]).change == revision


async def test_a_compacted_revision_is_out_of_range_with_the_oldest_retained(
    config: Stub, ns: str, valkey: Any
) -> None:
    await create(config, ns)
    for i in range(5):
        await put(config, ns, "default", {"i": i})
    client = aioredis.Redis.from_url(valkey.url)
    try:  # what retention does to an old log: drop the oldest entries
        assert await client.xtrim(f"devmesh:config:{{{ns}}}:log", maxlen=2, approximate=False) == 4
    finally:
        await client.aclose()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(config, env_name(ns, "default"), 1, 6)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(caught.value).metadata["oldest_revision"] == "5"
    # From the oldest retained revision on, the watch works.
    assert await asyncio.wait_for(collect(config, env_name(ns, "default"), 4, 6), 5) == [5, 6]


async def test_a_revision_from_the_future_is_out_of_range(config: Stub, ns: str) -> None:
    await create(config, ns)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(config, env_name(ns, "default"), 99, 100)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_watching_a_missing_namespace_is_not_found(config: Stub, ns: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(config, env_name(ns, "default"), 0, 1)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watcher_that_does_not_keep_up_is_cut_off(
    valkey: Any, start_config_server: ServerFactory, ns: str
) -> None:
    _, addr = await start_config_server(valkey.url, env={"DEVMESH_CONFIG_WATCH_QUEUE_SIZE": "2"})
    big = {"blob": "x" * 200_000}  # one of these fills the 64 KiB window, so the server must queue
    # Without BDP probing the client's flow-control window stays small, as a slow reader's would.
    async with (
        aio.insecure_channel(addr) as ch,
        aio.insecure_channel(addr, options=[("grpc.http2.bdp_probe", 0)]) as slow,
    ):
        stub = Stub(ch)
        await create(stub, ns)
        call = Stub(slow).WatchConfig(pb.WatchConfigRequest(name=env_name(ns, "default"), since_revision=1))
        await call.wait_for_connection()
        for _ in range(12):
            await put(stub, ns, "default", big)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            for _ in range(100):
                assert await asyncio.wait_for(call.read(), 10) is not aio.EOF
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "WATCHER_TOO_SLOW"


async def test_streams_over_the_limit_are_refused_and_a_cancelled_one_frees_its_place(
    valkey: Any, start_config_server: ServerFactory, ns: str
) -> None:
    _, addr = await start_config_server(valkey.url, max_concurrent_streams=1)
    async with aio.insecure_channel(addr) as ch:
        stub = Stub(ch)
        await create(stub, ns)
        request = pb.WatchConfigRequest(name=env_name(ns, "default"), since_revision=1)
        first = stub.WatchConfig(request)
        assert (await first.read()).HasField("progress")  # open: nothing after revision 1 yet

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.WatchConfig(request).read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "SERVER_OVERLOADED"

        first.cancel()

        async def a_stream_opens() -> Any:
            call = stub.WatchConfig(request)
            try:
                assert (await call.read()).HasField("progress")
            except grpc.aio.AioRpcError as error:
                assert error_info(error).reason == "SERVER_OVERLOADED"
                return None
            return call

        # The server learns of the cancellation shortly after the client.
        second = await eventually(a_stream_opens, "the cancelled stream's place to be free", within=5)
        second.cancel()


async def test_a_crowd_of_streams_opening_while_redis_is_slow_is_registered_without_failures(
    valkey: Any, start_config_server: ServerFactory, ns: str
) -> None:
    _, addr = await start_config_server(valkey.url, redis_timeout=5.0)
    async with aio.insecure_channel(addr) as ch:
        stub = Stub(ch)
        await create(stub, ns)
        request = pb.WatchConfigRequest(name=env_name(ns, "default"), since_revision=1)

        async def all_open() -> bool:  # on this server or another of the session's
            return (REGISTRY.get_sample_value("devmesh_rpc_in_flight", {"kind": "stream"}) or 0) >= 150

        # Paused for less than the Redis timeout: every opening stream's reads pile up. (The
        # session's Valkey: starting one of its own while grpc threads run can crash the fork.)
        os.kill(valkey.process.pid, signal.SIGSTOP)
        try:
            calls = [stub.WatchConfig(request) for _ in range(150)]  # more than a Redis pool holds
            await eventually(all_open, "every stream to reach the server", within=3)
        finally:
            os.kill(valkey.process.pid, signal.SIGCONT)
        try:
            first = await asyncio.wait_for(
                asyncio.gather(*(c.read() for c in calls), return_exceptions=True), 20
            )
        finally:
            for call in calls:
                call.cancel()
    failed = [f.details() for f in first if isinstance(f, grpc.aio.AioRpcError)]
    assert failed == []
    assert all(f.HasField("progress") for f in first)

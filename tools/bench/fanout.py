"""The watch fan-out: one write delivered to FANOUT_STREAMS open WatchConfig streams of the
config service, against the same fan-out from a bare grpc.aio server measured with the same
client in the same run. Measured by the config section, and alone by the watch section."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from tools.bench.load import ROUNDS
from tools.stack.processes import LOOPBACK, free_port, wait_until

FANOUT_STREAMS = 1000
FANOUT_CHANNELS = 10
FANOUT_NAMESPACE = "fanout"
FANOUT_SERVICE = "devmesh.bench.Fanout"  # the bare fan-out server's methods: Watch and Fire
WATCH_METHOD = "/devmesh.config.v1.ConfigService/WatchConfig"
FANOUT_GOAL_P99_MS = 250
# Progress every second, so that every stream has its first message (is registered) soon.
FANOUT_SERVICE_ENV = {"DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "1", "DEVMESH_LOG_LEVEL": "info"}


def _fanout_change(revision: int) -> Any:
    """The WatchConfigResponse of the bench's write, as the bare server sends it."""
    from devmesh.config.v1 import config_pb2 as pb

    change = pb.Revision(
        name=f"namespaces/{FANOUT_NAMESPACE}/revisions/{revision}",
        revision=revision,
        environment="default",
        action=pb.ACTION_ENVIRONMENT_UPDATED,
    )
    change.content.update({"fanout": True, "revision": revision})
    return pb.WatchConfigResponse(change=change)


async def _bare_fanout_server(port: int) -> None:
    """Streams that each send a progress message, wait for one shared event and send it: the
    fan-out with nothing behind it but grpc.aio, for the same client to measure."""
    from devmesh.config.v1 import config_pb2 as pb

    progress = pb.WatchConfigResponse(progress=pb.WatchProgress(revision=1)).SerializeToString()
    loop = asyncio.get_running_loop()
    event: list[asyncio.Future[bytes]] = [loop.create_future()]

    async def watch(request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        yield progress
        yield await asyncio.shield(event[0])  # a cancelled stream must not cancel the others' event
        await loop.create_future()  # open until the client cancels

    async def fire(request: bytes, context: aio.ServicerContext) -> bytes:
        fired, event[0] = event[0], loop.create_future()
        fired.set_result(_fanout_change(int(request.decode())).SerializeToString())
        return b""

    server = aio.server()
    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
        "Fire": grpc.unary_unary_rpc_method_handler(fire),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(FANOUT_SERVICE, handlers)])
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    await server.start()
    await server.wait_for_termination()


def _bare_fanout_process(port: int) -> None:
    asyncio.run(_bare_fanout_server(port))


async def _fan_out_once(
    addr: str, method: str, request: bytes, send: Callable[[aio.Channel], Awaitable[None]]
) -> dict[str, float]:
    """Open FANOUT_STREAMS streams, wait until each has its first message (it is registered),
    then `send` the event and time each stream's receipt of it from just before `send` began.
    Every stream stays open until all have theirs: hanging up is not part of the delivery, and
    1,000 cancellations inside the window cost the server time the delivery then waits for."""
    from devmesh.config.v1 import config_pb2 as pb

    opened = [aio.insecure_channel(addr) for _ in range(FANOUT_CHANNELS)]
    try:
        registered = 0
        all_registered = asyncio.Event()
        received: list[float] = []

        async def watcher(channel: aio.Channel) -> Any:
            nonlocal registered
            call = channel.unary_stream(method, response_deserializer=pb.WatchConfigResponse.FromString)(
                request
            )
            first = await call.read()
            assert first.HasField("progress"), first
            registered += 1
            if registered == FANOUT_STREAMS:
                all_registered.set()
            while not (await call.read()).HasField("change"):
                pass  # a progress message
            received.append(time.perf_counter())
            return call

        tasks = [asyncio.create_task(watcher(opened[i % FANOUT_CHANNELS])) for i in range(FANOUT_STREAMS)]
        await asyncio.wait_for(all_registered.wait(), 60)
        sent_at = time.perf_counter()
        await send(opened[0])
        acknowledged = time.perf_counter() - sent_at
        for call in await asyncio.wait_for(asyncio.gather(*tasks), 60):
            call.cancel()
    finally:
        for channel in opened:
            await channel.close()
    latencies = sorted(t - sent_at for t in received)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "send_ms": round(acknowledged * 1000, 1),
    }


async def _fan_out_write(addr: str) -> dict[str, float]:
    """One UpdateEnvironment delivered to FANOUT_STREAMS WatchConfig streams of the service."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    async with aio.insecure_channel(addr) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        namespace = await stub.GetNamespace(pb.GetNamespaceRequest(name=f"namespaces/{FANOUT_NAMESPACE}"))
    name = f"namespaces/{FANOUT_NAMESPACE}/environments/default"
    request = pb.WatchConfigRequest(name=name, since_revision=namespace.revision)

    async def write(channel: aio.Channel) -> None:
        content = pb.Environment(name=name)
        content.content.update({"fanout": True, "revision": namespace.revision + 1})
        update = pb.UpdateEnvironmentRequest(environment=content, allow_missing=True)
        await config_pb2_grpc.ConfigServiceStub(channel).UpdateEnvironment(update)

    return await _fan_out_once(addr, WATCH_METHOD, request.SerializeToString(), write)


async def _fan_out_bare(addr: str, revision: int) -> dict[str, float]:
    async def fire(channel: aio.Channel) -> None:
        await channel.unary_unary(f"/{FANOUT_SERVICE}/Fire")(str(revision).encode())

    return await _fan_out_once(addr, f"/{FANOUT_SERVICE}/Watch", b"", fire)


def watch_fanout(addr: str) -> dict[str, Any]:
    """One write to a namespace delivered to FANOUT_STREAMS open WatchConfig streams, against
    the same fan-out from a bare grpc.aio server (no service, no Redis) measured with the same
    client in the same run, ROUNDS times each, taking turns; each reports its median round
    (by p99). The latency runs from just before the write is sent to each stream's receipt of
    the change: the write's own acknowledgement (`send_ms`) may come after the receipts.

    One client process: on these 2 cores, spreading the streams over 2 or 4 client processes
    made the bare fan-out's p99 worse (more processes and grpc threads for the same cores)."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        create = pb.CreateNamespaceRequest(namespace_id=FANOUT_NAMESPACE, namespace=pb.Namespace())
        config_pb2_grpc.ConfigServiceStub(channel).CreateNamespace(create)
    bare_port = free_port()
    bare = multiprocessing.get_context("spawn").Process(target=_bare_fanout_process, args=(bare_port,))
    bare.start()
    rounds: dict[str, list[dict[str, float]]] = {"service": [], "bare_grpc": []}
    try:
        wait_until(lambda: _serving(f"{LOOPBACK}:{bare_port}"), 15, "bare fan-out server")
        for revision in range(2, 2 + ROUNDS):
            rounds["bare_grpc"].append(asyncio.run(_fan_out_bare(f"{LOOPBACK}:{bare_port}", revision)))
            rounds["service"].append(asyncio.run(_fan_out_write(addr)))
    finally:
        bare.terminate()
        bare.join()
    medians: dict[str, Any] = {"streams": FANOUT_STREAMS}
    for name, results in rounds.items():
        median = sorted(results, key=lambda r: r["p99_ms"])[len(results) // 2]
        medians[name] = {**median, "p99_rounds": [r["p99_ms"] for r in results]}
    return medians


def _serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=1)
    return True

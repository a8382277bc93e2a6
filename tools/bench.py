"""Benchmarks; `make bench` prints one JSON document on stdout.

- unary: ResolveConfig (STRONG, the default, and READ_CONSISTENCY_CACHED) and GetEnvironment
  through the full call pipeline of a real `devmesh serve config` process, against a bare
  grpc.aio echo server measured in the same run with the same load. One Python client
  saturates before a server does on 2 cores (shared/notes/runtime.md), so the load comes from
  several client processes.
- watch_fanout: one write delivered to 1,000 open WatchConfig streams, against the same
  fan-out from a bare grpc.aio server; latency from the write's sending to each receipt.
  Part of the config section; alone on a fresh stack: `python -m tools.bench watch`.
- identity: ResolveConfig with API-key authentication and the Redis rate limiter on, against
  auth off and the bare echo server; and what authentication plus rate limiting add per call.
- secrets: AccessSecretVersion through the whole chain against a direct hvac KV v2 read.
- edge: cold start of the whole local stack (Valkey, OpenBao and its bootstrap, certificates,
  the config service, Envoy healthy), then ResolveConfig straight to the service over mTLS,
  through the edge over gRPC, and through the edge over REST (HTTP/1.1 keep-alive clients).
- writes: UpdateEnvironment from 16 concurrent writers, each to its own environment of
  one namespace, against a single writer, with the ABORTED (CONTENTION) errors they met.
  Goal: no CONTENTION, and 16 writers' writes/s not below one writer's.

Every comparison takes turns: each target is measured ROUNDS times, one after the other, and
reports its median round (`rps_rounds` lists them all). Other tenants of a shared machine
come and go; one long run each put a passing slowdown on whichever target it hit, and ratios
moved by ±10% from run to run. The client processes of one measurement connect, wait for
each other, warm up together and count the calls of the same stretch of time: a process that
is still starting while the others already count leaves the server short of load.

Goals (reported, not asserted): unary throughput >= 0.8 of echo; with auth and rate limits
>= 0.7 of echo and < 150 µs per call at p50; fan-out p99 < 250 ms;
cold start < 15 s; edge >= 0.85 of direct throughput with p99 overhead < 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from services.runtime import logging as runtime_logging
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel
from tools.stack.local import local_stack
from tools.stack.openbao import start_openbao
from tools.stack.processes import LOOPBACK, free_port, spawn, wait_until
from tools.stack.service_process import VaultLogin, start_service
from tools.stack.valkey import start_valkey

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

CLIENT_PROCESSES = 3
IN_FLIGHT_PER_PROCESS = 32
DURATION_S = 10.0  # measured per target, over all its rounds
ROUNDS = 5
WARMUP_S = 1.0
CONNECT_TIMEOUT_S = 60.0  # for the client processes to connect and find each other
ECHO_METHOD = "/devmesh.bench.Echo/Echo"


# -- the bare echo server -------------------------------------------------------------------


async def _echo_server(port: int) -> None:
    async def echo(request: bytes, context: aio.ServicerContext) -> bytes:
        return request

    server = aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "devmesh.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    await server.start()
    await server.wait_for_termination()


# -- the load generator ---------------------------------------------------------------------


Tls = tuple[str, str, str] | None  # (ca, cert, key) paths: picklable for the client processes
Metadata = tuple[tuple[str, str], ...]  # sent with every call (gRPC metadata, or HTTP headers)


def _channel(addr: str, tls: Tls) -> aio.Channel:
    if tls is None:
        return aio.insecure_channel(addr)
    ca, cert, key = (Path(p).read_bytes() for p in tls)
    return aio.secure_channel(addr, grpc.ssl_channel_credentials(ca, key, cert))


async def _load(
    addr: str,
    method: str,
    payload: bytes,
    duration: float,
    in_flight: int,
    tls: Tls,
    metadata: Metadata,
    start: Barrier,
) -> list[float]:
    latencies: list[float] = []
    async with _channel(addr, tls) as channel:
        call = channel.unary_unary(method)
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        except BaseException:
            start.abort()  # the other client processes stop waiting for this one
            raise
        start.wait(CONNECT_TIMEOUT_S)  # the other client processes are connected too
        measure_from = time.perf_counter() + WARMUP_S
        stop_at = measure_from + duration

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                await call(payload, timeout=10, metadata=metadata)
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


def _client_process(
    addr: str,
    method: str,
    payload: bytes,
    duration: float,
    tls: Tls,
    out: Any,
    in_flight: int,
    metadata: Metadata,
    start: Barrier,
) -> None:
    out.put(asyncio.run(_load(addr, method, payload, duration, in_flight, tls, metadata, start)))


def _in_threads(
    in_flight: int, duration: float, start: Barrier, connect: Callable[[], Callable[[], None]]
) -> list[float]:
    """Latencies of calls made back to back from `in_flight` threads for `duration` seconds
    after the warm-up; `connect()` runs once in each thread and returns the call it repeats."""
    import threading

    latencies: list[float] = []
    window: list[float] = []  # measure from, stop at: once every thread of every process connected

    def started() -> None:
        start.wait(CONNECT_TIMEOUT_S)
        measure_from = time.perf_counter() + WARMUP_S
        window.extend((measure_from, measure_from + duration))

    connected = threading.Barrier(in_flight, action=started)

    def worker() -> None:
        try:
            call = connect()
        except BaseException:
            connected.abort()  # the other threads and client processes stop waiting for this one
            start.abort()
            raise
        connected.wait(CONNECT_TIMEOUT_S)
        measure_from, stop_at = window
        while (now := time.perf_counter()) < stop_at:
            call()
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def _rest_client_process(
    addr: str,
    path: str,
    _payload: bytes,
    duration: float,
    tls: Tls,
    out: Any,
    in_flight: int,
    metadata: Metadata,
    start: Barrier,
) -> None:
    """HTTP/1.1 keep-alive GETs from `in_flight` threads (one TLS connection each).

    The request is built once and the response read with no more parsing than it takes to
    find its end: http.client parses every response's headers with the email package, and on
    these 2 cores the CPU a load generator spends is CPU the edge does not get."""
    import socket
    import ssl

    assert tls is not None
    ca, cert, key = tls
    host, _, port = addr.rpartition(":")
    headers = "".join(f"{name}: {value}\r\n" for name, value in metadata)
    request = f"GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}\r\n".encode()

    def connect() -> Callable[[], None]:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        conn = context.wrap_socket(
            socket.create_connection((host, int(port)), timeout=10), server_hostname=host
        )
        received = bytearray()

        def read_more() -> None:
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError(f"REST {path}: the edge closed the connection")
            received.extend(chunk)

        def get() -> None:
            conn.sendall(request)
            while (end := received.find(b"\r\n\r\n")) < 0:
                read_more()
            head = bytes(received[:end]).lower()
            if not head.startswith(b"http/1.1 200 "):
                status_line = head.partition(b"\r\n")[0].decode()
                raise RuntimeError(f"REST {path}: {status_line}")
            length = _CONTENT_LENGTH.search(head)
            if length is None:
                raise RuntimeError(f"REST {path}: a response without content-length")
            total = end + 4 + int(length.group(1))
            while len(received) < total:
                read_more()
            del received[:total]

        return get

    out.put(_in_threads(in_flight, duration, start, connect))


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")


def measure(
    addr: str,
    method: str,
    payload: bytes,
    duration: float = DURATION_S,
    tls: Tls = None,
    *,
    rest: bool = False,
    processes: int = CLIENT_PROCESSES,
    in_flight: int = IN_FLIGHT_PER_PROCESS,
    metadata: Metadata = (),
) -> dict[str, float]:
    """Throughput and latency percentiles of `method` (a gRPC method, or a REST path when `rest`)
    with `processes` client processes keeping `in_flight` calls each."""
    target = _rest_client_process if rest else _client_process
    return _measure_with(target, addr, method, duration, metadata, payload, tls, processes, in_flight)


def _measure_with(
    target: Any,
    addr: str,
    method: str,
    duration: float,
    metadata: Metadata,
    payload: bytes = b"",
    tls: Tls = None,
    processes: int = CLIENT_PROCESSES,
    in_flight: int = IN_FLIGHT_PER_PROCESS,
) -> dict[str, float]:
    """Run `target` (a client process function) from `processes` processes and summarise."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(processes)  # every client measures over the same stretch of time
    args = (addr, method, payload, duration, tls, out, in_flight, metadata, start)
    clients = [ctx.Process(target=target, args=args) for _ in range(processes)]
    for c in clients:
        c.start()
    latencies = sorted(x for _ in clients for x in out.get(timeout=duration + 60))
    for c in clients:
        c.join()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rps": round(len(latencies) / duration),
        "p50_ms": round(quantiles[49] * 1000, 3),
        "p99_ms": round(quantiles[98] * 1000, 3),
        "calls": len(latencies),
    }


def interleaved(targets: dict[str, Callable[[], dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Measure every target ROUNDS times, taking turns; each keeps its median round."""
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    for _ in range(ROUNDS):
        for name, measure_once in targets.items():
            rounds[name].append(measure_once())
    medians = {}
    for name, results in rounds.items():
        median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
        medians[name] = {**median, "rps_rounds": [r["rps"] for r in results]}
    return medians


def ratio(result: dict[str, Any], baseline: dict[str, Any]) -> float:
    return round(float(result["rps"]) / float(baseline["rps"]), 3)


# -- Redis clients ---------------------------------------------------------------------------


async def redis_get_cost(url: str, calls: int = 20_000, callers: int = 32) -> dict[str, Any]:
    """CPU (of this process) per GET with `callers` concurrent callers: the pooled redis-py
    client against the multiplexed connection the hot path uses (`services.runtime.redis_mux`)."""
    from services.runtime import redis_client
    from services.runtime.redis_mux import MultiplexedRedis

    pooled = redis_client.connect(url, timeout=5)
    mux = MultiplexedRedis(pooled)
    await pooled.set("bench:redis-get", "12")

    async def cost(get: Callable[[str], Awaitable[Any]]) -> dict[str, float]:
        async def caller() -> None:
            for _ in range(calls // callers):
                await get("bench:redis-get")

        await get("bench:redis-get")  # connected
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu_us_per_get": round(cpu / calls * 1e6, 1), "gets_per_s": round(calls / wall)}

    try:
        return {"callers": callers, "pooled": await cost(pooled.get), "multiplexed": await cost(mux.get)}
    finally:
        await mux.aclose()
        await pooled.aclose()


# -- watch fan-out --------------------------------------------------------------------------

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


def watch_alone(_duration: float) -> dict[str, Any]:
    """The watch fan-out alone (`python -m tools.bench watch`), on a fresh Valkey and service."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        config = None
        try:
            config = start_service(["config"], valkey.url, state, extra_env=FANOUT_SERVICE_ENV)
            return {**watch_fanout(config.addr), "goal_p99_ms": FANOUT_GOAL_P99_MS}
        finally:
            if config is not None:
                config.process.stop()
            valkey.process.stop()


def _serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=1)
    return True


# -- the run --------------------------------------------------------------------------------


def _seed(addr: str, tls: CertPaths | None = None) -> tuple[bytes, bytes]:
    """A namespace with a ~1 KiB base and an overlay; the serialized Resolve/Get requests."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    with grpc_channel(addr, tls) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        stub.CreateNamespace(pb.CreateNamespaceRequest(namespace_id="bench", namespace=pb.Namespace()))
        base: dict[str, Any] = {
            f"service{i}": {"host": f"svc{i}.internal", "port": 8000 + i, "tags": ["a", "b"]}
            for i in range(12)
        }
        overlay: dict[str, Any] = {"service3": {"port": 9003}, "debug": False}
        for env, content in (("default", base), ("prod", overlay)):
            message = pb.Environment(name=f"namespaces/bench/environments/{env}")
            message.content.update(content)
            stub.UpdateEnvironment(pb.UpdateEnvironmentRequest(environment=message, allow_missing=True))
    name = "namespaces/bench/environments/prod"
    return (
        pb.ResolveConfigRequest(name=name).SerializeToString(),
        pb.GetEnvironmentRequest(name=name).SerializeToString(),
    )


def _cached(request: bytes) -> bytes:
    """The same ResolveConfig request, asking for READ_CONSISTENCY_CACHED."""
    from devmesh.config.v1 import config_pb2 as pb

    message = pb.ResolveConfigRequest.FromString(request)
    message.consistency = pb.READ_CONSISTENCY_CACHED
    return message.SerializeToString()


def edge(duration: float) -> dict[str, Any]:
    """The whole stack from cold, then ResolveConfig straight to the service (mTLS) and through
    the edge over gRPC and REST, one after the other with the same client load."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        # Every call carries the admin key; its role's limit is set out of the benchmark's reach.
        env = {"DEVMESH_LOG_LEVEL": "info", "DEVMESH_RATE_LIMITS": "admin=1000000/1000000,*=20/40"}
        with local_stack(Path(tmp), ["config"], service_env=env) as stack:
            cold_start = time.perf_counter() - started
            assert stack.envoy is not None
            tls = stack.operator_tls
            paths: Tls = (str(tls.ca), str(tls.cert), str(tls.key))
            key: Metadata = (("x-api-key", stack.admin_api_key),)
            direct_addr = stack.services["config"].addr
            resolve, _ = _seed(direct_addr, tls)
            method = "/devmesh.config.v1.ConfigService/ResolveConfig"
            edge_addr, rest_path = stack.envoy.edge_addr, "/v1/namespaces/bench/environments/prod:resolve"
            once = functools.partial(measure, duration=duration / ROUNDS, tls=paths, metadata=key)
            results = interleaved(
                {
                    "direct": functools.partial(once, direct_addr, method, resolve),
                    "grpc": functools.partial(once, edge_addr, method, resolve),
                    "rest": functools.partial(once, edge_addr, rest_path, b"", rest=True, in_flight=16),
                }
            )
            direct, via_grpc, via_rest = results["direct"], results["grpc"], results["rest"]
            # Latency added by the edge, without queueing: one call at a time.
            one = functools.partial(
                measure, duration=duration, tls=paths, processes=1, in_flight=1, metadata=key
            )
            direct_serial = one(direct_addr, method, resolve)
            grpc_serial = one(edge_addr, method, resolve)
            rest_serial = one(edge_addr, rest_path, b"", rest=True)

    def overhead(result: dict[str, float]) -> dict[str, float]:
        return {
            **result,
            "p50_overhead_ms": round(result["p50_ms"] - direct_serial["p50_ms"], 3),
            "p99_overhead_ms": round(result["p99_ms"] - direct_serial["p99_ms"], 3),
        }

    return {
        "cold_start_s": round(cold_start, 2),
        "goal_cold_start_s": 15,
        "throughput": {
            "direct_mtls": direct,
            "edge_grpc": {**via_grpc, "ratio_to_direct": ratio(via_grpc, direct)},
            "edge_rest": {**via_rest, "ratio_to_direct": ratio(via_rest, direct)},
            "goal_ratio_to_direct": 0.85,
        },
        "one_call_at_a_time": {
            "direct_mtls": direct_serial,
            "edge_grpc": overhead(grpc_serial),
            "edge_rest": overhead(rest_serial),
            "goal_p99_overhead_ms": 2,
        },
    }


def run(duration: float) -> dict[str, Any]:
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "client_processes": CLIENT_PROCESSES,
            "in_flight_per_process": IN_FLIGHT_PER_PROCESS,
            "duration_s": duration,
            "rounds": ROUNDS,
        },
        **config_reads(duration),
        "writes": config_writes(duration),
        "identity": identity(duration),
        "secrets": secrets_access(duration),
        "edge": edge(duration),
    }


def config_reads(duration: float) -> dict[str, Any]:
    """ResolveConfig and GetEnvironment against the bare echo server, the watch fan-out, and
    the cost of a Redis GET through either client."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        echo_port = free_port()
        echo = spawn("echo", [sys.executable, "-m", "tools.bench", "echo-server", str(echo_port)], state)
        config = None
        try:
            wait_until(lambda: _echo_ready(f"{LOOPBACK}:{echo_port}"), 15, "echo server", echo)
            config = start_service(
                ["config"],
                valkey.url,
                state,
                extra_env=FANOUT_SERVICE_ENV,
            )
            resolve, get = _seed(config.addr)
            svc = "/devmesh.config.v1.ConfigService"
            once = functools.partial(measure, duration=duration / ROUNDS)
            results = interleaved(
                {
                    "echo": functools.partial(once, f"{LOOPBACK}:{echo_port}", ECHO_METHOD, resolve),
                    "resolve": functools.partial(once, config.addr, f"{svc}/ResolveConfig", resolve),
                    "cached": functools.partial(once, config.addr, f"{svc}/ResolveConfig", _cached(resolve)),
                    "get": functools.partial(once, config.addr, f"{svc}/GetEnvironment", get),
                }
            )
            fanout = watch_fanout(config.addr)
            redis_get = asyncio.run(redis_get_cost(valkey.url))
        finally:
            if config is not None:
                config.process.stop()
            echo.stop()
            valkey.process.stop()
    return {
        "unary": {
            "echo_bare": results["echo"],
            **{
                label: {**results[name], "ratio_to_echo": ratio(results[name], results["echo"])}
                for label, name in [
                    ("resolve_config", "resolve"),
                    ("resolve_config_cached", "cached"),
                    ("get_environment", "get"),
                ]
            },
            "goal_ratio_to_echo": 0.8,
        },
        "watch_fanout": {**fanout, "goal_p99_ms": FANOUT_GOAL_P99_MS},
        "redis_get": redis_get,
    }


async def _mint_key(redis_url: str, pepper: bytes) -> str:
    """An admin key whose own limit the benchmark cannot reach, minted as `make run` would."""
    from services.config.api_keys import ApiKeys, NewKey
    from services.runtime import redis_client
    from services.runtime.identity.principal import Principal

    redis = redis_client.connect(redis_url, 2.0)
    try:
        api_keys = ApiKeys(redis, redis_client.DurableWriter(redis, True, 2.0), lambda: pepper)
        new = NewKey("bench", "bench", "admin", (), 0, rate_per_second=1_000_000, rate_burst=10_000_000)
        _, key = await api_keys.create(Principal("bench", role="admin"), new)
        return key
    finally:
        await redis.aclose()


def _histogram(metrics_url: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of a Prometheus histogram."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of what a histogram recorded between two scrapes, interpolated within its
    bucket (as Prometheus's histogram_quantile does)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    rank, lower, previous = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - previous) / max(count - previous, 1e-9)
        lower, previous = bound, count
    return lower


def identity(duration: float) -> dict[str, Any]:
    """ResolveConfig with API-key authentication and the Redis rate limiter on, against the same
    call with both off and against the bare echo server, under the same load in one run; then
    one call at a time, whose p50 difference is what authentication plus rate limiting cost."""
    from services.runtime.vault import API_KEY_PEPPER_PATH, KV_MOUNT
    from tools.stack import vault_bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        buckets = start_valkey(state / "valkey-ratelimit", durable=False)  # as `make run` does
        bao = start_openbao(state / "openbao")
        echo_port = free_port()
        echo = spawn("echo", [sys.executable, "-m", "tools.bench", "echo-server", str(echo_port)], state)
        started: list[Any] = []
        try:
            role = vault_bootstrap.bootstrap(bao.client(), ["config"], state / "vault")["config"]
            log_env = {"DEVMESH_LOG_LEVEL": "info"}
            started.append(off := start_service(["config"], valkey.url, state, extra_env=log_env))
            login = VaultLogin(bao.addr, role.role_id, role.secret_id_file)
            metrics = f"{LOOPBACK}:{free_port()}"
            on_env = {**log_env, "DEVMESH_RATE_LIMIT_REDIS_URL": buckets.url, "DEVMESH_METRICS_ADDR": metrics}
            access_check = functools.partial(
                _histogram, f"http://{metrics}/metrics", "devmesh_access_check_seconds"
            )
            started.append(on := start_service(["config"], valkey.url, state, extra_env=on_env, vault=login))
            wait_until(lambda: _echo_ready(f"{LOOPBACK}:{echo_port}"), 15, "echo server", echo)
            resolve, _ = _seed(off.addr)
            secret = bao.client().secrets.kv.v2.read_secret_version(
                API_KEY_PEPPER_PATH, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
            key = asyncio.run(_mint_key(valkey.url, bytes.fromhex(secret["data"]["data"]["pepper"])))
            with_key: Metadata = (("x-api-key", key),)
            method = "/devmesh.config.v1.ConfigService/ResolveConfig"
            once = functools.partial(measure, duration=duration / ROUNDS)
            before_load = access_check()  # only the guarded load reaches `on` until after_load
            results = interleaved(
                {
                    "echo": functools.partial(once, f"{LOOPBACK}:{echo_port}", ECHO_METHOD, resolve),
                    "plain": functools.partial(once, off.addr, method, resolve),
                    "guarded": functools.partial(once, on.addr, method, resolve, metadata=with_key),
                }
            )
            after_load = access_check()
            echo_result, plain, guarded = results["echo"], results["plain"], results["guarded"]
            one = functools.partial(measure, duration=duration, processes=1, in_flight=1)
            plain_serial = one(off.addr, method, resolve)
            guarded_serial = one(on.addr, method, resolve, metadata=with_key)
            after_serial = access_check()
        finally:
            for service in started:
                service.process.stop()
            echo.stop()
            assert bao.process is not None
            bao.process.stop()
            buckets.process.stop()
            valkey.process.stop()
    return {
        "echo_bare": echo_result,
        "resolve_auth_off": {**plain, "ratio_to_echo": ratio(plain, echo_result)},
        "resolve_api_key_and_rate_limit": {
            **guarded,
            "ratio_to_echo": ratio(guarded, echo_result),
            "ratio_to_auth_off": ratio(guarded, plain),
        },
        "goal_ratio_to_echo": 0.7,
        "one_call_at_a_time": {
            "auth_off": plain_serial,
            "api_key_and_rate_limit": guarded_serial,
            "p50_difference_us": round((guarded_serial["p50_ms"] - plain_serial["p50_ms"]) * 1000),
        },
        # Measured inside the service: the time the access interceptor (authentication,
        # authorization, rate limit) took per call, from its histogram.
        "auth_and_rate_limit_in_process": {
            "one_call_at_a_time_p50_us": round(_quantile(after_load, after_serial, 0.5) * 1e6),
            "one_call_at_a_time_p99_us": round(_quantile(after_load, after_serial, 0.99) * 1e6),
            "under_load_p50_us": round(_quantile(before_load, after_load, 0.5) * 1e6),
            "goal_p50_us": 150,
        },
    }


def _vault_client_process(
    addr: str,
    path: str,
    _payload: bytes,
    duration: float,
    tls: Tls,
    out: Any,
    in_flight: int,
    metadata: Metadata,
    start: Barrier,
) -> None:
    """KV v2 reads straight from Vault with hvac, from `in_flight` threads (a client each)."""
    import hvac

    from services.runtime.vault import KV_MOUNT

    token = dict(metadata)["x-vault-token"]

    def connect() -> Callable[[], None]:
        kv = hvac.Client(url=addr, token=token, timeout=10).secrets.kv.v2
        return lambda: kv.read_secret_version(path, mount_point=KV_MOUNT, raise_on_deleted_version=True)

    out.put(_in_threads(in_flight, duration, start, connect))


def secrets_access(duration: float) -> dict[str, Any]:
    """AccessSecretVersion through the whole chain (API key, rate limit, access policy, audit,
    Vault) against reading the same KV v2 entry straight from Vault with hvac, in one run."""
    from devmesh.secrets.v1 import secrets_pb2 as spb
    from devmesh.secrets.v1 import secrets_pb2_grpc
    from services.runtime.vault import API_KEY_PEPPER_PATH, KV_MOUNT
    from services.secrets.vault_store import PATH
    from tools.stack import vault_bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        buckets = start_valkey(state / "valkey-ratelimit", durable=False)
        bao = start_openbao(state / "openbao")
        service = None
        try:
            role = vault_bootstrap.bootstrap(bao.client(), ["secrets"], state / "vault")["secrets"]
            env = {"DEVMESH_LOG_LEVEL": "info", "DEVMESH_RATE_LIMIT_REDIS_URL": buckets.url}
            login = VaultLogin(bao.addr, role.role_id, role.secret_id_file)
            service = start_service(["secrets"], valkey.url, state, extra_env=env, vault=login)
            secret = bao.client().secrets.kv.v2.read_secret_version(
                API_KEY_PEPPER_PATH, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
            key = asyncio.run(_mint_key(valkey.url, bytes.fromhex(secret["data"]["data"]["pepper"])))
            with_key: Metadata = (("x-api-key", key),)
            with grpc.insecure_channel(service.addr) as channel:
                stub = secrets_pb2_grpc.SecretsServiceStub(channel)
                stub.CreateSecret(
                    spb.CreateSecretRequest(secret_id="bench", secret=spb.Secret()), metadata=with_key
                )
                payload = spb.SecretPayload(data=b"correct horse battery staple")
                stub.AddSecretVersion(
                    spb.AddSecretVersionRequest(parent="secrets/bench", payload=payload), metadata=with_key
                )
            request = spb.AccessSecretVersionRequest(name="secrets/bench/versions/latest").SerializeToString()
            method = "/devmesh.secrets.v1.SecretsService/AccessSecretVersion"
            vault_token: Metadata = (("x-vault-token", bao.token),)
            results = interleaved(
                {
                    "chain": functools.partial(
                        measure, service.addr, method, request, duration / ROUNDS, metadata=with_key
                    ),
                    "direct": functools.partial(
                        _measure_with,
                        _vault_client_process,
                        bao.addr,
                        f"{PATH}/bench",
                        duration / ROUNDS,
                        vault_token,
                    ),
                }
            )
            chain, direct = results["chain"], results["direct"]
        finally:
            if service is not None:
                service.process.stop()
            assert bao.process is not None
            bao.process.stop()
            buckets.process.stop()
            valkey.process.stop()
    return {
        "access_secret_version": {**chain, "ratio_to_direct_kv_read": ratio(chain, direct)},
        "direct_hvac_kv_read": direct,
    }


# -- concurrent config writes --------------------------------------------------------------


WRITERS = 16


def _writer_process(
    addr: str,
    namespace: str,
    _payload: bytes,
    duration: float,
    _tls: Tls,
    out: Any,
    in_flight: int,
    _metadata: Metadata,
    start: Barrier,
) -> None:
    """`in_flight` writers, each updating its own environment of `namespace` back to back."""
    out.put(asyncio.run(_write_load(addr, namespace, duration, in_flight, start)))


async def _write_load(
    addr: str, namespace: str, duration: float, writers: int, start: Barrier
) -> tuple[list[float], dict[str, int]]:
    from google.rpc import error_details_pb2, status_pb2

    from devmesh.config.v1 import config_pb2 as pb

    latencies: list[float] = []
    errors: dict[str, int] = {}  # "CODE/REASON" -> calls that failed so, warm-up included
    document: dict[str, Any] = {
        f"key{i}": {"value": i, "enabled": True, "name": f"item-{i}"} for i in range(16)
    }
    async with aio.insecure_channel(addr) as channel:
        call = channel.unary_unary("/devmesh.config.v1.ConfigService/UpdateEnvironment")
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        except BaseException:
            start.abort()
            raise
        start.wait(CONNECT_TIMEOUT_S)
        measure_from = time.perf_counter() + WARMUP_S
        stop_at = measure_from + duration

        def reason(error: aio.AioRpcError) -> str:
            for key, value in error.trailing_metadata() or ():
                if key == "grpc-status-details-bin":
                    for packed in status_pb2.Status.FromString(value).details:
                        info = error_details_pb2.ErrorInfo()
                        if packed.Unpack(info):
                            return f"{error.code().name}/{info.reason}"
            return str(error.code().name)

        async def writer(index: int) -> None:
            environment = pb.Environment(name=f"namespaces/{namespace}/environments/w{os.getpid()}-{index}")
            environment.content.update(document)
            request = pb.UpdateEnvironmentRequest(
                environment=environment, allow_missing=True
            ).SerializeToString()
            while (now := time.perf_counter()) < stop_at:
                try:
                    await call(request, timeout=10)
                except aio.AioRpcError as error:
                    errors[reason(error)] = errors.get(reason(error), 0) + 1
                    continue
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(writer(i) for i in range(writers)))
    return latencies, errors


def _measure_writes(
    addr: str, namespace: str, writers: int, duration: float, errors: dict[str, int]
) -> dict[str, Any]:
    """Writes/s and latency of `writers` concurrent writers (one client process); the errors
    they met are added to `errors`."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(1)
    client = ctx.Process(
        target=_writer_process, args=(addr, namespace, b"", duration, None, out, writers, (), start)
    )
    client.start()
    latencies, met = out.get(timeout=duration + 60)
    client.join()
    for kind, count in met.items():
        errors[kind] = errors.get(kind, 0) + count
    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rps": round(len(latencies) / duration),
        "p50_ms": round(quantiles[49] * 1000, 3),
        "p99_ms": round(quantiles[98] * 1000, 3),
        "calls": len(latencies),
    }


def config_writes(duration: float) -> dict[str, Any]:
    """UpdateEnvironment from 16 concurrent writers, each to its own environment of one
    namespace, against one writer, taking turns in one run; and the errors either met."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        config = None
        try:
            config = start_service(["config"], valkey.url, state, extra_env={"DEVMESH_LOG_LEVEL": "info"})
            with grpc_channel(config.addr, None) as channel:
                config_pb2_grpc.ConfigServiceStub(channel).CreateNamespace(
                    pb.CreateNamespaceRequest(namespace_id="writes", namespace=pb.Namespace())
                )
            errors: dict[str, dict[str, int]] = {"one": {}, "many": {}}
            once = functools.partial(_measure_writes, config.addr, "writes", duration=duration / ROUNDS)
            results = interleaved(
                {
                    "one": functools.partial(once, writers=1, errors=errors["one"]),
                    "many": functools.partial(once, writers=WRITERS, errors=errors["many"]),
                }
            )
        finally:
            if config is not None:
                config.process.stop()
            valkey.process.stop()

    def failures(met: dict[str, int]) -> dict[str, Any]:
        return {
            "contention_errors": sum(n for kind, n in met.items() if kind.endswith("/CONTENTION")),
            "aborted_errors": sum(n for kind, n in met.items() if kind.startswith("ABORTED")),
            "errors": met,
        }

    one, many = results["one"], results["many"]
    return {
        "one_writer": {**one, **failures(errors["one"])},
        f"{WRITERS}_writers_{WRITERS}_environments": {
            **many,
            "ratio_to_one_writer": ratio(many, one),
            **failures(errors["many"]),
        },
        "goal_contention_errors": 0,
        "goal_ratio_to_one_writer": 1.0,
    }


def _echo_ready(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        channel.unary_unary(ECHO_METHOD)(b"", timeout=1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    parser.add_argument(
        "command",
        nargs="?",
        default="all",
        choices=["all", "config", "writes", "edge", "identity", "secrets", "watch", "echo-server"],
    )
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds measured per target")
    args = parser.parse_args(argv)
    runtime_logging.configure("warning")  # stdout carries the JSON result only
    if args.command == "echo-server":
        asyncio.run(_echo_server(args.port))
        return 0
    sections = {
        "edge": edge,
        "identity": identity,
        "secrets": secrets_access,
        "writes": config_writes,
        "watch": watch_alone,
    }
    if args.command == "config":
        result = config_reads(args.duration)
    elif args.command in sections:
        result = {args.command: sections[args.command](args.duration)}
    else:
        result = run(args.duration)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

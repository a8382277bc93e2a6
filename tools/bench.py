"""Benchmarks; `make bench` prints one JSON document on stdout.

- unary: ResolveConfig and GetEnvironment through the full interceptor chain of a real
  `devmesh serve config` process, against a bare grpc.aio echo server measured in the same
  run with the same load. One Python client saturates before a server does on 2 cores
  (shared/notes/runtime.md), so the load comes from several client processes.
- watch_fanout: one write delivered to 1,000 open WatchConfig streams; latency from the
  write's acknowledgement to each stream's receipt.
- edge: cold start of the whole local stack (Valkey, OpenBao and its bootstrap, certificates,
  the config service, Envoy healthy), then ResolveConfig straight to the service over mTLS,
  through the edge over gRPC, and through the edge over REST (HTTP/1.1 keep-alive clients).

Goals (reported, not asserted): unary throughput >= 0.8 of echo; fan-out p99 < 250 ms;
cold start < 15 s; edge >= 0.85 of direct throughput with p99 overhead < 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from services.runtime import logging as runtime_logging
from tools.certs import CertPaths
from tools.stack import (
    LOOPBACK,
    free_port,
    grpc_channel,
    local_stack,
    spawn,
    start_service,
    start_valkey,
    wait_until,
)

CLIENT_PROCESSES = 3
IN_FLIGHT_PER_PROCESS = 32
DURATION_S = 5.0
WARMUP_S = 1.0
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


def _channel(addr: str, tls: Tls) -> aio.Channel:
    if tls is None:
        return aio.insecure_channel(addr)
    ca, cert, key = (Path(p).read_bytes() for p in tls)
    return aio.secure_channel(addr, grpc.ssl_channel_credentials(ca, key, cert))


async def _load(
    addr: str, method: str, payload: bytes, duration: float, in_flight: int, tls: Tls
) -> list[float]:
    latencies: list[float] = []
    async with _channel(addr, tls) as channel:
        call = channel.unary_unary(method)
        stop_at = time.perf_counter() + WARMUP_S + duration
        measure_from = time.perf_counter() + WARMUP_S

        async def worker() -> None:
            while (now := time.perf_counter()) < stop_at:
                await call(payload, timeout=10)
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies


def _client_process(
    addr: str, method: str, payload: bytes, duration: float, tls: Tls, out: Any, in_flight: int
) -> None:
    out.put(asyncio.run(_load(addr, method, payload, duration, in_flight, tls)))


def _rest_client_process(
    addr: str, path: str, _payload: bytes, duration: float, tls: Tls, out: Any, in_flight: int
) -> None:
    """HTTP/1.1 keep-alive GETs from `in_flight` threads (one connection each)."""
    import http.client
    import ssl
    import threading

    assert tls is not None
    ca, cert, key = tls
    host, _, port = addr.rpartition(":")
    latencies: list[float] = []
    stop_at = time.perf_counter() + WARMUP_S + duration
    measure_from = time.perf_counter() + WARMUP_S

    def worker() -> None:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        while (now := time.perf_counter()) < stop_at:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"REST {path}: HTTP {response.status}")
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(latencies)


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
) -> dict[str, float]:
    """Throughput and latency percentiles of `method` (a gRPC method, or a REST path when `rest`)
    with `processes` client processes keeping `in_flight` calls each."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    target = _rest_client_process if rest else _client_process
    clients = [
        ctx.Process(target=target, args=(addr, method, payload, duration, tls, out, in_flight))
        for _ in range(processes)
    ]
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


# -- watch fan-out --------------------------------------------------------------------------


async def watch_fanout(addr: str, streams: int = 1000, channels: int = 10) -> dict[str, float]:
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    opened = [aio.insecure_channel(addr) for _ in range(channels)]
    try:
        stub = config_pb2_grpc.ConfigServiceStub(opened[0])
        await stub.CreateNamespace(pb.CreateNamespaceRequest(namespace_id="fanout", namespace=pb.Namespace()))
        name = "namespaces/fanout/environments/default"
        ready = 0
        all_ready = asyncio.Event()
        received: list[float] = []
        wrote_at = 0.0

        async def watcher(channel: aio.Channel) -> None:
            nonlocal ready
            call = config_pb2_grpc.ConfigServiceStub(channel).WatchConfig(
                pb.WatchConfigRequest(name=name, since_revision=1)
            )
            first = await call.read()  # a progress beat: the stream is registered
            assert first.HasField("progress")
            ready += 1
            if ready == streams:
                all_ready.set()
            while True:
                event = await call.read()
                if event.HasField("change"):
                    received.append(time.perf_counter() - wrote_at)
                    call.cancel()
                    return

        tasks = [asyncio.create_task(watcher(opened[i % channels])) for i in range(streams)]
        await asyncio.wait_for(all_ready.wait(), 60)
        content = pb.Environment(name=name)
        content.content.update({"fanout": True})
        wrote_at = time.perf_counter()
        await stub.UpdateEnvironment(pb.UpdateEnvironmentRequest(environment=content, allow_missing=True))
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        for channel in opened:
            await channel.close()
    received.sort()
    quantiles = statistics.quantiles(received, n=100)
    return {
        "streams": len(received),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "max_ms": round(received[-1] * 1000, 1),
    }


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


def edge(duration: float) -> dict[str, Any]:
    """The whole stack from cold, then ResolveConfig straight to the service (mTLS) and through
    the edge over gRPC and REST, one after the other with the same client load."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with local_stack(Path(tmp), ["config"], service_env={"DEVMESH_LOG_LEVEL": "info"}) as stack:
            cold_start = time.perf_counter() - started
            assert stack.envoy is not None
            tls = stack.operator_tls
            paths: Tls = (str(tls.ca), str(tls.cert), str(tls.key))
            direct_addr = stack.services["config"].addr
            resolve, _ = _seed(direct_addr, tls)
            method = "/devmesh.config.v1.ConfigService/ResolveConfig"
            edge_addr, rest_path = stack.envoy.edge_addr, "/v1/namespaces/bench/environments/prod:resolve"
            direct = measure(direct_addr, method, resolve, duration, paths)
            via_grpc = measure(edge_addr, method, resolve, duration, paths)
            via_rest = measure(edge_addr, rest_path, b"", duration, paths, rest=True, in_flight=16)
            # Latency added by the edge, without queueing: one call at a time.
            one = functools.partial(measure, duration=duration, tls=paths, processes=1, in_flight=1)
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
            "edge_grpc": {**via_grpc, "ratio_to_direct": round(via_grpc["rps"] / direct["rps"], 3)},
            "edge_rest": {**via_rest, "ratio_to_direct": round(via_rest["rps"] / direct["rps"], 3)},
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
                extra_env={"DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "1", "DEVMESH_LOG_LEVEL": "info"},
            )
            resolve, get = _seed(config.addr)
            echo_result = measure(f"{LOOPBACK}:{echo_port}", ECHO_METHOD, resolve, duration)
            svc = "/devmesh.config.v1.ConfigService"
            resolve_result = measure(config.addr, f"{svc}/ResolveConfig", resolve, duration)
            get_result = measure(config.addr, f"{svc}/GetEnvironment", get, duration)
            fanout = asyncio.run(watch_fanout(config.addr))
        finally:
            if config is not None:
                config.process.stop()
            echo.stop()
            valkey.process.stop()
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "client_processes": CLIENT_PROCESSES,
            "in_flight_per_process": IN_FLIGHT_PER_PROCESS,
            "duration_s": duration,
        },
        "unary": {
            "echo_bare": echo_result,
            "resolve_config": {
                **resolve_result,
                "ratio_to_echo": round(resolve_result["rps"] / echo_result["rps"], 3),
            },
            "get_environment": {
                **get_result,
                "ratio_to_echo": round(get_result["rps"] / echo_result["rps"], 3),
            },
            "goal_ratio_to_echo": 0.8,
        },
        "watch_fanout": {**fanout, "goal_p99_ms": 250},
        "edge": edge(duration),
    }


def _echo_ready(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        channel.unary_unary(ECHO_METHOD)(b"", timeout=1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    parser.add_argument("command", nargs="?", default="all", choices=["all", "edge", "echo-server"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds measured per target")
    args = parser.parse_args(argv)
    runtime_logging.configure("warning")  # stdout carries the JSON result only
    if args.command == "echo-server":
        asyncio.run(_echo_server(args.port))
        return 0
    result = {"edge": edge(args.duration)} if args.command == "edge" else run(args.duration)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks; `make bench` prints one JSON document on stdout.

- unary: ResolveConfig and GetEnvironment through the full interceptor chain of a real
  `devmesh serve config` process, against a bare grpc.aio echo server measured in the same
  run with the same load. One Python client saturates before a server does on 2 cores
  (shared/notes/runtime.md), so the load comes from several client processes.
- watch_fanout: one write delivered to 1,000 open WatchConfig streams; latency from the
  write's acknowledgement to each stream's receipt.

Goals (reported, not asserted): unary throughput >= 0.8 of echo; fan-out p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
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

from tools.stack import LOOPBACK, free_port, spawn, start_service, start_valkey, wait_until

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


async def _load(addr: str, method: str, payload: bytes, duration: float, in_flight: int) -> list[float]:
    latencies: list[float] = []
    async with aio.insecure_channel(addr) as channel:
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


def _client_process(addr: str, method: str, payload: bytes, duration: float, out: Any) -> None:
    out.put(asyncio.run(_load(addr, method, payload, duration, IN_FLIGHT_PER_PROCESS)))


def measure(addr: str, method: str, payload: bytes, duration: float = DURATION_S) -> dict[str, float]:
    """Throughput and latency percentiles of `method` under CLIENT_PROCESSES concurrent clients."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    clients = [
        ctx.Process(target=_client_process, args=(addr, method, payload, duration, out))
        for _ in range(CLIENT_PROCESSES)
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


def _seed(addr: str) -> tuple[bytes, bytes]:
    """A namespace with a ~1 KiB base and an overlay; the serialized Resolve/Get requests."""
    from devmesh.config.v1 import config_pb2 as pb
    from devmesh.config.v1 import config_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
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
    }


def _echo_ready(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        channel.unary_unary(ECHO_METHOD)(b"", timeout=1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    parser.add_argument("command", nargs="?", default="all", choices=["all", "echo-server"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds measured per target")
    args = parser.parse_args(argv)
    if args.command == "echo-server":
        asyncio.run(_echo_server(args.port))
        return 0
    print(json.dumps(run(args.duration), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

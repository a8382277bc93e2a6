"""ResolveConfig and GetEnvironment against the bare echo server; the watch fan-out; a Redis GET.

- unary: ResolveConfig (STRONG, the default, and READ_CONSISTENCY_CACHED) and GetEnvironment
  through the full call pipeline of a real `devmesh serve config` process, against a bare
  grpc.aio echo server measured in the same run with the same load. One Python client
  saturates before a server does on 2 cores (shared/notes/runtime.md), so the load comes from
  several client processes. Goal: throughput >= 0.8 of echo.
- watch_fanout: one write delivered to 1,000 open WatchConfig streams of the same service
  (`tools.bench.fanout`; alone on a fresh stack: `python -m tools.bench watch`). Goal: p99 < 250 ms.
- redis_get: the CPU a GET costs through the pooled redis-py client and through the
  multiplexed connection the hot path uses.

Its figures sit at the top of the JSON (`unary`, `watch_fanout`, `redis_get`), as before there
were sections.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tools.bench.echo import ECHO_METHOD, spawn_echo_server, wait_for_echo_server
from tools.bench.fanout import FANOUT_GOAL_P99_MS, FANOUT_SERVICE_ENV, watch_fanout
from tools.bench.load import ROUNDS, interleaved, measure, ratio
from tools.bench.sections import Section
from tools.bench.seed import seed_bench_namespace
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey


def run(duration: float) -> dict[str, Any]:
    """ResolveConfig and GetEnvironment against the bare echo server, the watch fan-out, and
    the cost of a Redis GET through either client."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        echo, echo_addr = spawn_echo_server(state)
        config = None
        try:
            wait_for_echo_server(echo, echo_addr)
            config = start_service(
                ["config"],
                valkey.url,
                state,
                extra_env=FANOUT_SERVICE_ENV,
            )
            resolve, get = seed_bench_namespace(config.addr)
            svc = "/devmesh.config.v1.ConfigService"
            once = functools.partial(measure, duration=duration / ROUNDS)
            results = interleaved(
                {
                    "echo": functools.partial(once, echo_addr, ECHO_METHOD, resolve),
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


SECTION = Section("config", run, order=10, top_level=True)


def _cached(request: bytes) -> bytes:
    """The same ResolveConfig request, asking for READ_CONSISTENCY_CACHED."""
    from devmesh.config.v1 import config_pb2 as pb

    message = pb.ResolveConfigRequest.FromString(request)
    message.consistency = pb.READ_CONSISTENCY_CACHED
    return message.SerializeToString()


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

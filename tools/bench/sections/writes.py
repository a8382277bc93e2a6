"""UpdateEnvironment from 16 concurrent writers (one environment each, one namespace) against one writer.

Taking turns in one run, with the ABORTED (CONTENTION) errors either met. Goal: no CONTENTION,
and 16 writers' writes/s not below one writer's.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpc import aio

from tools.bench.load import CONNECT_TIMEOUT_S, ROUNDS, WARMUP_S, Metadata, Tls, interleaved, ratio
from tools.bench.sections import Section
from tools.bench.stats import summary
from tools.stack.channels import grpc_channel
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

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
    return summary(latencies, duration)


def run(duration: float) -> dict[str, Any]:
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


SECTION = Section("writes", run, order=20)

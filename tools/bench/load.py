"""The load the sections put on a target: client processes that connect, wait for each other
at a start barrier, warm up together and count the calls of the same stretch of time; and the
interleaved rounds that compare targets measured in one run.

A client process function takes `(addr, method, payload, duration, tls, out, in_flight,
metadata, start)` and puts its latencies on `out`: `grpc_client_process` and
`rest_client_process` here; a section may bring its own (built on `in_threads`, say) and run
it with `measure_with`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from tools.bench.stats import summary

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

CLIENT_PROCESSES = 3
IN_FLIGHT_PER_PROCESS = 32
DURATION_S = 10.0  # measured per target, over all its rounds
ROUNDS = 5
WARMUP_S = 1.0
CONNECT_TIMEOUT_S = 60.0  # for the client processes to connect and find each other

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


def grpc_client_process(
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
    """Unary gRPC calls of `method` with `payload`, `in_flight` at a time on one channel."""
    out.put(asyncio.run(_load(addr, method, payload, duration, in_flight, tls, metadata, start)))


def in_threads(
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


def rest_client_process(
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

    out.put(in_threads(in_flight, duration, start, connect))


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
    target = rest_client_process if rest else grpc_client_process
    return measure_with(target, addr, method, duration, metadata, payload, tls, processes, in_flight)


def measure_with(
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
    latencies = [x for _ in clients for x in out.get(timeout=duration + 60)]
    for c in clients:
        c.join()
    return summary(latencies, duration)


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
    """`result`'s throughput as a share of `baseline`'s."""
    return round(float(result["rps"]) / float(baseline["rps"]), 3)

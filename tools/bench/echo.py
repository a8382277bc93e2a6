"""The baseline of the unary sections: a bare grpc.aio server whose one method returns the
request, in its own process (`python -m tools.bench echo-server PORT`), measured in the same
run with the same load as the service it is compared with."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc import aio

from tools.stack.processes import LOOPBACK, ManagedProcess, free_port, spawn, wait_until

ECHO_METHOD = "/devmesh.bench.Echo/Echo"


async def serve(port: int) -> None:
    """Serve the echo method on loopback `port` until the process is stopped."""

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


def spawn_echo_server(log_dir: Path) -> tuple[ManagedProcess, str]:
    """Start the echo server in a process of its own (the caller stops it); and its address."""
    port = free_port()
    process = spawn("echo", [sys.executable, "-m", "tools.bench", "echo-server", str(port)], log_dir)
    return process, f"{LOOPBACK}:{port}"


def wait_for_echo_server(process: ManagedProcess, addr: str) -> None:
    """Return once the echo server at `addr` answers; fail if its process exits first."""
    wait_until(lambda: _echo_ready(addr), 15, "echo server", process)


def _echo_ready(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        channel.unary_unary(ECHO_METHOD)(b"", timeout=1)
    return True

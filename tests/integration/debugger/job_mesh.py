"""A pipeline server and debugger replicas that are each other's peers, on the session's Valkey,
with real worker processes: what the tests of AnalyzeJob and of following failures share.

The servers are stopped when the test module is done with them (not at the end of the
session), so that no coordinator or follower of theirs acts on other tests' runs.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio

from devmesh.debugger.v1 import debugger_pb2_grpc
from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2_grpc
from services import catalog
from services.debugger import app as debugger_app
from services.pipeline import app as pipeline_app
from services.runtime import redis_client
from services.runtime.server import Runtime, Server
from services.runtime.settings import RuntimeSettings
from tests.integration.pipeline.runs_harness import RUN_ENV, Mesh
from tools.stack.valkey import Valkey

DEBUGGER_ENV = {"DEVMESH_DEBUGGER_FAILURES_CLAIM_IDLE": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _serve(
    valkey: Valkey, spec: object, port: int, peers: tuple[tuple[str, str], ...], env: dict[str, str]
) -> Server:
    settings = RuntimeSettings(
        redis_url=valkey.url,
        grpc_addr=f"127.0.0.1:{port}",
        health_interval=0.2,
        insecure=True,
        auth="off",
        peers=peers,
    )  # type: ignore[call-arg]
    runtime = Runtime(settings, redis_client.connect(valkey.url, settings.redis_timeout), env, None)
    server = Server(runtime, [spec], mesh=catalog.every())  # type: ignore[list-item]
    await server.start()
    return server


@dataclass
class JobMesh:
    """The pipeline's stubs (and its workers), each debugger replica's stub."""

    mesh: Mesh
    debuggers: list[debugger_pb2_grpc.DebuggerServiceStub]
    channels: list[aio.Channel] = field(default_factory=list)

    @property
    def debugger(self) -> debugger_pb2_grpc.DebuggerServiceStub:
        return self.debuggers[0]


@contextlib.asynccontextmanager
async def job_mesh(
    valkey: Valkey, workdir: Path, *, replicas: int = 1, debugger_addr: str = ""
) -> AsyncIterator[JobMesh]:
    """A pipeline whose `on: transient` asks the debugger (at `debugger_addr` if given: a
    debugger that is not there), and `replicas` debuggers that follow its failures."""
    ports = [free_port() for _ in range(replicas)]
    pipeline_port = free_port()
    servers: list[Server] = []
    channels: list[aio.Channel] = []
    try:
        servers.append(
            await _serve(
                valkey,
                pipeline_app.SPEC,
                pipeline_port,
                (("debugger", debugger_addr or f"127.0.0.1:{ports[0]}"),),
                # The verdict is what these tests are about, not how long it may take: a loaded
                # machine (the suite runs three files at once) must not turn it into the fallback.
                {**RUN_ENV, "DEVMESH_PIPELINE_CLASSIFIER_TIMEOUT": "60"},
            )
        )
        for port in ports:
            servers.append(
                await _serve(
                    valkey,
                    debugger_app.SPEC,
                    port,
                    (("pipeline", f"127.0.0.1:{pipeline_port}"),),
                    DEBUGGER_ENV,
                )
            )
        channels = [aio.insecure_channel(f"127.0.0.1:{port}") for port in [pipeline_port, *ports]]
        pipelines = pipeline_pb2_grpc.PipelineServiceStub(channels[0])
        project = f"p-{uuid.uuid4().hex[:12]}"
        await pipelines.CreateProject(pipeline_pb2.CreateProjectRequest(project_id=project))
        mesh = Mesh(
            pipelines,
            runs_pb2_grpc.RunServiceStub(channels[0]),
            valkey,
            f"t{uuid.uuid4().hex[:10]}",
            project,
            workdir,
        )
        try:
            yield JobMesh(mesh, [debugger_pb2_grpc.DebuggerServiceStub(c) for c in channels[1:]], channels)
        finally:
            mesh.stop_workers()
    finally:
        for channel in channels:
            await channel.close()
        for server in reversed(servers):
            await server.stop(0.5)
            await server.runtime.aclose()

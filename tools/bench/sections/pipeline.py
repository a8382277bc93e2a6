"""GeneratePipeline and ExportPipeline through a `devmesh serve pipeline` process against the
same work done in process, in the same run.

The snapshot is a monorepo of 5,000 files with 20 subprojects (Python, Node, Go, Rust, Java
and Ruby, each with its manifests and lockfile; the rest source files listed with their sizes
only). GeneratePipeline detects and proposes; ExportPipeline renders the proposal as GitHub
Actions, validated against its schema. The in-process baseline parses the same request bytes,
does the same work and serializes the same response, one process with one caller at a time
(as the server is one Python process); the service gets two calls in flight from one client
process. The ratio is the cost of the RPC path. Goal: ratio >= 0.7 for both.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.bench.load import ROUNDS, Metadata, Tls, in_threads, interleaved, measure, measure_with, ratio
from tools.bench.sections import Section
from tools.stack.service_process import start_service
from tools.stack.valkey import start_valkey

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

    from devmesh.pipeline.v1 import pipeline_pb2

SUBPROJECTS = 20
FILES = 5000
GOAL_RATIO = 0.7
# An export of the 65-job proposal takes a good part of a second (ruamel.yaml is pure Python):
# a round needs a few of them to say anything.
MIN_ROUND_S = 6.0
SERVICE = "/devmesh.pipeline.v1.PipelineService"

_MANIFESTS: list[dict[str, str]] = [
    {
        "pyproject.toml": '[project]\nname = "svc"\nrequires-python = ">=3.11"\n[dependency-groups]\n'
        'dev = ["pytest", "ruff"]\n[tool.pytest.ini_options]\n[tool.ruff]\n',
        "uv.lock": "version = 1\n",
    },
    {
        "package.json": '{"name": "web", "scripts": {"test": "vitest run", "lint": "eslint .", "build": "vite build"},'
        ' "engines": {"node": ">=20"}}\n',
        "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
    },
    {"go.mod": "module example.com/svc\n\ngo 1.22\n", "go.sum": "x v1 h1:y\n"},
    {"Cargo.toml": '[package]\nname = "svc"\nversion = "0.1.0"\n', "Cargo.lock": "version = 3\n"},
    {"build.gradle.kts": "kotlin { jvmToolchain(21) }\n", "gradlew": "#!/bin/sh\n"},
    {"Gemfile": "source 'https://rubygems.org'\ngem 'rspec'\n", "Gemfile.lock": "GEM\n", ".rspec": "\n"},
]


def monorepo_snapshot() -> pipeline_pb2.RepositorySnapshot:
    """A 5,000-file monorepo with 20 subprojects, as the command would send it."""
    from devmesh.pipeline.v1 import pipeline_pb2
    from services.pipeline.snapshot import reads

    files = [pipeline_pb2.SnapshotFile(path="README.md", size=120)]
    for n in range(SUBPROJECTS):
        for name, content in _MANIFESTS[n % len(_MANIFESTS)].items():
            path = f"services/svc{n:02d}/{name}"
            files.append(
                pipeline_pb2.SnapshotFile(
                    path=path, size=len(content), content=content.encode() if reads(path) else b""
                )
            )
    per_project = (FILES - len(files)) // SUBPROJECTS
    for n in range(SUBPROJECTS):
        for i in range(per_project):
            files.append(
                pipeline_pb2.SnapshotFile(
                    path=f"services/svc{n:02d}/src/module{i // 20}/file{i}.src", size=2048 + i
                )
            )
    while len(files) < FILES:
        files.append(pipeline_pb2.SnapshotFile(path=f"docs/page{len(files)}.md", size=900))
    return pipeline_pb2.RepositorySnapshot(files=files)


def _in_process(
    _addr: str,
    method: str,
    payload: bytes,
    duration: float,
    _tls: Tls,
    out: Any,
    in_flight: int,
    _metadata: Metadata,
    start: Barrier,
) -> None:
    """The servicer's work for `method` without gRPC: parse the request bytes, generate (or
    export), build and serialize the response."""
    from devmesh.pipeline.v1 import pipeline_pb2
    from services.pipeline import exporter, generator, servicer
    from services.pipeline.settings import PipelineSettings
    from services.pipeline.snapshot import Snapshot

    limits = servicer.PipelineServicer.__new__(servicer.PipelineServicer)
    servicer.PipelineServicer.__init__(limits, None, PipelineSettings())  # type: ignore[arg-type]

    def generate() -> None:
        request = pipeline_pb2.GeneratePipelineRequest.FromString(payload)
        snapshot = Snapshot.build(
            ((f.path, f.size, f.content, f.truncated) for f in request.snapshot.files),
            limits.limits,
            "snapshot.files",
        )
        servicer.generated_proto(generator.generate(snapshot, generator.Options())).SerializeToString()

    def export() -> None:
        request = pipeline_pb2.ExportPipelineRequest.FromString(payload)
        exported = exporter.export(request.definition, exporter.Target.GITHUB_ACTIONS)
        pipeline_pb2.ExportPipelineResponse(content=exported.content, path=exported.path).SerializeToString()

    work = generate if method.endswith("/GeneratePipeline") else export
    out.put(in_threads(in_flight, duration, start, lambda: work))


def _requests() -> tuple[bytes, bytes, dict[str, int]]:
    from devmesh.pipeline.v1 import pipeline_pb2
    from services.pipeline import generator, servicer
    from services.pipeline.settings import PipelineSettings
    from services.pipeline.snapshot import Snapshot

    snapshot = monorepo_snapshot()
    generate = pipeline_pb2.GeneratePipelineRequest(snapshot=snapshot)
    limits = servicer.PipelineServicer(None, PipelineSettings()).limits  # type: ignore[arg-type]
    built = Snapshot.build(
        ((f.path, f.size, f.content, f.truncated) for f in snapshot.files), limits, "snapshot.files"
    )
    proposal = generator.generate(built, generator.Options())
    export = pipeline_pb2.ExportPipelineRequest(
        definition=proposal.definition, target=pipeline_pb2.EXPORT_TARGET_GITHUB_ACTIONS
    )
    shape = {
        "files": len(snapshot.files),
        "subprojects": len({s.directory for s in proposal.stacks}),
        "jobs": len(proposal.definition.jobs),
        "request_bytes": generate.ByteSize(),
    }
    return generate.SerializeToString(), export.SerializeToString(), shape


def _ratio(service: dict[str, Any], in_process: dict[str, Any]) -> float:
    """The service's throughput as a share of in process's: from the calls of the median rounds
    (equal durations), since a few calls per second round to integers badly."""
    return (
        round(service["calls"] / in_process["calls"], 3)
        if in_process["calls"]
        else ratio(service, in_process)
    )


def run(duration: float) -> dict[str, Any]:
    """GeneratePipeline and ExportPipeline through the service against in process."""
    generate, export, shape = _requests()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        valkey = start_valkey(state / "valkey")
        service = None
        try:
            service = start_service(
                ["pipeline"], valkey.url, state, extra_env={"DEVMESH_LOG_LEVEL": "warning"}
            )
            once = max(duration / ROUNDS, MIN_ROUND_S)
            rpc = functools.partial(measure, service.addr, duration=once, processes=1, in_flight=2)
            local = functools.partial(
                measure_with, _in_process, "", duration=once, metadata=(), processes=1, in_flight=1
            )
            results = interleaved(
                {
                    "generate_service": functools.partial(rpc, f"{SERVICE}/GeneratePipeline", generate),
                    "generate_in_process": functools.partial(
                        local, f"{SERVICE}/GeneratePipeline", payload=generate
                    ),
                    "export_service": functools.partial(rpc, f"{SERVICE}/ExportPipeline", export),
                    "export_in_process": functools.partial(
                        local, f"{SERVICE}/ExportPipeline", payload=export
                    ),
                }
            )
        finally:
            if service is not None:
                service.process.stop()
            valkey.process.stop()
    return {
        "snapshot": shape,
        "generate_pipeline": {
            "service": results["generate_service"],
            "in_process": results["generate_in_process"],
            "ratio_service_to_in_process": _ratio(
                results["generate_service"], results["generate_in_process"]
            ),
        },
        "export_pipeline": {
            "service": results["export_service"],
            "in_process": results["export_in_process"],
            "ratio_service_to_in_process": _ratio(results["export_service"], results["export_in_process"]),
        },
        "goal_ratio": GOAL_RATIO,
    }


SECTION = Section("pipeline", run, order=60)

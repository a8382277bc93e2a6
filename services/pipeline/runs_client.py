"""`devmesh pipeline run` and `devmesh pipeline worker`.

    devmesh pipeline run [DIR] [--pipeline NAME] [--project ID] [--follow]

starts a run of the stored pipeline NAME (default `ci`) of the project named after DIR on
DIR's checkout; a pipeline that is not stored yet is generated from DIR first (as `devmesh
pipeline generate` does) and stored. `--follow` prints job states as they change and log lines
prefixed by their job, then the run's summary; the exit status is the run's (0: succeeded).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import grpc

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services import mesh_client

TIMEOUT_S = 120.0
MAX_MESSAGE = 16 << 20


def add_run_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`run` and `worker` beside the other `devmesh pipeline` subcommands."""
    run = sub.add_parser(
        "run",
        help="run a repository's pipeline on the workers (generating it first if needed)",
        description="Start a run of a stored (or freshly generated) pipeline on a local checkout and "
        "optionally follow its jobs and logs; the exit status is the run's.",
    )
    run.add_argument("directory", nargs="?", type=Path, default=Path("."), help="the repository (default: .)")
    run.add_argument("--pipeline", default="ci", help="the pipeline's id (default: ci)")
    run.add_argument("--project", default="", help="the project's id (default: from the directory's name)")
    run.add_argument("--follow", action="store_true", help="print job states and logs until the run ends")
    mesh_client.add_connection_arguments(run)
    run.set_defaults(run=run_pipeline)
    add_worker_command(sub)


def add_worker_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`worker`: under `devmesh pipeline`, and as `devmesh worker` at the top."""
    from services.pipeline.worker.settings import WorkerSettings
    from services.runtime import settings

    lines = ["settings (environment variables):"]
    for env, default, description in settings.describe(WorkerSettings):
        lines.append(f"  {env} (default {default})")
        lines.extend(textwrap.wrap(description, 88, initial_indent="      ", subsequent_indent="      "))
    worker = sub.add_parser(
        "worker",
        help="run jobs of pipeline runs (DEVMESH_REDIS_URL, DEVMESH_WORKER_*)",
        description="Take jobs whose labels this machine has from the run queues and run them, until "
        "SIGTERM. The lease of a running job and the artifact caps come from the pipeline service.",
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from services.pipeline.worker.main import main

    return main()


def project_id_of(directory: Path) -> str:
    """An AIP-122 id from a directory's name (`My_Repo` -> `my-repo`)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", directory.name.lower()).strip("-")
    slug = re.sub(r"^[^a-z]+", "", slug)[:63].rstrip("-")
    return slug if len(slug) >= 2 else f"repo-{slug}" if slug else "repo"


def _stored_or_generated(
    stub: pipeline_pb2_grpc.PipelineServiceStub, project: str, pipeline: str, directory: Path
) -> str:
    name = f"projects/{project}/pipelines/{pipeline}"
    try:
        stub.CreateProject(
            pipeline_pb2.CreateProjectRequest(
                project_id=project, project=pipeline_pb2.Project(repository_uri=str(directory))
            ),
            timeout=TIMEOUT_S,
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    try:
        stub.GetPipeline(pipeline_pb2.GetPipelineRequest(name=name), timeout=TIMEOUT_S)
        return name
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    from services.pipeline.cli import _snapshot

    snapshot, _ = _snapshot(directory)
    generated = stub.GeneratePipeline(
        pipeline_pb2.GeneratePipelineRequest(snapshot=snapshot), timeout=TIMEOUT_S
    )
    print(f"devmesh: generated and stored {name}", file=sys.stderr)
    stub.CreatePipeline(
        pipeline_pb2.CreatePipelineRequest(
            parent=f"projects/{project}",
            pipeline_id=pipeline,
            pipeline=pipeline_pb2.Pipeline(definition=generated.definition),
            reason="devmesh pipeline run",
        ),
        timeout=TIMEOUT_S,
    )
    return name


def _state(value: int, enum: type) -> str:
    return str(enum.Name(value)).split("_STATE_")[-1]  # type: ignore[attr-defined]


def follow(runs: runs_pb2_grpc.RunServiceStub, run_name: str) -> runs_pb2.Run:
    """Print the run's events until it ends; the run as it ended."""
    last = ""
    while True:  # a stream broken on the way resumes after the last event it delivered
        try:
            for event in runs.StreamRunEvents(
                runs_pb2.StreamRunEventsRequest(name=run_name, after_event_id=last)
            ):
                last = event.id
                if event.HasField("log"):
                    for line in event.log.lines:
                        print(f"[{event.log.job}] {line}")
                elif event.state.job:
                    message = f": {event.state.message}" if event.state.message else ""
                    print(f"[{event.state.job}] {_state(event.state.job_state, runs_pb2.JobState)}{message}")
                else:
                    print(f"run {_state(event.state.run_state, runs_pb2.RunState)}")
            break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
    ended: runs_pb2.Run = runs.GetRun(runs_pb2.GetRunRequest(name=run_name), timeout=TIMEOUT_S)
    return ended


def run_pipeline(args: argparse.Namespace) -> int:
    directory: Path = args.directory.resolve()
    if not (directory / ".git").exists():
        print(
            f"devmesh: {args.directory} is not a git repository (a run checks it out with git clone)",
            file=sys.stderr,
        )
        return 2
    head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True)
    ref = head.stdout.strip() if head.returncode == 0 else ""
    try:
        address = mesh_client.address(args)
    except mesh_client.MeshUnreachable as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    try:
        with address.channel(options) as channel:
            pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
            runs = runs_pb2_grpc.RunServiceStub(channel)
            name = _stored_or_generated(
                pipelines, args.project or project_id_of(directory), args.pipeline, directory
            )
            run = runs.RunPipeline(
                runs_pb2.RunPipelineRequest(
                    parent=name, source=str(directory), ref=ref, request_id=uuid.uuid4().hex
                ),
                timeout=TIMEOUT_S,
            )
            print(run.name)
            if not args.follow:
                return 0
            ended = follow(runs, run.name)
    except grpc.RpcError as error:
        print(f"devmesh: {mesh_client.explain(error)}", file=sys.stderr)
        return 1
    for job in ended.jobs:
        if job.skip_reason:
            print(f"[{job.key}] {_state(job.state, runs_pb2.JobState)}: {job.skip_reason}")
    print(ended.summary)
    print(f"run {_state(ended.state, runs_pb2.RunState)}")
    return 0 if ended.state == runs_pb2.RUN_STATE_SUCCEEDED else 1

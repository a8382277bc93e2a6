"""`devmesh pipeline ...`: generate a CI pipeline for a repository on disk through the mesh.

    devmesh pipeline generate [DIR] [--target github-actions|gitlab-ci] [--json] [--write]
    devmesh pipeline run [DIR] [--pipeline NAME] [--follow]      (runs_client.py)
    devmesh pipeline worker                                      (runs_client.py)
    devmesh worker                                               (the same, at the top)

reads DIR (default: the current directory; .gitignore honoured, large and binary files
listed without their contents), calls GeneratePipeline and ExportPipeline through the edge,
and prints the YAML (`--json`: the detection report and rationale instead; `--write`: writes
the CI file into DIR). The degradations of the export go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc
from services import mesh_client
from services.pipeline import local_repo, runs_client

TARGETS = {
    "github-actions": pipeline_pb2.EXPORT_TARGET_GITHUB_ACTIONS,
    "gitlab-ci": pipeline_pb2.EXPORT_TARGET_GITLAB_CI,
}
TIMEOUT_S = 120.0
MAX_MESSAGE = 16 << 20


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The `devmesh pipeline` subcommands."""
    sub = parser.add_subparsers(dest="pipeline_command", required=True)
    generate = sub.add_parser(
        "generate",
        help="detect a repository's stacks and print a CI pipeline for it",
        description="Read a repository, have the pipeline service detect its stacks and propose a CI "
        "pipeline, and print it as GitHub Actions or GitLab CI YAML.",
    )
    generate.add_argument(
        "directory", nargs="?", type=Path, default=Path("."), help="the repository (default: .)"
    )
    generate.add_argument("--target", choices=sorted(TARGETS), default="github-actions", help="the CI system")
    generate.add_argument(
        "--json", action="store_true", help="print the detection report and rationale as JSON"
    )
    generate.add_argument("--write", action="store_true", help="write the CI file into the repository")
    generate.add_argument(
        "--skip-gate",
        action="append",
        default=[],
        choices=["secret-scan", "dependency-audit"],
        help="leave a security gate out",
    )
    generate.add_argument(
        "--default-branch", default="", help="the branch pushes to which run it (default: main)"
    )
    mesh_client.add_connection_arguments(generate)
    generate.set_defaults(run=run_generate)
    runs_client.add_run_commands(sub)


def _snapshot(directory: Path) -> tuple[pipeline_pb2.RepositorySnapshot, list[str]]:
    repository = local_repo.read(directory)
    files = [
        pipeline_pb2.SnapshotFile(path=f.path, size=f.size, content=f.content, truncated=f.truncated)
        for f in repository.files
    ]
    return pipeline_pb2.RepositorySnapshot(files=files), repository.notes


def run_generate(args: argparse.Namespace) -> int:
    directory: Path = args.directory.resolve()
    if not directory.is_dir():
        print(f"devmesh: {args.directory} is not a directory", file=sys.stderr)
        return 2
    try:
        address = mesh_client.address(args)
    except mesh_client.MeshUnreachable as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    snapshot, notes = _snapshot(directory)
    for note in notes:
        print(f"devmesh: note: {note}", file=sys.stderr)
    options = pipeline_pb2.GenerateOptions(skip_gates=args.skip_gate, default_branch=args.default_branch)
    channel_options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    try:
        with address.channel(channel_options) as channel:
            stub = pipeline_pb2_grpc.PipelineServiceStub(channel)
            generated = stub.GeneratePipeline(
                pipeline_pb2.GeneratePipelineRequest(snapshot=snapshot, options=options), timeout=TIMEOUT_S
            )
            if args.json:
                report = json_format.MessageToDict(generated, preserving_proto_field_name=True)
                print(json.dumps(report, indent=2, sort_keys=False))
                return 0
            exported = stub.ExportPipeline(
                pipeline_pb2.ExportPipelineRequest(
                    definition=generated.definition, target=TARGETS[args.target]
                ),
                timeout=TIMEOUT_S,
            )
    except grpc.RpcError as error:
        print(f"devmesh: {mesh_client.explain(error)}", file=sys.stderr)
        return 1
    for warning in [*generated.warnings, *exported.warnings]:
        where = f" ({warning.path})" if warning.path else ""
        print(f"devmesh: warning {warning.code}{where}: {warning.message}", file=sys.stderr)
    if args.write:
        target = directory / exported.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(exported.content)
        print(f"devmesh: wrote {target}", file=sys.stderr)
    else:
        sys.stdout.write(exported.content)
    return 0


def add_top_level_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`devmesh worker`, beside `devmesh pipeline worker`: what a runner machine runs."""
    runs_client.add_worker_command(sub)

"""`devmesh debug analyze FILE|-` (also `devmesh debugger analyze`): a diagnosis for a terminal.

A log file (or standard input) is streamed to StreamAnalyzeLog in chunks, so any size the
service accepts works; `--pod pod.json [--events events.json] [--previous-log prev.log]
[--log current.log]` sends a pod's diagnostics to AnalyzePod instead; `--job NAME` alone
(`projects/P/pipelines/Q/runs/R/jobs/J`, `--attempt N` for another than the latest) has the
debugger read a pipeline job's log and history itself (AnalyzeJob). The diagnosis prints
as its category, confidence, the root-cause lines with a few lines of context around them
(masked of secrets here as the service masks them) and the explanation; `--json` prints the
Diagnosis as JSON for scripts. Exit status 0 with a diagnosis, 1 when the call fails, 2 for
unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
from google.protobuf import json_format, struct_pb2

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from services import mesh_client
from services.debugger.log_masks import strip_ansi
from services.debugger.secret_masks import SecretMasker

# `devmesh debug ...` as well as `devmesh debugger ...`.
ALIASES = ("debug",)
CHUNK_BYTES = 1 << 20
CONTEXT_LINES = 2
KEPT_FOR_CONTEXT = 16 << 20  # bytes of standard input kept to show context around the causes
TIMEOUT_S = 600.0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """`analyze`."""
    sub = parser.add_subparsers(dest="debugger_command", required=True)
    analyze = sub.add_parser("analyze", help="diagnose a failed build log or a pod")
    analyze.add_argument("file", nargs="?", help="the log file, or - for standard input")
    analyze.add_argument(
        "--job",
        default="",
        help="the pipeline job (projects/P/pipelines/Q/runs/R/jobs/J): without FILE, the debugger reads "
        "its log and history from the pipeline; with FILE, the job FILE is the log of",
    )
    analyze.add_argument(
        "--attempt", type=int, default=0, help="with --job alone: the attempt (default: the latest)"
    )
    analyze.add_argument("--commit", default="", help="the commit it ran on")
    analyze.add_argument(
        "--kind",
        choices=["ci-job", "container", "build-tool"],
        default="ci-job",
        help="what kind of log it is",
    )
    analyze.add_argument("--pod", type=Path, help="`kubectl get pod NAME -o json` output: diagnose the pod")
    analyze.add_argument("--events", type=Path, help="`kubectl get events -o json` output, with --pod")
    analyze.add_argument("--previous-log", type=Path, help="`kubectl logs --previous` output, with --pod")
    analyze.add_argument("--log", type=Path, help="`kubectl logs` output, with --pod")
    analyze.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    mesh_client.add_connection_arguments(analyze)
    analyze.set_defaults(run=run_analyze)


def _chunks(
    source: IO[bytes], kept: bytearray, options: pb.StreamAnalyzeLogRequest
) -> Iterator[pb.StreamAnalyzeLogRequest]:
    first = True
    while True:
        data = source.read(CHUNK_BYTES)
        if not data and not first:
            return
        if len(kept) + len(data) <= KEPT_FOR_CONTEXT:
            kept.extend(data)
        message = pb.StreamAnalyzeLogRequest(chunk=data)
        if first:
            message.MergeFrom(options)
            first = False
        yield message
        if not data:
            return


def _struct(path: Path, what: str) -> struct_pb2.Struct:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what} {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{what} {path}: not a JSON object")
    message = struct_pb2.Struct()
    message.update(document)
    return message


def run_analyze(args: argparse.Namespace) -> int:
    """Send the log or the pod, print the diagnosis."""
    try:
        channel = mesh_client.address(args).channel(
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ]
        )
    except mesh_client.MeshUnreachable as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 1
    stub = debugger_pb2_grpc.DebuggerServiceStub(channel)
    kept = bytearray()
    try:
        if args.pod is not None:
            request = pb.AnalyzePodRequest(pod=_struct(args.pod, "--pod"))
            if args.events is not None:
                request.events.CopyFrom(_struct(args.events, "--events"))
            if args.previous_log is not None:
                request.previous_log = args.previous_log.read_text(errors="replace")
            if args.log is not None:
                request.current_log = args.log.read_text(errors="replace")
            kept.extend((request.previous_log + request.current_log).encode())
            diagnosis = stub.AnalyzePod(request, timeout=TIMEOUT_S)
        elif args.file is None and args.job:
            diagnosis = stub.AnalyzeJob(
                pb.AnalyzeJobRequest(job=args.job, attempt=args.attempt), timeout=TIMEOUT_S
            )
        elif args.file is None:
            print("devmesh: give a log FILE (or - for standard input), --job NAME or --pod", file=sys.stderr)
            return 2
        else:
            options = pb.StreamAnalyzeLogRequest(
                kind={"ci-job": pb.LOG_KIND_CI_JOB, "container": pb.LOG_KIND_CONTAINER}.get(
                    args.kind, pb.LOG_KIND_BUILD_TOOL
                ),
                context=pb.AnalysisContext(job=args.job, commit=args.commit),
            )
            if args.file == "-":
                diagnosis = stub.StreamAnalyzeLog(_chunks(sys.stdin.buffer, kept, options), timeout=TIMEOUT_S)
            else:
                with open(args.file, "rb") as source:
                    diagnosis = stub.StreamAnalyzeLog(_chunks(source, kept, options), timeout=TIMEOUT_S)
    except (OSError, ValueError) as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"devmesh: {mesh_client.explain(error)}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    if args.json:
        print(json_format.MessageToJson(diagnosis, preserving_proto_field_name=True))
    else:
        print(render(diagnosis, kept.decode(errors="replace").split("\n") if kept else []))
    return 0


def render(diagnosis: pb.Diagnosis, lines: list[str]) -> str:
    """The diagnosis for a terminal; `lines`: the log sent (for context), masked here."""
    masker = SecretMasker()
    masked = [masker.line(strip_ansi(line)) for line in lines]
    category = pb.Category.Name(diagnosis.category).removeprefix("CATEGORY_").lower().replace("_", " ")
    out = [
        f"{category}  (confidence {diagnosis.confidence:.2f}{', transient: a retry may pass' if diagnosis.transient else ''})",
        f"signature {diagnosis.signature}  {diagnosis.name}",
    ]
    if diagnosis.job:
        out.append(f"job {diagnosis.job}" + (f", attempt {diagnosis.attempt}" if diagnosis.attempt else ""))
    if diagnosis.HasField("pod") and diagnosis.pod.reason:
        pod = diagnosis.pod
        out.append(
            f"pod {pod.pod}: container {pod.container} {pod.reason}"
            + (
                f", last run {pod.last_termination_reason} (exit {pod.exit_code})"
                if pod.last_termination_reason
                else ""
            )
            + (f", memory limit {pod.memory_limit}" if pod.memory_limit else "")
        )
    for rank, cause in enumerate(diagnosis.root_causes[:3], start=1):
        out.append(f"\n#{rank} lines {cause.start_line}-{cause.end_line}:")
        if masked:
            first = max(1, cause.start_line - CONTEXT_LINES)
            last = min(len(masked), cause.end_line + CONTEXT_LINES)
            for number in range(first, last + 1):
                marker = ">" if cause.start_line <= number <= cause.end_line else " "
                out.append(f"{marker}{number:>7} | {masked[number - 1]}")
        else:
            for offset, text in enumerate(cause.excerpt.split("\n")):
                out.append(f">{cause.start_line + offset:>7} | {text}")
    if diagnosis.failing_tests:
        out.append("\nfailing tests: " + ", ".join(t.name for t in diagnosis.failing_tests))
    out.append(f"\n{diagnosis.explanation.text}")
    for suggestion in diagnosis.remediations:
        kind = pb.RemediationType.Name(suggestion.type).removeprefix("REMEDIATION_TYPE_").lower()
        out.append(f"  - {kind}: {suggestion.reason}")
    return "\n".join(out)

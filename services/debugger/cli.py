"""`devmesh debug analyze FILE|-` (also `devmesh debugger analyze`): a diagnosis for a terminal;
`devmesh debug remediation list|get|propose|approve|reject|execute|cancel|watch`: remediations.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import grpc
from google.protobuf import json_format, struct_pb2

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc, remediation_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as rpb
from services import mesh_client
from services.debugger import remediation_render
from services.debugger.log_masks import strip_ansi
from services.debugger.secret_masks import SecretMasker

# `devmesh debug ...` as well as `devmesh debugger ...`.
ALIASES = ("debug",)
CHUNK_BYTES = 1 << 20
CONTEXT_LINES = 2
KEPT_FOR_CONTEXT = 16 << 20  # bytes of standard input kept to show context around the causes
TIMEOUT_S = 600.0


def add_commands(parser: argparse.ArgumentParser) -> None:
    """`analyze` and `remediation ...`."""
    sub = parser.add_subparsers(dest="debugger_command", required=True)
    _add_remediation_commands(sub.add_parser("remediation", help="propose, approve, execute, follow fixes"))
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


def _add_remediation_commands(parser: argparse.ArgumentParser) -> None:
    """`remediation list|get|propose|approve|reject|execute|cancel|watch`."""
    sub = parser.add_subparsers(dest="remediation_command", required=True)

    def command(
        name: str, help_text: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        found = sub.add_parser(name, help=help_text)
        found.add_argument("--json", action="store_true", help="print JSON (one object per line for watch)")
        mesh_client.add_connection_arguments(found)
        found.set_defaults(run=run)
        return found

    listing = command("list", "list remediations, newest first", _run_list)
    listing.add_argument("--state", default="", help="only those in this state (e.g. AWAITING_APPROVAL)")
    listing.add_argument("--target", default="", help="only those with an action on this target")
    listing.add_argument("--page-size", type=int, default=0, help="at most this many per call (0: 50)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many in all")
    command("get", "show one remediation: its states, plan, risk and history", _run_get).add_argument(
        "name", help="remediations/ID (or ID)"
    )
    propose = command("propose", "propose the fix a diagnosis suggests", _run_propose)
    propose.add_argument("--diagnosis", required=True, help="diagnoses/ID (or ID)")
    propose.add_argument("--target", required=True, help="the resource the fix acts on")
    propose.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter the fix needs (repeat)"
    )
    propose.add_argument("--reason", default="", help="why, in your words")
    for verb, help_text, run in (
        ("approve", "approve a remediation that awaits approval", _run_approve),
        ("reject", "reject a remediation that has not started (final)", _run_reject),
        ("cancel", "cancel a remediation that has not started", _run_cancel),
    ):
        change = command(verb, help_text, run)
        change.add_argument("name", help="remediations/ID (or ID)")
        change.add_argument("--reason", default="", help="why")
        change.add_argument("--etag", default="", help="refuse if it changed since this etag")
    command("execute", "execute an approved remediation and verify it", _run_execute).add_argument(
        "name", help="remediations/ID (or ID)"
    )
    watch = command("watch", "follow remediation events as they happen", _run_watch)
    watch.add_argument("--after", default="", help="resume after this event id (0-0: every event kept)")
    watch.add_argument("--remediation", default="", help="only the events of this remediation")
    watch.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")


def _remediation_name(value: str) -> str:
    return value if value.startswith("remediations/") else f"remediations/{value}"


def _with_stub(
    args: argparse.Namespace, call: Callable[[remediation_pb2_grpc.RemediationServiceStub], int]
) -> int:
    try:
        channel = mesh_client.address(args).channel()
    except mesh_client.MeshUnreachable as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 1
    try:
        return call(remediation_pb2_grpc.RemediationServiceStub(channel))
    except grpc.RpcError as error:
        print(f"devmesh: {mesh_client.explain(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        channel.close()


def _print_record(args: argparse.Namespace, record: rpb.RemediationRecord) -> int:
    if args.json:
        print(json_format.MessageToJson(record, preserving_proto_field_name=True))
    else:
        print(remediation_render.render(record))
    return 0


def _run_list(args: argparse.Namespace) -> int:
    state = rpb.REMEDIATION_STATE_UNSPECIFIED
    if args.state:
        wanted = "REMEDIATION_STATE_" + args.state.upper().removeprefix("REMEDIATION_STATE_")
        if wanted not in rpb.RemediationState.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
            names = ", ".join(k.removeprefix("REMEDIATION_STATE_") for k in rpb.RemediationState.keys()[1:])
            print(f"devmesh: --state {args.state} is not a state; one of {names}", file=sys.stderr)
            return 2
        state = rpb.RemediationState.Value(wanted)

    def call(stub: remediation_pb2_grpc.RemediationServiceStub) -> int:
        found: list[rpb.RemediationRecord] = []
        token = ""
        while len(found) < args.limit:
            page = stub.ListRemediations(
                rpb.ListRemediationsRequest(
                    page_size=args.page_size,
                    page_token=token,
                    state=state,
                    target=args.target,
                ),
                timeout=TIMEOUT_S,
            )
            found += page.remediations
            token = page.next_page_token
            if not token:
                break
        found = found[: args.limit]
        if args.json:
            print(json.dumps([json_format.MessageToDict(r, preserving_proto_field_name=True) for r in found]))
        else:
            print("\n".join(remediation_render.one_line(r) for r in found) or "no remediations")
        return 0

    return _with_stub(args, call)


def _run_get(args: argparse.Namespace) -> int:
    return _with_stub(
        args,
        lambda stub: _print_record(
            args,
            stub.GetRemediation(
                rpb.GetRemediationRequest(name=_remediation_name(args.name)), timeout=TIMEOUT_S
            ),
        ),
    )


def _run_propose(args: argparse.Namespace) -> int:
    parameters = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"devmesh: --param {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        parameters[key] = value
    diagnosis = args.diagnosis if args.diagnosis.startswith("diagnoses/") else f"diagnoses/{args.diagnosis}"
    request = rpb.ProposeRemediationRequest(
        diagnosis=diagnosis, target=args.target, parameters=parameters, reason=args.reason
    )
    return _with_stub(
        args, lambda stub: _print_record(args, stub.ProposeRemediation(request, timeout=TIMEOUT_S))
    )


def _run_approve(args: argparse.Namespace) -> int:
    request = rpb.ApproveRemediationRequest(
        name=_remediation_name(args.name), reason=args.reason, etag=args.etag
    )
    return _with_stub(
        args, lambda stub: _print_record(args, stub.ApproveRemediation(request, timeout=TIMEOUT_S))
    )


def _run_reject(args: argparse.Namespace) -> int:
    request = rpb.RejectRemediationRequest(
        name=_remediation_name(args.name), reason=args.reason, etag=args.etag
    )
    return _with_stub(
        args, lambda stub: _print_record(args, stub.RejectRemediation(request, timeout=TIMEOUT_S))
    )


def _run_cancel(args: argparse.Namespace) -> int:
    request = rpb.CancelRemediationRequest(
        name=_remediation_name(args.name), reason=args.reason, etag=args.etag
    )
    return _with_stub(
        args, lambda stub: _print_record(args, stub.CancelRemediation(request, timeout=TIMEOUT_S))
    )


def _run_execute(args: argparse.Namespace) -> int:
    request = rpb.ExecuteRemediationRequest(name=_remediation_name(args.name))
    return _with_stub(
        args, lambda stub: _print_record(args, stub.ExecuteRemediation(request, timeout=TIMEOUT_S))
    )


def _run_watch(args: argparse.Namespace) -> int:
    only = _remediation_name(args.remediation) if args.remediation else ""

    def call(stub: remediation_pb2_grpc.RemediationServiceStub) -> int:
        seen = 0
        # No deadline: a watch runs until --count events were printed or it is interrupted.
        for event in stub.WatchRemediations(rpb.WatchRemediationsRequest(after_event_id=args.after)):
            if not event.HasField("remediation") or (only and event.remediation.name != only):
                continue
            if args.json:
                print(
                    json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None),
                    flush=True,
                )
            else:
                print(remediation_render.event_line(event), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
        return 0

    return _with_stub(args, call)

"""`devmesh cost ...`: import a FOCUS export, query spend.

    devmesh cost import FILE [--source S] [--billing-period 2024-09 ...]
    devmesh cost query --group-by service --start 2024-09-01 --end 2024-10-01 [--metric EffectiveCost]
                       [--granularity day] [--filter service=Amazon S3] [--top-n 5] [--output json|table]

An import streams the file in chunks over gRPC (no size limit but the service's), with a
progress bar on a terminal.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from services.mesh_client import MeshUnreachable, add_connection_arguments, address, explain

CHUNK_BYTES = 1024 * 1024  # under the 4 MiB message limit, large enough to keep the stream busy
METRICS = {
    "effectivecost": pb.METRIC_EFFECTIVE_COST,
    "billedcost": pb.METRIC_BILLED_COST,
    "listcost": pb.METRIC_LIST_COST,
    "contractedcost": pb.METRIC_CONTRACTED_COST,
    "consumedquantity": pb.METRIC_CONSUMED_QUANTITY,
}
GRANULARITIES = {
    "none": pb.GRANULARITY_UNSPECIFIED,
    "hour": pb.GRANULARITY_HOUR,
    "day": pb.GRANULARITY_DAY,
    "week": pb.GRANULARITY_WEEK,
    "month": pb.GRANULARITY_MONTH,
}


def add_commands(parser: argparse.ArgumentParser) -> None:
    """`devmesh cost import` and `devmesh cost query`."""
    sub = parser.add_subparsers(dest="cost_command", required=True)
    upload = sub.add_parser("import", help="import a FOCUS export (CSV, gzip'd CSV or Parquet)")
    upload.add_argument("file", type=Path)
    upload.add_argument("--source", help="where the data comes from (default: from the file name)")
    upload.add_argument(
        "--billing-period",
        action="append",
        default=[],
        help="YYYY-MM the file replaces (repeat; default: its own)",
    )
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(upload)
    upload.set_defaults(run=run_import)

    query = sub.add_parser("query", help="spend grouped by dimensions over a time range")
    query.add_argument("--group-by", action="append", default=[], help="dimension (repeat or comma-separate)")
    query.add_argument("--start", required=True, help="YYYY-MM-DD or an RFC 3339 time (inclusive)")
    query.add_argument("--end", required=True, help="YYYY-MM-DD or an RFC 3339 time (exclusive)")
    query.add_argument("--metric", default="EffectiveCost", help=", ".join(sorted(METRICS)))
    query.add_argument("--granularity", default="none", choices=sorted(GRANULARITIES))
    query.add_argument(
        "--filter", action="append", default=[], help="dimension=value (repeat; all must hold)"
    )
    query.add_argument(
        "--top-n", type=int, default=0, help="keep the N largest groups, sum the rest as other"
    )
    query.add_argument("--output", choices=["table", "json"], default="table")
    add_connection_arguments(query)
    query.set_defaults(run=run_query)


def source_from(path: Path) -> str:
    """A source id (AIP-122) from a file name: `focus_1.0_sample.csv` -> `focus-1-0-sample`."""
    stem = path.name.split(".csv")[0].split(".parquet")[0].lower()
    text = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")
    if not text or not text[0].isalpha():
        text = "file-" + text
    return text[:63].rstrip("-") or "file"


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere."""

    def __init__(self, total: int, out: TextIO, enabled: bool) -> None:
        self.total, self.out = max(total, 1), out
        self.enabled = enabled and out.isatty()
        self.sent, self.started, self.shown = 0, time.monotonic(), 0.0

    def advance(self, count: int) -> None:
        self.sent += count
        now = time.monotonic()
        if self.enabled and (now - self.shown > 0.1 or self.sent >= self.total):
            self.shown = now
            done = self.sent / self.total
            bar = "#" * int(done * 30)
            rate = self.sent / max(now - self.started, 1e-6) / 1e6
            self.out.write(
                f"\r[{bar:<30}] {done:6.1%} {self.sent / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {rate:,.1f} MB/s"
            )
            self.out.flush()

    def finish(self, note: str) -> None:
        if self.enabled:
            self.out.write(f"\r{note}{' ' * 40}\n")
            self.out.flush()


def _messages(
    path: Path, source: str, periods: list[str], progress: Progress
) -> Iterator[pb.ImportCostDataRequest]:
    with path.open("rb") as file:
        first = True
        while True:
            chunk = file.read(CHUNK_BYTES)
            if not chunk and not first:
                return
            if first:
                yield pb.ImportCostDataRequest(source=source, billing_periods=periods, body={"data": chunk})
                first = False
            else:
                yield pb.ImportCostDataRequest(body={"data": chunk})
            progress.advance(len(chunk))
            if not chunk:
                return


def run_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"devmesh cost import: {path} is not a file", file=sys.stderr)
        return 2
    source = args.source or source_from(path)
    try:
        mesh = address(args)
    except MeshUnreachable as exc:
        print(f"devmesh cost import: {exc}", file=sys.stderr)
        return 2
    progress = Progress(path.stat().st_size, sys.stderr, not args.no_progress)
    with mesh.channel() as channel:
        stub = cost_pb2_grpc.CostServiceStub(channel)
        try:
            imported = stub.ImportCostData(_messages(path, source, args.billing_period, progress))
        except grpc.RpcError as error:
            progress.finish("import failed")
            print(f"devmesh cost import: {explain(error)}", file=sys.stderr)
            return 1
    progress.finish("uploaded")
    rejected = ", ".join(f"{r.reason} {r.count}" for r in imported.rejections) or "none"
    totals = ", ".join(f"{m.amount} {m.currency}" for m in imported.effective_cost_totals) or "nothing"
    print(
        f"{imported.name}: source {imported.source}, periods {', '.join(imported.billing_periods)}, "
        f"FOCUS {imported.focus_version}: {imported.rows_read} rows read, {imported.rows_stored} stored, "
        f"{imported.rows_rejected} rejected ({rejected}); EffectiveCost {totals}"
    )
    for sample in imported.rejected_samples[:5]:
        print(f"  rejected line {sample.line}: {sample.reason} {sample.column}={sample.value!r}")
    return 0


def parse_time(text: str, flag: str) -> timestamp_pb2.Timestamp:
    """`2024-09-01` (00:00 UTC) or an RFC 3339 time."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            moment = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def build_query(args: argparse.Namespace) -> pb.QueryCostRequest:
    """The request the flags describe (ValueError says which flag is wrong)."""
    metric = METRICS.get(args.metric.replace("_", "").lower())
    if metric is None:
        raise ValueError(f"--metric {args.metric!r} is not one of {', '.join(sorted(METRICS))}")
    filters = []
    for text in args.filter:
        dimension, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"--filter {text!r} is not dimension=value")
        filters.append(pb.Filter(dimension=dimension.strip(), values=[value]))
    group_by = [name.strip() for item in args.group_by for name in item.split(",") if name.strip()]
    return pb.QueryCostRequest(
        group_by=group_by,
        filters=filters,
        start_time=parse_time(args.start, "--start"),
        end_time=parse_time(args.end, "--end"),
        granularity=GRANULARITIES[args.granularity],
        metric=metric,
        top_n=args.top_n,
    )


def rows_as_objects(request: pb.QueryCostRequest, rows: list[pb.CostRow]) -> list[dict[str, Any]]:
    """One object per group (and bucket): the group's values, the amount as a decimal string,
    the currency."""
    found = []
    for row in rows:
        item: dict[str, Any] = dict(row.dimensions)
        if request.granularity:
            item["period_start"] = row.period_start.ToJsonString()
        item["amount"] = row.amount
        item["currency"] = row.currency
        if row.other:
            item["other"] = True
        found.append(item)
    return found


def render_table(objects: list[dict[str, Any]]) -> str:
    if not objects:
        return "(no spend in that range)"
    columns = list(dict.fromkeys(key for item in objects for key in item))
    widths = {c: max(len(c), *(len(str(item.get(c, ""))) for item in objects)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    for item in objects:
        cells = [
            str(item.get(c, "")).rjust(widths[c]) if c == "amount" else str(item.get(c, "")).ljust(widths[c])
            for c in columns
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_query(args: argparse.Namespace) -> int:
    try:
        request = build_query(args)
        mesh = address(args)
    except (ValueError, MeshUnreachable) as exc:
        print(f"devmesh cost query: {exc}", file=sys.stderr)
        return 2
    rows: list[pb.CostRow] = []
    with mesh.channel() as channel:
        stub = cost_pb2_grpc.CostServiceStub(channel)
        try:
            while True:
                answer = stub.QueryCost(request)
                rows.extend(answer.rows)
                if not answer.next_page_token:
                    break
                request.page_token = answer.next_page_token
        except grpc.RpcError as error:
            print(f"devmesh cost query: {explain(error)}", file=sys.stderr)
            return 1
    objects = rows_as_objects(request, rows)
    print(json.dumps(objects, indent=2) if args.output == "json" else render_table(objects))
    return 0

"""What `devmesh cost` makes of its flags, and how it prints an answer."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from devmesh.cost.v1 import cost_pb2 as pb
from services.cost.cli import Progress, add_commands, build_query, render_table, rows_as_objects, source_from


def _query(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser)
    return parser.parse_args(["query", *argv])


def test_a_file_name_becomes_a_source_id() -> None:
    assert source_from(Path("focus_1.0_sample.csv")) == "focus-1-0-sample"
    assert source_from(Path("2024 export.csv.gz")) == "file-2024-export"


def test_dates_are_midnight_utc_and_group_by_may_be_comma_separated() -> None:
    request = build_query(
        _query("--group-by", "service,region", "--start", "2024-09-01", "--end", "2024-10-01")
    )
    assert list(request.group_by) == ["service", "region"]
    assert request.start_time.ToJsonString() == "2024-09-01T00:00:00Z"
    assert request.metric == pb.METRIC_EFFECTIVE_COST


def test_an_unknown_metric_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--metric"):
        build_query(_query("--start", "2024-09-01", "--end", "2024-10-01", "--metric", "Profit"))


def test_a_bad_date_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--end"):
        build_query(_query("--start", "2024-09-01", "--end", "yesterday"))


def test_json_objects_carry_the_groups_values_the_amount_and_the_currency() -> None:
    request = pb.QueryCostRequest(group_by=["service"])
    rows = [pb.CostRow(dimensions={"service": "S3"}, amount="1.50", currency="USD")]
    assert rows_as_objects(request, rows) == [{"service": "S3", "amount": "1.50", "currency": "USD"}]


def test_a_table_right_aligns_amounts() -> None:
    table = render_table([{"service": "S3", "amount": "1.5"}, {"service": "EC2", "amount": "100.25"}])
    assert table.splitlines()[1:] == ["S3          1.5", "EC2      100.25"]


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_progress_bar_reaches_100_percent_on_a_terminal() -> None:
    out = _Terminal(tty=True)
    progress = Progress(4 << 20, out, enabled=True)
    for _ in range(4):
        progress.advance(1 << 20)
    progress.finish("uploaded")
    assert "100.0%" in out.getvalue() and "[" + "#" * 30 + "]" in out.getvalue()
    assert out.getvalue().endswith("\n") and "uploaded" in out.getvalue()


@pytest.mark.parametrize(("tty", "enabled"), [(False, True), (True, False)])
def test_no_progress_bar_off_a_terminal_or_with_no_progress(tty: bool, enabled: bool) -> None:
    out = _Terminal(tty=tty)
    progress = Progress(1 << 20, out, enabled=enabled)
    progress.advance(1 << 20)
    progress.finish("uploaded")
    assert out.getvalue() == ""

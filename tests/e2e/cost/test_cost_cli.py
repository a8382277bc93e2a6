"""`devmesh cost import` and `devmesh cost query` against the real mesh."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tools.stack.local import Stack

SAMPLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "focus" / "focus_1.0_sample.csv"


def devmesh(mesh: Stack, edge: str, *args: str) -> subprocess.CompletedProcess[str]:
    tls = mesh.operator_tls
    connection = ["--edge", edge, "--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "cost", *args, *connection],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "DEVMESH_API_KEY": mesh.admin_api_key},
    )


@pytest.fixture(scope="module")
def sample() -> Path:
    if not SAMPLE.exists():
        pytest.skip(f"the real FOCUS sample is not at {SAMPLE} (../shared/data)")
    return SAMPLE


def test_import_says_how_many_rows_it_read_stored_and_rejected(mesh: Stack, edge: str, sample: Path) -> None:
    result = devmesh(mesh, edge, "import", str(sample), "--source", "cli-sample")
    assert result.returncode == 0, result.stderr
    assert "1000 rows read, 1000 stored, 0 rejected" in result.stdout
    assert "14.97651418586 USD" in result.stdout


@pytest.fixture(scope="module")
def imported(mesh: Stack, edge: str, sample: Path) -> None:
    """The sample imported once, for the queries (each query test needs it, whatever ran before)."""
    result = devmesh(mesh, edge, "import", str(sample), "--source", "cli-query")
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("imported")
def test_query_prints_one_json_object_per_service_with_a_decimal_amount(mesh: Stack, edge: str) -> None:
    result = devmesh(
        mesh, edge, "query", "--group-by", "service", "--start", "2024-09-01", "--end", "2024-10-01",
        "--filter", "provider=AWS", "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = json.loads(result.stdout)
    assert objects and all(set(o) == {"service", "amount", "currency"} for o in objects)
    assert all(isinstance(o["amount"], str) and Decimal(o["amount"]) >= 0 for o in objects)


@pytest.mark.usefixtures("imported")
def test_query_as_a_table_has_a_header_and_a_row_per_group(mesh: Stack, edge: str) -> None:
    result = devmesh(
        mesh, edge, "query", "--group-by", "provider", "--start", "2024-09-01", "--end", "2024-10-01",
        "--metric", "BilledCost",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["provider", "amount", "currency"]
    assert {row.split()[0] for row in rows} >= {"AWS", "Microsoft"}


def test_a_truncated_gzip_is_refused_with_its_reason_and_no_traceback(
    mesh: Stack, edge: str, sample: Path, tmp_path: Path
) -> None:
    packed = gzip.compress(sample.read_bytes())
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(packed[: len(packed) // 3])
    result = devmesh(mesh, edge, "import", str(broken))
    assert result.returncode == 1
    assert "INVALID_ARGUMENT TRUNCATED_GZIP" in result.stderr
    assert "Traceback" not in result.stderr

"""The README's cost commands work as written, against the real mesh."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tools.stack.local import Stack

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / ".." / "shared" / "data" / "focus" / "focus_1.0_sample.csv"


def test_the_readme_cost_commands_work_as_written(mesh: Stack, edge: str, tmp_path: Path) -> None:
    if not SAMPLE.exists():
        pytest.skip("the real FOCUS sample (../shared/data) is absent")
    readme = (ROOT / "README.md").read_text()
    commands = readme.split("## The cost service", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = commands.replace("dm -N ", "dm -N --max-time 3 ").replace(
        "/tmp/focus.csv", str(tmp_path / "focus.csv")
    )
    tls = mesh.operator_tls
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps({"edge": edge, "admin_api_key": mesh.admin_api_key,
                                      "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}}))  # fmt: skip
    prelude = (
        f"set -e\nT={tls.cert.parent}\nEDGE={edge}\n"
        f'dm() {{ command curl -sS --fail --cacert {tls.ca} --cert {tls.cert} --key {tls.key} -H "x-api-key: $KEY" "$@" || [ $? -eq 28 ]; }}\n'
    )
    env = {**os.environ, "KEY": mesh.admin_api_key, "DEVMESH_STACK_FILE": str(stack_file)}
    called = subprocess.run(
        ["bash", "-c", prelude + commands], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert called.returncode == 0, called.stderr[-2000:].replace(mesh.admin_api_key, "<key>")
    out = called.stdout
    for expected in ('"rowsRead":"1000"', "1000 rows read, 1000 stored", '"tag:environment": "dev"',
                     '"monthEndProjection"', '"anomalyMonitors/by-service"', '"name":"budgets/gcp"',
                     "TYPE_BUDGET_THRESHOLD_CROSSED"):  # fmt: skip
        assert expected in out, f"{expected!r} not in the output"

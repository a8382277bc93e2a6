"""How a `devmesh` command finds the mesh: stack.json by default, flags over it, clear errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from services.mesh_client import MeshUnreachable, add_connection_arguments, address


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_arguments(parser)
    return parser.parse_args(list(argv))


def _stack(tmp_path: Path) -> Path:
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text(name)
    tls = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}
    path = tmp_path / "stack.json"
    path.write_text(json.dumps({"edge": "127.0.0.1:20443", "tls": tls, "admin_api_key": "dmk_x"}))
    return path


def test_the_running_stack_says_where_and_who(tmp_path: Path) -> None:
    found = address(_args("--stack", str(_stack(tmp_path))))
    assert (found.edge, found.api_key, found.cert.name) == ("127.0.0.1:20443", "dmk_x", "cert.pem")


def test_flags_override_the_stack(tmp_path: Path) -> None:
    found = address(_args("--stack", str(_stack(tmp_path)), "--edge", "127.0.0.1:1", "--api-key", "dmk_y"))
    assert (found.edge, found.api_key) == ("127.0.0.1:1", "dmk_y")


def test_without_a_stack_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(MeshUnreachable, match="make run") as caught:
        address(_args("--stack", str(tmp_path / "missing.json")))
    assert "--edge" in str(caught.value)


def test_a_certificate_that_is_gone_is_named(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    (tmp_path / "cert.pem").unlink()
    with pytest.raises(MeshUnreachable, match="cert"):
        address(_args("--stack", str(stack)))


def test_the_key_never_shows_in_the_address(tmp_path: Path) -> None:
    assert "dmk_x" not in repr(address(_args("--stack", str(_stack(tmp_path)))))

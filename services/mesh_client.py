"""How the `devmesh` commands reach a running mesh: through the edge, with a client certificate
and an API key.

By default everything comes from the `.devmesh/stack.json` that `make run` writes (the edge
address, the operator's certificate and the first admin key); flags or environment
variables override each part (`--edge`/DEVMESH_EDGE, `--ca`, `--cert`, `--key`,
`--api-key`/DEVMESH_API_KEY, `--stack`/DEVMESH_STACK_FILE). Errors say what is missing and
how to get it, never show a key.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from services.runtime.errors import reason_of

DEFAULT_STACK_FILE = Path(__file__).resolve().parent.parent / ".devmesh" / "stack.json"


class MeshUnreachable(Exception):
    """The command cannot reach the mesh; the message says why and what to do."""


@dataclass(frozen=True)
class MeshAddress:
    edge: str  # host:port of the edge
    ca: Path
    cert: Path
    key: Path
    api_key: str = field(repr=False)

    def channel(self, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A blocking gRPC channel to the edge; every call carries the API key."""
        credentials = grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes()
        )
        api_key = self.api_key

        def plugin(_context: Any, callback: Any) -> None:
            callback((("x-api-key", api_key),), None)

        call_credentials = grpc.metadata_call_credentials(plugin, name="devmesh-api-key")
        return grpc.secure_channel(
            self.edge, grpc.composite_channel_credentials(credentials, call_credentials), options=options
        )


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every command that calls the mesh takes."""
    group = parser.add_argument_group("reaching the mesh (default: what `make run` wrote)")
    group.add_argument("--stack", type=Path, default=None, help="stack.json of a running `make run`")
    group.add_argument("--edge", default=None, help="host:port of the edge")
    group.add_argument("--ca", type=Path, default=None, help="CA bundle the edge's certificate chains to")
    group.add_argument("--cert", type=Path, default=None, help="client certificate (PEM)")
    group.add_argument("--key", type=Path, default=None, help="its private key (PEM)")
    group.add_argument("--api-key", default=None, help="API key (default DEVMESH_API_KEY or stack.json)")


def address(args: argparse.Namespace) -> MeshAddress:
    """Where and how to call the mesh, from the flags, the environment and stack.json."""
    stack_file = args.stack or Path(os.environ.get("DEVMESH_STACK_FILE", DEFAULT_STACK_FILE))
    state: dict[str, Any] = {}
    if stack_file.exists():
        try:
            state = json.loads(stack_file.read_text())
        except (OSError, ValueError) as exc:
            raise MeshUnreachable(f"cannot read {stack_file}: {exc}") from None
    tls = state.get("tls", {})
    edge = args.edge or os.environ.get("DEVMESH_EDGE") or state.get("edge", "")
    api_key = args.api_key or os.environ.get("DEVMESH_API_KEY") or state.get("admin_api_key", "")
    paths = {
        name: getattr(args, name) or (Path(tls[name]) if tls.get(name) else None)
        for name in ("ca", "cert", "key")
    }
    missing = [f"--{name}" for name, path in paths.items() if path is None]
    if not edge:
        missing.insert(0, "--edge")
    if not api_key:
        missing.append("--api-key")
    if missing:
        raise MeshUnreachable(
            f"no running mesh found ({stack_file} does not exist or is incomplete): start one with "
            f"`make run`, or pass {', '.join(missing)}"
        )
    for name, path in paths.items():
        assert path is not None
        if not path.is_file():
            raise MeshUnreachable(f"--{name} {path} is not a file (is `make run` still running?)")
    return MeshAddress(edge, paths["ca"], paths["cert"], paths["key"], api_key)  # type: ignore[arg-type]


def explain(error: grpc.RpcError) -> str:
    """A one-line account of a failed call for a terminal: the status, its reason, its message."""
    code = error.code()
    found = reason_of(error.trailing_metadata())
    reason = f" {found}" if found else ""
    if code == grpc.StatusCode.UNAVAILABLE and not reason:
        return "the mesh is not answering (is `make run` still running?): " + str(error.details())
    return f"{code.name}{reason}: {error.details()}"

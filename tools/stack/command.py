"""`python -m tools.stack run` (what `make run` does): the whole mesh until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from services import catalog
from services.runtime import logging as runtime_logging
from tools import envoy_config
from tools.stack import state_lock
from tools.stack.local import Stack, local_stack, write_state
from tools.stack.ports import PortPlan
from tools.stack.processes import LOOPBACK, StackError
from tools.stack.supervisor import Supervised, Supervisor

ROOT = Path(__file__).resolve().parent.parent.parent
STATE_DIR = ROOT / ".devmesh"


def _print_howto(stack: Stack, state: Path, elapsed: float) -> None:
    """How to call the mesh, in commands that work as printed: from any directory, with the
    tools `make venv` installed (grpcurl is in .venv/bin, not on PATH)."""
    tls = stack.operator_tls
    edge = stack.envoy.edge_addr if stack.envoy else ""
    grpcurl = shlex.quote(str(Path(sys.executable).parent / "grpcurl"))
    ca, cert, key = (shlex.quote(str(path)) for path in (tls.ca, tls.cert, tls.key))
    read_key = shlex.quote(f'import json; print(json.load(open({json.dumps(str(state))}))["admin_api_key"])')
    print(f"devmesh is up in {elapsed:.1f}s: edge {edge}; stack.json and everything else in {state.parent}")
    print(f"  gRPC:    {grpcurl} -cacert {ca} -cert {cert} -key {key} {edge} list")
    print(
        f'  REST:    curl --cacert {ca} --cert {cert} --key {key} -H "x-api-key: $(python3 -c {read_key})" '
        f"https://{edge}/v1/namespaces"
    )
    print(f"  Your certificate opens the edge; the key (admin_api_key in {state.name}) says who you are.")
    metrics = ", ".join(f"{name} http://{sp.metrics_addr}/metrics" for name, sp in stack.services.items())
    print(f"  metrics: {metrics}")
    print(f"  admin:   {stack.envoy.admin_url if stack.envoy else ''}   logs: {stack.state_dir / 'logs'}")
    if stack.model_server is not None:
        print(f"  model:   {stack.model_server.url} (llama.cpp, make llm) explains the debugger's diagnoses")
    print("A process that exits is restarted; Ctrl-C stops everything.", flush=True)


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack run", description="Run the devmesh mesh locally."
    )
    parser.add_argument("services", nargs="*", default=["all"])
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("DEVMESH_BASE_PORT", "20000")),
        help="ports are offsets from it: services +51.., their metrics +90.., Valkey +79 (rate "
        "limits +80), OpenBao +200 (+201), edge +443, Envoy admin +901 (DEVMESH_BASE_PORT, default "
        "20000; 0 = free ports)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DEVMESH_STATE_DIR", STATE_DIR)),
        help="where the stack keeps its data, certificates and logs (DEVMESH_STATE_DIR, default .devmesh)",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    runtime_logging.configure("warning")  # the few lines below are the output; children log to files
    try:
        services = [module.name for module in catalog.resolve(args.services)]
    except ValueError as exc:
        parser.error(str(exc))
    ports = PortPlan.from_base(args.base_port, services)
    state_dir.mkdir(exist_ok=True, mode=0o700)
    try:
        with state_lock.hold(state_dir, {"pid": os.getpid(), "edge": f"{LOOPBACK}:{ports.edge}"}):
            return _run_locked(state_dir, services, ports)
    except StackError as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 1


def _run_locked(state_dir: Path, services: list[str], ports: PortPlan) -> int:
    """The stack, with the state directory's lock held: only now may anything in it change."""
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        with local_stack(
            state_dir,
            services,
            redis_url=os.environ.get("DEVMESH_REDIS_URL", ""),
            ratelimit_redis_url=os.environ.get("DEVMESH_RATE_LIMIT_REDIS_URL", ""),
            vault_addr=os.environ.get("VAULT_ADDR", ""),
            vault_token=os.environ.get("VAULT_TOKEN", ""),
            ports=ports,
            # Exported, it would give every service the same port: local_stack refuses that.
            service_env={"DEVMESH_METRICS_ADDR": os.environ["DEVMESH_METRICS_ADDR"]}
            if "DEVMESH_METRICS_ADDR" in os.environ
            else None,
            local_model=True,
        ) as stack:
            state = write_state(state_dir, stack.describe())
            _print_howto(stack, state, time.monotonic() - started)
            supervisor = Supervisor(
                _supervised(stack),
                say=lambda line: print(line, flush=True),
                on_restarted=lambda: write_state(state_dir, stack.describe()),  # the new PIDs
            )
            supervisor.run(lambda: stopping)
            print("devmesh: stopping...", flush=True)
    except envoy_config.EnvoyConfigError as exc:
        raise StackError(str(exc)) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / "stack.json").unlink()
    print("devmesh: stopped")
    return 0


def _supervised(stack: Stack) -> list[Supervised]:
    """Every process the stack started, and how to tell that each serves again."""
    children = []
    for name, valkey in (("valkey", stack.valkey), ("valkey-ratelimit", stack.ratelimit_valkey)):
        if valkey is not None:
            children.append(Supervised(name, valkey.process, valkey.ready))
    if stack.vault is not None and stack.vault.process is not None:
        children.append(Supervised("openbao", stack.vault.process, stack.vault.ready))
    for name, service in stack.services.items():
        children.append(Supervised(name, service.process, service.serving))
    if stack.envoy is not None:
        children.append(Supervised("envoy", stack.envoy.process, stack.envoy.live))
    if stack.worker is not None:
        worker = stack.worker
        children.append(Supervised("worker", worker, lambda: worker.exit_code is None))
    if stack.model_server is not None:
        children.append(Supervised("llama-server", stack.model_server.process, stack.model_server.ready))
    return children


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "run":
        print(
            "usage: python -m tools.stack run [SERVICE...] [--base-port N] [--state-dir DIR]", file=sys.stderr
        )
        return 2
    return run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

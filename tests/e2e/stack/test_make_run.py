"""`make run` itself (`python -m tools.stack run`), as a user runs it: stopped and started
again on the same state directory, it keeps every secret, key and token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devmesh.config.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services import catalog
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel, health_serving
from tools.stack.processes import ManagedProcess, spawn, wait_until

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class RunningStack:
    """A `python -m tools.stack run` process on free ports, and what its stack.json says."""

    process: ManagedProcess
    state_dir: Path

    @property
    def output(self) -> str:
        return self.process.log_path.read_text()

    def description(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "stack.json").read_text()))

    @property
    def edge(self) -> str:
        return str(self.description()["edge"])

    @property
    def tls(self) -> CertPaths:
        tls = self.description()["tls"]
        return CertPaths(Path(tls["cert"]), Path(tls["key"]), Path(tls["ca"]))

    @property
    def admin_key(self) -> str:
        return str(self.description()["admin_api_key"])

    def channel(self, api_key: str = "") -> Any:
        return grpc_channel(self.edge, self.tls, api_key or self.admin_key)


def run_argv(state_dir: Path, services: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tools.stack",
        "run",
        "--state-dir",
        str(state_dir),
        "--base-port",
        "0",
        *services,
    ]


def start_run(state_dir: Path, log_dir: Path, name: str, services: Sequence[str] = ()) -> RunningStack:
    """`make run` on `state_dir` (every service, or `services`); returns once it has written
    stack.json (everything is up)."""
    process = spawn(name, run_argv(state_dir, services), log_dir)
    wait_until(lambda: (state_dir / "stack.json").exists(), 90, f"make run ({name})", process)
    return RunningStack(process, state_dir)


@dataclass(frozen=True)
class MadeBeforeRestart:
    """What a user made on the first run."""

    secret: str
    secret_value: bytes
    viewer_key: str
    token: str
    admin_key: str


def make_a_secret_a_key_and_a_token(stack: RunningStack) -> MadeBeforeRestart:
    secret, value = f"db-password-{uuid.uuid4().hex[:8]}", b"kept across restarts"
    with stack.channel() as channel:
        secrets = secrets_pb2_grpc.SecretsServiceStub(channel)
        secrets.CreateSecret(secrets_pb2.CreateSecretRequest(secret_id=secret), timeout=10)
        secrets.AddSecretVersion(
            secrets_pb2.AddSecretVersionRequest(
                parent=f"secrets/{secret}", payload=secrets_pb2.SecretPayload(data=value)
            ),
            timeout=10,
        )
        viewer = api_keys_pb2_grpc.ApiKeyServiceStub(channel).CreateApiKey(
            api_keys_pb2.CreateApiKeyRequest(api_key=api_keys_pb2.ApiKey(role="viewer", display_name="ci")),
            timeout=10,
        )
    with stack.channel(viewer.key) as channel:
        token = tokens_pb2_grpc.TokenServiceStub(channel).ExchangeToken(
            tokens_pb2.ExchangeTokenRequest(), timeout=10
        )
    return MadeBeforeRestart(secret, value, viewer.key, token.access_token, stack.admin_key)


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, MadeBeforeRestart]]:
    """A stack run once, used, stopped, and run again on the same state directory."""
    state_dir, logs = tmp_path_factory.mktemp("state"), tmp_path_factory.mktemp("run-logs")
    # The first run needs only what makes a secret, a key and a token; the second is the whole
    # mesh, on the same state (what a user who adds services to their checkout does).
    first = start_run(state_dir, logs, "first-run", ["config", "secrets"])
    try:
        made = make_a_secret_a_key_and_a_token(first)
    finally:
        assert first.process.stop() == 0, first.output
    second = start_run(state_dir, logs, "second-run")
    try:
        yield second, made
    finally:
        second.process.stop()


def test_a_secret_stored_before_a_restart_reads_back_after_it(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, made = restarted
    with stack.channel() as channel:
        read = secrets_pb2_grpc.SecretsServiceStub(channel).AccessSecretVersion(
            secrets_pb2.AccessSecretVersionRequest(name=f"secrets/{made.secret}/versions/latest"), timeout=10
        )
    assert read.payload.data == made.secret_value


def test_an_api_key_created_before_a_restart_still_authenticates(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, made = restarted
    with stack.channel(made.viewer_key) as channel:
        listed = config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(
            config_pb2.ListNamespacesRequest(), timeout=10
        )
    assert isinstance(listed, config_pb2.ListNamespacesResponse)


def test_a_token_issued_before_a_restart_still_verifies(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, made = restarted
    with grpc_channel(stack.edge, stack.tls) as channel:
        listed = config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(
            config_pb2.ListNamespacesRequest(),
            metadata=(("authorization", f"Bearer {made.token}"),),
            timeout=10,
        )
    assert isinstance(listed, config_pb2.ListNamespacesResponse)


def test_the_admin_key_stays_the_same_across_restarts(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, made = restarted
    assert stack.admin_key == made.admin_key


def test_the_unseal_key_and_root_token_are_readable_by_their_owner_only(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, _ = restarted
    for kept in (stack.state_dir / "openbao" / "credentials.json", stack.state_dir / "admin-api-key"):
        assert kept.stat().st_mode & 0o777 == 0o600


def test_a_second_run_on_the_same_state_refuses_naming_the_running_stack_and_leaves_it_alone(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, _ = restarted
    described = (stack.state_dir / "stack.json").read_bytes()
    second = subprocess.run(run_argv(stack.state_dir), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"PID {stack.process.pid}, edge {stack.edge}" in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert (stack.state_dir / "stack.json").read_bytes() == described
    with stack.channel() as channel:
        config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(
            config_pb2.ListNamespacesRequest(), timeout=10
        )


def test_a_service_killed_with_sigkill_comes_back_serving_at_the_same_address(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, _ = restarted
    before = stack.description()
    killed, addr = before["pids"]["config"], before["services"]["config"]
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: stack.description()["pids"]["config"] != killed, 60, "config restarted", stack.process)
    assert stack.description()["services"]["config"] == addr
    assert health_serving(addr, tls=stack.tls)
    assert "devmesh: config was killed by SIGKILL; restart 1 in" in stack.output
    assert "devmesh: config is back (PID" in stack.output
    with stack.channel() as channel:  # and the edge, health-checking it, sends it calls again
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        wait_until(lambda: stub.ListNamespaces(config_pb2.ListNamespacesRequest(), timeout=5), 30, "edge")


def test_each_service_answers_metrics_on_its_own_port(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, made = restarted
    with stack.channel() as channel:  # one call to each service, which its metrics then count
        config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(
            config_pb2.ListNamespacesRequest(), timeout=10
        )
        secrets_pb2_grpc.SecretsServiceStub(channel).GetSecret(
            secrets_pb2.GetSecretRequest(name=f"secrets/{made.secret}"), timeout=10
        )
    metrics = stack.description()["metrics"]
    assert sorted(metrics) == sorted(catalog.SERVICES) and len(set(metrics.values())) == len(metrics)
    scraped = {}
    for name, addr in metrics.items():
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as response:
            scraped[name] = response.read().decode()
    assert 'service="devmesh.config.v1.ConfigService"' in scraped["config"]
    assert 'service="devmesh.secrets.v1.SecretsService"' not in scraped["config"]
    assert 'service="devmesh.secrets.v1.SecretsService"' in scraped["secrets"]


def redacted(text: str) -> str:
    """`text` with every API key and token blanked, fit for a failing assertion's message."""
    return re.sub(r"dmk_\S+|eyJ[\w-]+\.[\w-]+\.[\w-]+", "[redacted]", text)


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`script` in bash, failing at its first failing command, with an environment a fresh
    machine has: the virtualenv's bin is not on PATH."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_commands_run_prints_work_as_printed_from_any_directory(
    restarted: tuple[RunningStack, MadeBeforeRestart], tmp_path: Path
) -> None:
    stack, _ = restarted
    printed = {m[1]: m[2] for m in re.finditer(r"^  (gRPC|REST): +(.+)$", stack.output, re.M)}
    called = shell(f"{printed['gRPC']}\n{printed['REST']} --fail", tmp_path)
    exit_code, missing = (
        called.returncode,
        [t for t in ("ConfigService", '"namespaces":') if t not in called.stdout],
    )
    assert exit_code == 0 and not missing, redacted(called.stderr + called.stdout)
    assert stack.admin_key not in stack.output  # it prints how to read the key, never the key


def test_the_readme_commands_of_running_it_work_as_written(
    restarted: tuple[RunningStack, MadeBeforeRestart],
) -> None:
    stack, _ = restarted
    readme = (ROOT / "README.md").read_text()
    commands = readme.split("## Running it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    # This stack keeps its state elsewhere; the watch stream is cut after a while (curl's 28).
    commands = commands.replace(".devmesh/", f"{stack.state_dir}/").replace("dm -N ", "dm -N --max-time 3 ")
    wrapper = 'curl() { command curl -sS --fail "$@" || [ $? -eq 28 ]; }\n'
    called = shell(wrapper + commands, ROOT)
    exit_code = called.returncode  # compared alone: pytest would show the output, keys and all
    assert exit_code == 0, redacted(called.stderr)
    expected = [
        "devmesh.config.v1.ConfigService",  # grpcurl list
        '"name": "namespaces/shop"',  # grpcurl CreateNamespace
        '"content":{"db":{"port":5432}}',  # PATCH and resolve
        "ACTION_ENVIRONMENT_CREATED",  # the watch
        '"role":"viewer"',  # the new key
        '"auditEvents":[{',
        "devmesh_rpc_duration_seconds_count",  # config's /metrics
    ]
    missing = [text for text in expected if text not in called.stdout]
    assert not missing, redacted(called.stdout)

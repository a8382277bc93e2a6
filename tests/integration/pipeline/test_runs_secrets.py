"""A job's secrets, end to end over mTLS: a worker with its own `worker` API key asks the pipeline
service (ResolveJobSecrets), which reads them from the real secrets service (OpenBao) as the
run's pipeline, `pipelines/<project>/<pipeline>`. What the pipeline may read reaches the step
and is masked in every form; what it may not fails the job and names the reference; a caller
without a worker key gets nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import json_format
from grpc import aio

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from devmesh.secrets.v1 import secrets_pb2 as spb
from devmesh.secrets.v1 import secrets_pb2_grpc
from services.pipeline import app as pipeline_app
from services.pipeline.runs import keys as run_keys
from services.pipeline.runs.records import JobRecord
from services.runtime import redis_client
from services.runtime.identity import on_behalf
from services.runtime.tls import spiffe_id
from services.secrets import app as secrets_app
from tests.conftest import BootstrappedVault, ServerFactory
from tests.helpers import Metadata, error_info, key_metadata, mint_key, refused
from tests.integration.pipeline.runs_harness import FINAL, LEASE_S, ROOT, RUN_ENV
from tools.stack import vault_bootstrap
from tools.stack.certs import CertDir, CertPaths, Identity, issue
from tools.stack.valkey import Valkey

READ = spb.Binding.LEVEL_READ
VALUE = f"s3cr3t/v@lue+{uuid.uuid4().hex[:8]} x"  # a `/`, `@`, `+` and a space: URL-encoding differs


def _certificate(openbao: BootstrappedVault, identity: Identity, root: Path) -> CertPaths:
    client = openbao.client()
    ca = vault_bootstrap.root_ca(client)
    chain, key, _ = issue(client, identity, 3600, ca)
    cert_dir = CertDir(root / identity.name)
    cert_dir.install(chain, key, ca)
    return cert_dir.current


def _secure(addr: str, tls: CertPaths) -> aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    return aio.secure_channel(addr, credentials)


def _tls_settings(tls: CertPaths) -> dict[str, object]:
    return {"insecure": False, "tls_cert_file": str(tls.cert), "tls_key_file": str(tls.key),
            "tls_ca_file": str(tls.ca)}  # fmt: skip


@dataclass
class Mesh:
    """The secrets and pipeline services over mTLS, stubs for a caller (the tests), an admin key,
    a worker key, and what a worker needs to reach the pipeline service."""

    pipelines: pipeline_pb2_grpc.PipelineServiceStub
    runs: runs_pb2_grpc.RunServiceStub
    secrets: secrets_pb2_grpc.SecretsServiceStub
    admin: Metadata
    worker_key: str
    viewer_key: str
    operator_key: str
    pipeline_addr: str
    worker_tls: CertPaths
    valkey: Valkey


@pytest.fixture(scope="module")
async def mesh(
    valkey: Valkey,
    openbao: BootstrappedVault,
    start_config_server: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Mesh]:
    certs = tmp_path_factory.mktemp("certs")
    secrets_tls = _certificate(openbao, Identity.workload("devmesh", "secrets"), certs)
    pipeline_tls = _certificate(openbao, Identity.workload("devmesh", "pipeline"), certs)
    # Identities that map to no role: only their API keys give them anything.
    tester_tls = _certificate(
        openbao, Identity("tester", spiffe_id("tests", "tester"), ("localhost",)), certs
    )
    worker_tls = _certificate(openbao, Identity("worker", spiffe_id("workers", "w"), ("localhost",)), certs)
    secrets_server, secrets_addr = await start_config_server(
        valkey.url, specs=[secrets_app.SPEC], grpc_addr="127.0.0.1:0",
        **{**openbao.settings("secrets"), **_tls_settings(secrets_tls)},
    )  # fmt: skip
    pipeline_server, pipeline_addr = await start_config_server(
        valkey.url, env=RUN_ENV, specs=[pipeline_app.SPEC], peers=(("secrets", secrets_addr),),
        **{**openbao.settings("pipeline"), **_tls_settings(pipeline_tls)},
    )  # fmt: skip
    admin = key_metadata(await mint_key(secrets_server, "admin"))
    worker_key = await mint_key(pipeline_server, "worker")
    viewer_key = await mint_key(pipeline_server, "viewer")
    operator_key = await mint_key(pipeline_server, "operator")
    async with _secure(pipeline_addr, tester_tls) as p, _secure(secrets_addr, tester_tls) as s:
        yield Mesh(
            pipeline_pb2_grpc.PipelineServiceStub(p),
            runs_pb2_grpc.RunServiceStub(p),
            secrets_pb2_grpc.SecretsServiceStub(s),
            admin,
            worker_key,
            viewer_key,
            operator_key,
            pipeline_addr,
            worker_tls,
            valkey,
        )


@dataclass
class Project:
    id: str
    label: str
    secret: str  # readable by the project's pipeline `ci`, by no other


@pytest.fixture
async def project(mesh: Mesh) -> Project:
    found = Project(
        f"p-{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}", f"deploy-{uuid.uuid4().hex[:10]}"
    )
    await mesh.pipelines.CreateProject(
        pipeline_pb2.CreateProjectRequest(project_id=found.id), metadata=mesh.admin
    )
    await mesh.secrets.CreateSecret(
        spb.CreateSecretRequest(secret_id=found.secret, secret=spb.Secret()), metadata=mesh.admin
    )
    await mesh.secrets.AddSecretVersion(
        spb.AddSecretVersionRequest(
            parent=f"secrets/{found.secret}",
            payload=spb.SecretPayload(data=json.dumps({"token": VALUE}).encode()),
        ),
        metadata=mesh.admin,
    )
    binding = spb.Binding(member=f"pipelines/{found.id}/ci", level=READ)
    await mesh.secrets.SetAccessPolicy(
        spb.SetAccessPolicyRequest(
            policy=spb.AccessPolicy(
                name=f"accessPolicies/{found.secret}", prefix=found.secret, bindings=[binding]
            )
        ),
        metadata=mesh.admin,
    )
    return found


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Workspaces a worker that runs its steps as `nobody` can reach (pytest's are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="devmesh-test-work-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_worker(mesh: Mesh, project: Project, work_dir: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(api_key: str) -> subprocess.Popen[bytes]:
        key_file = work_dir.parent / f"{work_dir.name}.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(api_key)
        env = {
            "PATH": os.environ["PATH"],
            "DEVMESH_REDIS_URL": mesh.valkey.url,
            "DEVMESH_WORKER_LABELS": project.label,
            "DEVMESH_WORKER_LEASE_SECONDS": LEASE_S,
            "DEVMESH_WORKER_DIR": str(work_dir),
            "DEVMESH_WORKER_PIPELINE_ADDR": mesh.pipeline_addr,
            "DEVMESH_WORKER_API_KEY_FILE": str(key_file),
            "DEVMESH_WORKER_TLS_CERT_FILE": str(mesh.worker_tls.cert),
            "DEVMESH_WORKER_TLS_KEY_FILE": str(mesh.worker_tls.key),
            "DEVMESH_WORKER_TLS_CA_FILE": str(mesh.worker_tls.ca),
            "DEVMESH_LOG_LEVEL": "warning",
        }
        worker = subprocess.Popen([sys.executable, "-m", "services.pipeline.worker"], cwd=ROOT, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
        worker.wait(10)
    for leftover in work_dir.parent.glob(f"{work_dir.name}.key"):
        leftover.unlink()


async def _pipeline(mesh: Mesh, project: Project, pipeline_id: str, commands: list[str]) -> str:
    definition = {
        "env": {"TOKEN": {"$secret": f"{project.secret}#token"}},
        "jobs": [
            {"id": "use", "runsOn": [project.label], "steps": [{"run": {"command": c}} for c in commands]}
        ],
    }
    created = await mesh.pipelines.CreatePipeline(
        pipeline_pb2.CreatePipelineRequest(
            parent=f"projects/{project.id}",
            pipeline_id=pipeline_id,
            pipeline=pipeline_pb2.Pipeline(
                definition=json_format.ParseDict(definition, model_pb2.PipelineDefinition())
            ),
        ),
        metadata=mesh.admin,
    )
    return created.name


async def _finished(mesh: Mesh, pipeline: str) -> runs_pb2.Run:
    run = await mesh.runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=pipeline), metadata=mesh.admin)
    for _ in range(600):
        found = await mesh.runs.GetRun(runs_pb2.GetRunRequest(name=run.name), metadata=mesh.admin)
        if found.state in FINAL:
            return found
        await _pause()
    raise AssertionError(f"the run did not finish: {found}")


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def _log(mesh: Mesh, run: runs_pb2.Run) -> list[str]:
    attempt = run.jobs[0].attempts[0].name
    page = await mesh.runs.GetJobLog(runs_pb2.GetJobLogRequest(name=attempt), metadata=mesh.admin)
    return list(page.lines)


async def test_a_secret_the_pipeline_may_read_reaches_the_step_masked_in_every_form(
    mesh: Mesh, project: Project, start_worker: Any
) -> None:
    forms = {
        "raw": VALUE,
        "base64": base64.b64encode(VALUE.encode()).decode(),
        "url": quote(VALUE, safe=""),
    }
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    pipeline = await _pipeline(mesh, project, "ci", [
        'echo "raw: $TOKEN"',
        'printf "base64: %s\\n" "$(printf %s "$TOKEN" | base64 -w0)"',
        "python3 -c 'import os, urllib.parse; print(\"url:\", urllib.parse.quote(os.environ[\"TOKEN\"], safe=\"\"))'",
        'printf "sha256: %s\\n" "$(printf %s "$TOKEN" | sha256sum | cut -d" " -f1)"',
        "id -u",
    ])  # fmt: skip
    start_worker(mesh.worker_key)
    run = await _finished(mesh, pipeline)
    assert run.state == runs_pb2.RUN_STATE_SUCCEEDED, run
    lines = await _log(mesh, run)
    events = [
        line
        async for e in mesh.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name), metadata=mesh.admin)
        if e.HasField("log")
        for line in e.log.lines
    ]  # fmt: skip
    assert f"sha256: {digest}" in lines  # the step had the value itself
    assert os.geteuid() != 0 or "65534" in lines  # a root worker's steps run as nobody
    masked = {"raw: ***", "base64: ***", "url: ***"}
    assert masked <= set(lines) and masked <= set(events)
    for text in ("\n".join(lines), "\n".join(events)):
        for form, value in forms.items():
            assert value not in text, f"the {form} form of the secret reached the log"


async def test_a_secret_the_pipeline_may_not_read_fails_the_job_and_names_the_reference(
    mesh: Mesh, project: Project, start_worker: Any
) -> None:
    # Another pipeline of the same project: the policy binds `ci` alone.
    pipeline = await _pipeline(mesh, project, "other", ['echo "never: $TOKEN"'])
    start_worker(mesh.worker_key)
    run = await _finished(mesh, pipeline)
    attempt = run.jobs[0].attempts[0]
    assert run.state == runs_pb2.RUN_STATE_FAILED
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_SETUP_FAILED
    assert f"{project.secret}#token (SECRET_ACCESS_DENIED)" in attempt.message
    assert VALUE not in attempt.message and not any("never" in line for line in await _log(mesh, run))


async def test_a_worker_with_a_key_of_another_role_gets_no_secret(
    mesh: Mesh, project: Project, start_worker: Any
) -> None:
    pipeline = await _pipeline(mesh, project, "ci", ['echo "never: $TOKEN"'])
    start_worker(mesh.viewer_key)
    run = await _finished(mesh, pipeline)
    attempt = run.jobs[0].attempts[0]
    assert attempt.reason == runs_pb2.ATTEMPT_REASON_SETUP_FAILED
    assert "PERMISSION_DENIED" in attempt.message and VALUE not in attempt.message


async def _running_attempt(
    mesh: Mesh, project: Project, start_worker: Any, work_dir: Path
) -> tuple[str, str]:
    """(attempt name, fence) of an attempt that waits, running, until `work_dir/go` exists."""
    gate = work_dir / "go"
    pipeline = await _pipeline(mesh, project, "ci", [f"while ! test -e {gate}; do sleep 0.05; done"])
    start_worker(mesh.worker_key)
    run = await mesh.runs.RunPipeline(runs_pb2.RunPipelineRequest(parent=pipeline), metadata=mesh.admin)
    run_id = run.name.rpartition("/")[2]
    redis = redis_client.connect(mesh.valkey.url, 5.0)
    try:
        for _ in range(600):
            record = JobRecord.load(await redis.hget(run_keys.jobs(run_id), "use"))
            if record.s == "RUNNING":
                return f"{run.name}/jobs/use/attempts/{record.n}", str(record.f)
            await _pause()
    finally:
        await redis.aclose()
    raise AssertionError("the job never ran")


async def test_resolving_secrets_takes_a_worker_key_and_the_current_fence(
    mesh: Mesh, project: Project, start_worker: Any, work_dir: Path
) -> None:
    attempt, fence = await _running_attempt(mesh, project, start_worker, work_dir)
    request = runs_pb2.ResolveJobSecretsRequest(name=attempt, fence=fence)
    worker = key_metadata(mesh.worker_key)
    unknown = await refused(mesh.runs.ResolveJobSecrets, request, metadata=key_metadata("dm_not-a-key"))
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    # A certificate alone (no key), a viewer's key, an operator's: none holds the permission.
    for other in ((), key_metadata(mesh.viewer_key), key_metadata(mesh.operator_key)):
        denied = await refused(mesh.runs.ResolveJobSecrets, request, metadata=other)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    stale = runs_pb2.ResolveJobSecretsRequest(name=attempt, fence=str(int(fence) + 1))
    error = await refused(mesh.runs.ResolveJobSecrets, stale, metadata=worker)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "STALE_ATTEMPT"
    resolved = await mesh.runs.ResolveJobSecrets(request, metadata=worker)
    assert dict(resolved.values) == {f"{project.secret}#token": VALUE} and not resolved.unresolved
    # The worker's key reads nothing else of the mesh: not even the run it works on.
    run_name = attempt.split("/jobs/")[0]
    denied = await refused(mesh.runs.GetRun, runs_pb2.GetRunRequest(name=run_name), metadata=worker)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    (work_dir / "go").touch()


async def test_only_a_delegated_mesh_identity_may_read_on_behalf_of_a_pipeline(
    mesh: Mesh, project: Project
) -> None:
    request = spb.AccessSecretVersionRequest(name=f"secrets/{project.secret}/versions/latest")
    as_pipeline = (on_behalf.HEADER, f"pipelines/{project.id}/ci")
    error = await refused(mesh.secrets.AccessSecretVersion, request, metadata=(*mesh.admin, as_pipeline))
    assert (
        error.code() == grpc.StatusCode.PERMISSION_DENIED and error_info(error).reason == "DELEGATION_REFUSED"
    )

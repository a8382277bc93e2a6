"""The pipeline service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline.debugger_client import DebuggerClassifier
from services.pipeline.domain import PipelineDomain
from services.pipeline.run_servicer import RunServicer
from services.pipeline.runs import retries
from services.pipeline.runs.coordinator import Coordinator, CoordinatorSettings
from services.pipeline.runs.job_secrets import JobSecrets
from services.pipeline.runs.service import RunDomain
from services.pipeline.secrets_client import PipelineSecrets
from services.pipeline.servicer import PipelineServicer
from services.pipeline.settings import PipelineSettings
from services.pipeline.store import PipelineStore
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.spec import ServiceSpec

SERVICE = pipeline_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name
RUN_SERVICE = runs_pb2.DESCRIPTOR.services_by_name["RunService"].full_name

# Reading, generating, exporting and validating change nothing: every role may.
_READS = (
    "pipeline.projects.get",
    "pipeline.projects.list",
    "pipeline.pipelines.get",
    "pipeline.pipelines.list",
    "pipeline.revisions.list",
    "pipeline.pipelines.generate",
    "pipeline.pipelines.export",
    "pipeline.pipelines.validate",
    "pipeline.runs.get",
    "pipeline.runs.list",
    "pipeline.logs.get",
    "pipeline.artifacts.list",
    "pipeline.artifacts.get",
)


def classifier(runtime: Runtime, settings: PipelineSettings) -> retries.FailureClassifier | None:
    """What `on: transient` asks: the debugger, when it is a peer (bounded by a timeout)."""
    debugger = runtime.peer_channel("debugger")
    if debugger is None:
        return None
    timeout = settings.pipeline_classifier_timeout
    return retries.Bounded(DebuggerClassifier(debugger, timeout), timeout)


def build(runtime: Runtime, settings: PipelineSettings) -> ServiceBinding:
    store = PipelineStore(runtime.redis, runtime.durable)
    domain = PipelineDomain(store)
    servicer = PipelineServicer(domain, settings)
    coordinator = Coordinator(
        runtime.redis,
        CoordinatorSettings(
            lease_s=settings.pipeline_lease_seconds, claim_idle_s=settings.pipeline_claim_idle_seconds
        ),
        classifier(runtime, settings),
    )
    # ListArtifacts and GetArtifact are not built (the spec's `unimplemented`): the generated
    # base answers them UNIMPLEMENTED, which its stubs declare abstract.
    run_domain = RunDomain(coordinator, store, runtime.durable)
    secrets = runtime.peer_channel("secrets")
    job_secrets = JobSecrets(run_domain, PipelineSecrets(secrets) if secrets is not None else None)
    runs = RunServicer(run_domain, job_secrets)  # type: ignore[abstract]

    def register(server: aio.Server) -> None:
        pipeline_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)
        runs_pb2_grpc.add_RunServiceServicer_to_server(runs, server)

    return ServiceBinding(
        register=register,
        dependencies=[runtime.redis_dependency],
        start=coordinator.start,
        stop=coordinator.stop,
    )


SPEC = ServiceSpec(
    name="pipeline",
    summary="CI pipelines: detect a repository's stacks, generate a pipeline with its rationale, "
    "export GitHub Actions and GitLab CI, run pipelines on workers",
    settings=PipelineSettings,
    build=build,
    servicers={SERVICE: PipelineServicer, RUN_SERVICE: RunServicer},
    grants={
        roles.OPERATOR: (
            "pipeline.projects.*",
            "pipeline.pipelines.*",
            "pipeline.revisions.*",
            "pipeline.runs.*",
            "pipeline.gates.*",
            "pipeline.logs.*",
            "pipeline.artifacts.*",
        ),
        roles.VIEWER: _READS,
        # The debugger's remediations re-run failed runs and cancel stuck ones.
        roles.SERVICE: (*_READS, "pipeline.runs.rerun", "pipeline.runs.cancel"),
        # A `devmesh worker`: the secrets of the attempt it runs, nothing else (no reads either).
        roles.WORKER: ("pipeline.attempts.resolve_secrets",),
    },
    read_verbs=frozenset({"get", "list", "generate", "export", "validate"}),
    unimplemented=frozenset({f"/{RUN_SERVICE}/ListArtifacts", f"/{RUN_SERVICE}/GetArtifact"}),
    # Job secrets are read from the secrets service as the pipeline's principal; `on: transient`
    # retries ask the debugger whether a failure is transient.
    peers=("secrets", "debugger"),
    commands="services.pipeline.cli",
)

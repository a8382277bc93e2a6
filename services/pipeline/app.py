"""The pipeline service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc, runs_pb2, runs_pb2_grpc
from services.pipeline.debugger_client import DebuggerClassifier
from services.pipeline.domain import PipelineDomain
from services.pipeline.run_servicer import RunServicer
from services.pipeline.runs import retries, worker_terms
from services.pipeline.runs.artifacts import ArtifactCaps, ArtifactDomain
from services.pipeline.runs.artifacts_store import DirectoryArtifactStore
from services.pipeline.runs.caches import CacheDomain, CacheSettings
from services.pipeline.runs.coordinator import Coordinator, CoordinatorSettings
from services.pipeline.runs.job_secrets import JobSecrets
from services.pipeline.runs.retention import RetentionSettings, RetentionSweeper
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
    pipelines = PipelineStore(runtime.redis, runtime.durable)
    domain = PipelineDomain(pipelines)
    servicer = PipelineServicer(domain, settings)
    coordinator = Coordinator(
        runtime.redis,
        CoordinatorSettings(
            lease_s=settings.pipeline_lease_seconds, claim_idle_s=settings.pipeline_claim_idle_seconds
        ),
        classifier(runtime, settings),
    )
    # Artifacts are files under the data directory; without one this replica keeps none
    # (uploads answer FAILED_PRECONDITION and the artifact step fails the job with that).
    data_dir = runtime.settings.data_dir
    artifact_store = DirectoryArtifactStore(Path(data_dir) / "pipeline" / "artifacts") if data_dir else None
    caps = ArtifactCaps(settings.pipeline_artifact_max_bytes, settings.pipeline_job_artifacts_max_bytes)
    artifacts = ArtifactDomain(runtime.redis, artifact_store, caps)
    # Caches: the projects' own namespace beside the artifacts, over the same kind of store.
    cache_store = DirectoryArtifactStore(Path(data_dir) / "pipeline" / "caches") if data_dir else None
    caches = CacheDomain(
        runtime.redis,
        cache_store,
        CacheSettings(
            entry_bytes=settings.pipeline_cache_max_bytes,
            project_bytes=settings.pipeline_project_caches_max_bytes,
            retention_s=settings.pipeline_cache_retention_seconds,
        ),
    )
    sweeper = RetentionSweeper(
        runtime.redis,
        artifacts,
        RetentionSettings(
            run_s=settings.pipeline_run_retention_seconds,
            log_s=settings.pipeline_log_retention_seconds,
            sweep_s=settings.pipeline_retention_sweep_seconds,
        ),
        caches,
    )
    terms = worker_terms.WorkerTerms(
        lease_s=settings.pipeline_lease_seconds,
        artifact_bytes=caps.artifact_bytes,
        job_artifacts_bytes=caps.job_bytes,
    )
    run_domain = RunDomain(coordinator, pipelines, runtime.durable)
    secrets = runtime.peer_channel("secrets")
    job_secrets = JobSecrets(run_domain, PipelineSecrets(secrets) if secrets is not None else None)
    runs = RunServicer(run_domain, artifacts, job_secrets, caches)

    publisher = worker_terms.TermsPublisher(runtime.redis, coordinator.consumer, terms)

    async def start() -> None:
        await publisher.start()
        await coordinator.start()
        await sweeper.start()

    async def stop() -> None:
        await sweeper.stop()
        await coordinator.stop()
        await publisher.stop()

    def register(server: aio.Server) -> None:
        pipeline_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)
        runs_pb2_grpc.add_RunServiceServicer_to_server(runs, server)

    return ServiceBinding(
        register=register,
        dependencies=[runtime.redis_dependency],
        start=start,
        stop=stop,
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
            "pipeline.artifacts.list",
            "pipeline.artifacts.get",
        ),
        roles.VIEWER: _READS,
        # The debugger's remediations re-run failed runs and cancel stuck ones.
        roles.SERVICE: (*_READS, "pipeline.runs.rerun", "pipeline.runs.cancel"),
        # A `devmesh worker`: the secrets of the attempt it runs, its artifacts and its
        # project's caches (each also needs the attempt's fence), nothing else (no reads either).
        roles.WORKER: (
            "pipeline.attempts.resolve_secrets",
            "pipeline.artifacts.upload",
            "pipeline.caches.restore",
            "pipeline.caches.save",
        ),
    },
    read_verbs=frozenset({"get", "list", "generate", "export", "validate"}),
    # Job secrets are read from the secrets service as the pipeline's principal; `on: transient`
    # retries ask the debugger whether a failure is transient.
    peers=("secrets", "debugger"),
    commands="services.pipeline.cli",
)

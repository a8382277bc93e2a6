"""The pipeline service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from grpc import aio

from devmesh.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc
from services.pipeline.domain import PipelineDomain
from services.pipeline.servicer import PipelineServicer
from services.pipeline.settings import PipelineSettings
from services.pipeline.store import PipelineStore
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.spec import ServiceSpec

SERVICE = pipeline_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name

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
)


def build(runtime: Runtime, settings: PipelineSettings) -> ServiceBinding:
    domain = PipelineDomain(PipelineStore(runtime.redis, runtime.durable))
    servicer = PipelineServicer(domain, settings)

    def register(server: aio.Server) -> None:
        pipeline_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)

    return ServiceBinding(register=register, dependencies=[runtime.redis_dependency])


SPEC = ServiceSpec(
    name="pipeline",
    summary="CI pipelines: detect a repository's stacks, generate a pipeline with its rationale, "
    "export GitHub Actions and GitLab CI",
    settings=PipelineSettings,
    build=build,
    servicers={SERVICE: PipelineServicer},
    grants={
        roles.OPERATOR: ("pipeline.projects.*", "pipeline.pipelines.*", "pipeline.revisions.*"),
        roles.VIEWER: _READS,
        roles.SERVICE: _READS,
    },
    read_verbs=frozenset({"get", "list", "generate", "export", "validate"}),
    commands="services.pipeline.cli",
)

"""PipelineService over gRPC: converts protos to domain calls and domain results to protos."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf import empty_pb2
from grpc import aio

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2, pipeline_pb2_grpc
from services.pipeline import archive, exporter, generator, names, validation
from services.pipeline.detection.report import Evidence
from services.pipeline.domain import PIPELINE_FIELDS, PipelineDomain, pipeline_etag, project_etag
from services.pipeline.settings import PipelineSettings
from services.pipeline.snapshot import Limits, Snapshot
from services.pipeline.store import PipelineRecord, ProjectRecord
from services.runtime import protos
from services.runtime.errors import InvalidArgument

_EMPTY = empty_pb2.Empty()


def project_proto(record: ProjectRecord) -> pipeline_pb2.Project:
    return pipeline_pb2.Project(
        name=names.project_name(record.id),
        display_name=record.display_name,
        description=record.description,
        repository_uri=record.repository_uri,
        create_time=protos.timestamp(record.create_time_us),
        etag=project_etag(record),
    )


def pipeline_proto(record: PipelineRecord, *, full: bool = True) -> pipeline_pb2.Pipeline:
    message = pipeline_pb2.Pipeline(
        name=names.pipeline_name(record.project, record.id),
        display_name=record.display_name,
        description=record.description,
        revision=record.revision,
        create_time=protos.timestamp(record.create_time_us),
        update_time=protos.timestamp(record.update_time_us),
        etag=pipeline_etag(record),
    )
    if full:
        message.definition.ParseFromString(record.definition)
    return message


def warning_proto(code: str, message: str, path: str) -> pipeline_pb2.Warning:
    return pipeline_pb2.Warning(code=code, message=message, path=path)


TARGETS: dict[int, exporter.Target] = {
    pipeline_pb2.EXPORT_TARGET_GITHUB_ACTIONS: exporter.Target.GITHUB_ACTIONS,
    pipeline_pb2.EXPORT_TARGET_GITLAB_CI: exporter.Target.GITLAB_CI,
}


def target_of(value: int) -> exporter.Target:
    found = TARGETS.get(value)
    if found is None:
        choices = ", ".join(v.name for v in pipeline_pb2.ExportTarget.DESCRIPTOR.values if v.number)
        raise InvalidArgument.for_field(
            "target", f"{value} is not a target; one of {choices}", reason="BAD_TARGET"
        )
    return found


def evidence_proto(evidence: Evidence) -> pipeline_pb2.Evidence:
    return pipeline_pb2.Evidence(path=evidence.path, line=evidence.line, detail=evidence.detail)


def generated_proto(generated: generator.Generated) -> pipeline_pb2.GeneratePipelineResponse:
    report = generated.report
    return pipeline_pb2.GeneratePipelineResponse(
        definition=generated.definition,
        stacks=[
            pipeline_pb2.DetectedStack(
                ecosystem=s.ecosystem,
                directory=s.directory or ".",
                package_manager=s.package_manager,
                versions=s.versions,
                tools=s.tools,
                commands={purpose: "\n".join(lines) for purpose, lines in s.commands.items()},
            )
            for s in generated.stacks
        ],
        rationale=[
            pipeline_pb2.Decision(
                subject=d.subject,
                directory=d.directory,
                choice=d.choice,
                evidence=[evidence_proto(e) for e in d.evidence],
            )
            for d in report.decisions
        ],
        warnings=[
            pipeline_pb2.Warning(
                code=w.code, message=w.message, evidence=[evidence_proto(e) for e in w.evidence]
            )
            for w in report.warnings
        ],
        differences=[
            pipeline_pb2.CiDifference(
                kind=pipeline_pb2.DIFFERENCE_KIND_ONLY_IN_EXISTING
                if d.only_in_existing
                else pipeline_pb2.DIFFERENCE_KIND_ONLY_IN_GENERATED,
                command=d.command,
                evidence=evidence_proto(d.evidence),
            )
            for d in generated.differences
        ],
        file_count=generated.file_count,
    )


def _options(options: pipeline_pb2.GenerateOptions) -> generator.Options:
    return generator.Options.checked(list(options.skip_gates), options.default_branch)


def _full(view: int, default: bool) -> bool:
    if view not in pipeline_pb2.View.values():
        raise InvalidArgument.for_field("view", f"{view} is not a View value")
    return default if view == pipeline_pb2.VIEW_UNSPECIFIED else view == pipeline_pb2.VIEW_FULL


def _pipeline_fields(message: pipeline_pb2.Pipeline) -> PipelineRecord:
    return PipelineRecord(
        project="", id="", display_name=message.display_name, description=message.description
    )


class PipelineServicer(pipeline_pb2_grpc.PipelineServiceServicer):
    def __init__(self, domain: PipelineDomain, settings: PipelineSettings) -> None:
        self.domain = domain
        self.limits = Limits(
            max_files=settings.pipeline_max_snapshot_files,
            max_file_content=settings.pipeline_max_file_content_bytes,
            max_content=settings.pipeline_max_snapshot_content_bytes,
        )
        self.archive_limits = archive.ArchiveLimits(
            max_bytes=settings.pipeline_max_archive_bytes,
            max_unpacked_bytes=settings.pipeline_max_archive_unpacked_bytes,
            max_entries=settings.pipeline_max_snapshot_files,
            max_file_content=settings.pipeline_max_file_content_bytes,
        )

    async def CreateProject(
        self, request: pipeline_pb2.CreateProjectRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.Project:
        fields = ProjectRecord(
            id="",
            display_name=request.project.display_name,
            description=request.project.description,
            repository_uri=request.project.repository_uri,
        )
        return project_proto(await self.domain.create_project(request.project_id, fields))

    async def GetProject(
        self, request: pipeline_pb2.GetProjectRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.Project:
        return project_proto(await self.domain.get_project(names.parse_project(request.name)))

    async def ListProjects(
        self, request: pipeline_pb2.ListProjectsRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.ListProjectsResponse:
        page, token = await self.domain.list_projects(request.page_size, request.page_token)
        return pipeline_pb2.ListProjectsResponse(
            projects=[project_proto(p) for p in page], next_page_token=token
        )

    async def DeleteProject(
        self, request: pipeline_pb2.DeleteProjectRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.delete_project(names.parse_project(request.name), request.etag, request.force)
        return _EMPTY

    async def CreatePipeline(
        self, request: pipeline_pb2.CreatePipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.Pipeline:
        project = names.parse_project(request.parent, "parent")
        definition = request.pipeline.definition if request.pipeline.HasField("definition") else None
        record = await self.domain.create_pipeline(
            project, request.pipeline_id, _pipeline_fields(request.pipeline), definition, request.reason
        )
        return pipeline_proto(record)

    async def GetPipeline(
        self, request: pipeline_pb2.GetPipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.Pipeline:
        return pipeline_proto(await self.domain.get_pipeline(*names.parse_pipeline(request.name)))

    async def ListPipelines(
        self, request: pipeline_pb2.ListPipelinesRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.ListPipelinesResponse:
        project = names.parse_project(request.parent, "parent")
        full = _full(request.view, default=False)
        page, token = await self.domain.list_pipelines(project, request.page_size, request.page_token)
        return pipeline_pb2.ListPipelinesResponse(
            pipelines=[pipeline_proto(p, full=full) for p in page], next_page_token=token
        )

    async def UpdatePipeline(
        self, request: pipeline_pb2.UpdatePipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.Pipeline:
        project, pipeline = names.parse_pipeline(request.pipeline.name, "pipeline.name")
        given = request.pipeline
        # AIP-134: without a mask, every updatable field that is set.
        present = {f.name for f, _ in given.ListFields()}
        mask = list(request.update_mask.paths) or [f for f in PIPELINE_FIELDS if f in present]
        record = await self.domain.update_pipeline(
            project,
            pipeline,
            _pipeline_fields(given),
            given.definition if given.HasField("definition") else None,
            mask,
            given.etag,
            request.reason,
        )
        return pipeline_proto(record)

    async def DeletePipeline(
        self, request: pipeline_pb2.DeletePipelineRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        project, pipeline = names.parse_pipeline(request.name)
        await self.domain.delete_pipeline(project, pipeline, request.etag)
        return _EMPTY

    async def ListPipelineRevisions(
        self, request: pipeline_pb2.ListPipelineRevisionsRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.ListPipelineRevisionsResponse:
        project, pipeline = names.parse_pipeline(request.name)
        full = _full(request.view, default=False)
        page, token = await self.domain.revisions(project, pipeline, request.page_size, request.page_token)
        for revision in page:
            revision.name = names.revision_name(project, pipeline, revision.revision)
            if not full:
                revision.ClearField("definition")
        return pipeline_pb2.ListPipelineRevisionsResponse(revisions=page, next_page_token=token)

    async def GeneratePipeline(
        self, request: pipeline_pb2.GeneratePipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.GeneratePipelineResponse:
        options = _options(request.options)
        if not request.snapshot.files:
            raise InvalidArgument.for_field(
                "snapshot.files", "the snapshot lists no files", reason="REQUIRED"
            )
        snapshot = Snapshot.build(
            ((f.path, f.size, f.content, f.truncated) for f in request.snapshot.files),
            self.limits,
            "snapshot.files",
        )
        return generated_proto(generator.generate(snapshot, options))

    async def GeneratePipelineFromArchive(
        self,
        request_iterator: AsyncIterator[pipeline_pb2.GeneratePipelineFromArchiveRequest],
        context: aio.ServicerContext,
    ) -> pipeline_pb2.GeneratePipelineResponse:
        chunks: list[bytes] = []
        received = 0
        options: generator.Options | None = None
        async for message in request_iterator:
            if options is None:
                options = _options(message.options)
            if len(message.chunk) > archive.MAX_CHUNK:
                raise InvalidArgument.for_field(
                    "chunk", f"at most {archive.MAX_CHUNK} bytes per message", reason="CHUNK_TOO_LARGE"
                )
            received += len(message.chunk)
            if received > self.archive_limits.max_bytes:
                raise InvalidArgument.for_field(
                    "chunk",
                    f"the archive is over {self.archive_limits.max_bytes} bytes",
                    reason="ARCHIVE_TOO_LARGE",
                )
            chunks.append(message.chunk)
        # Unpacking is CPU work proportional to the archive: off the event loop.
        found = await asyncio.to_thread(archive.entries, b"".join(chunks), self.archive_limits)
        snapshot = Snapshot.build(found, self.limits, "archive")
        return generated_proto(generator.generate(snapshot, options or generator.Options()))

    async def ExportPipeline(
        self, request: pipeline_pb2.ExportPipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.ExportPipelineResponse:
        target = target_of(request.target)
        source = request.WhichOneof("source")
        if source == "name":
            project, pipeline = names.parse_pipeline(request.name)
            record = await self.domain.get_pipeline(project, pipeline)
            definition = model_pb2.PipelineDefinition.FromString(record.definition)
            title = record.display_name or pipeline
        elif source == "definition":
            definition, title = request.definition, "CI"
        else:
            raise InvalidArgument.for_field("name", "name a pipeline or give a definition", reason="REQUIRED")
        exported = exporter.export(definition, target, title)
        return pipeline_pb2.ExportPipelineResponse(
            content=exported.content,
            path=exported.path,
            warnings=[warning_proto(w.code, w.message, w.path) for w in exported.warnings],
        )

    async def ValidatePipeline(
        self, request: pipeline_pb2.ValidatePipelineRequest, context: aio.ServicerContext
    ) -> pipeline_pb2.ValidatePipelineResponse:
        if not request.HasField("definition"):
            raise InvalidArgument.for_field("definition", "is required", reason="REQUIRED")
        validated = validation.validate(request.definition, "definition")
        return pipeline_pb2.ValidatePipelineResponse(
            job_runs=validated.job_runs, warnings=[warning_proto(*w) for w in validated.warnings]
        )

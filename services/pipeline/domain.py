"""Projects and pipelines: the rules of each change, applied through the store.

A pipeline's definition is validated (`validation.validate`) on every create and update; a
definition that does not validate is never stored. Every write of a pipeline is a new
immutable revision, and its number is the pipeline's etag.
"""

from __future__ import annotations

from dataclasses import replace

from devmesh.pipeline.v1 import model_pb2, pipeline_pb2
from services.pipeline import validation
from services.pipeline.store import Conflict, PipelineRecord, PipelineStore, ProjectRecord, now_us
from services.runtime import etags, pagination, request_context
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.runtime.resource_names import AIP_ID

PIPELINE_FIELDS = ("display_name", "description", "definition")
LIMITS = {"display_name": 128, "description": 1024, "repository_uri": 512, "reason": 1024}
PROJECT_TYPE = "pipeline.devmesh.io/Project"
PIPELINE_TYPE = "pipeline.devmesh.io/Pipeline"


def project_etag(record: ProjectRecord) -> str:
    # Projects do not change once created; the creation time tells a re-created one apart.
    return etags.of(1, f"{record.create_time_us:x}")


def pipeline_etag(record: PipelineRecord) -> str:
    return etags.of(record.revision)


def check_lengths(prefix: str, **values: str) -> None:
    """INVALID_ARGUMENT naming every field longer than its limit."""
    too_long = [
        FieldViolation(f"{prefix}{name}", f"longer than {LIMITS[name]} characters", "TOO_LONG")
        for name, value in values.items()
        if len(value) > LIMITS[name]
    ]
    if too_long:
        raise InvalidArgument(f"{too_long[0].field}: {too_long[0].description}", too_long)


def _not_found_project(project: str) -> NotFound:
    return NotFound(
        f"project {project!r} does not exist", resource_type=PROJECT_TYPE, resource_name=f"projects/{project}"
    )


def _not_found_pipeline(project: str, pipeline: str) -> NotFound:
    name = f"projects/{project}/pipelines/{pipeline}"
    return NotFound(f"pipeline {name!r} does not exist", resource_type=PIPELINE_TYPE, resource_name=name)


class PipelineDomain:
    def __init__(self, store: PipelineStore) -> None:
        self.store = store

    # -- projects -----------------------------------------------------------------------

    async def create_project(self, project_id: str, fields: ProjectRecord) -> ProjectRecord:
        AIP_ID.check(project_id, "project_id")
        check_lengths(
            "project.",
            display_name=fields.display_name,
            description=fields.description,
            repository_uri=fields.repository_uri,
        )
        try:
            record = await self.store.create_project(replace(fields, id=project_id, create_time_us=now_us()))
        except Conflict:
            raise AlreadyExists(
                f"project {project_id!r} already exists",
                resource_type=PROJECT_TYPE,
                resource_name=f"projects/{project_id}",
            ) from None
        request_context.note_audit(resource=f"projects/{project_id}")
        return record

    async def get_project(self, project: str) -> ProjectRecord:
        record = await self.store.get_project(project)
        if record is None:
            raise _not_found_project(project)
        return record

    async def list_projects(self, size: int, token: str) -> tuple[list[ProjectRecord], str]:
        limit = pagination.page_size(size)
        query = ("projects",)
        after = pagination.decode_token(token, query)
        page, more = await self.store.list_projects(after, limit)
        return page, pagination.encode_token(page[-1].id, query) if more and page else ""

    async def delete_project(self, project: str, etag: str, force: bool) -> None:
        def check(record: ProjectRecord, _pipelines: int) -> None:
            etags.check(etag, project_etag(record), f"project {project!r}")

        try:
            await self.store.delete_project(project, check, force)
        except Conflict as conflict:
            if conflict.kind == "missing":
                raise _not_found_project(project) from None
            raise FailedPrecondition(
                f"project {project!r} still holds {conflict.current} pipeline(s); delete them or set force",
                reason="PROJECT_NOT_EMPTY",
            ) from None
        request_context.note_audit(resource=f"projects/{project}")

    # -- pipelines ----------------------------------------------------------------------

    async def create_pipeline(
        self,
        project: str,
        pipeline_id: str,
        fields: PipelineRecord,
        definition: model_pb2.PipelineDefinition | None,
        reason: str,
    ) -> PipelineRecord:
        AIP_ID.check(pipeline_id, "pipeline_id")
        check_lengths("pipeline.", display_name=fields.display_name, description=fields.description)
        check_lengths("", reason=reason)
        if definition is None:
            raise InvalidArgument.for_field("pipeline.definition", "is required", reason="REQUIRED")
        validation.validate(definition, "pipeline.definition")
        now = now_us()
        record = replace(
            fields,
            project=project,
            id=pipeline_id,
            definition=definition.SerializeToString(deterministic=True),
            create_time_us=now,
            update_time_us=now,
        )
        try:
            created = await self.store.create_pipeline(record, request_context.principal_name(), reason)
        except Conflict as conflict:
            if conflict.kind == "parent_missing":
                raise _not_found_project(project) from None
            raise AlreadyExists(
                f"pipeline {pipeline_id!r} already exists in project {project!r}",
                resource_type=PIPELINE_TYPE,
                resource_name=f"projects/{project}/pipelines/{pipeline_id}",
            ) from None
        request_context.note_audit(
            resource=f"projects/{project}/pipelines/{pipeline_id}", revision=created.revision
        )
        return created

    async def get_pipeline(self, project: str, pipeline: str) -> PipelineRecord:
        record = await self.store.get_pipeline(project, pipeline)
        if record is None:
            raise _not_found_pipeline(project, pipeline)
        return record

    async def list_pipelines(self, project: str, size: int, token: str) -> tuple[list[PipelineRecord], str]:
        limit = pagination.page_size(size)
        query = ("pipelines", project)
        after = pagination.decode_token(token, query)
        page, more = await self.store.list_pipelines(project, after, limit)
        if not page and after is None and not await self.store.project_exists(project):
            raise _not_found_project(project)
        return page, pagination.encode_token(page[-1].id, query) if more and page else ""

    async def update_pipeline(
        self,
        project: str,
        pipeline: str,
        fields: PipelineRecord,
        definition: model_pb2.PipelineDefinition | None,
        mask: list[str],
        etag: str,
        reason: str,
    ) -> PipelineRecord:
        unknown = [p for p in mask if p not in PIPELINE_FIELDS]
        if unknown:
            raise InvalidArgument.for_field(
                "update_mask", f"{unknown[0][:64]!r} is not one of {', '.join(PIPELINE_FIELDS)}"
            )
        if not mask:
            raise InvalidArgument.for_field("update_mask", "names nothing to update", reason="EMPTY_MASK")
        check_lengths("pipeline.", display_name=fields.display_name, description=fields.description)
        check_lengths("", reason=reason)
        serialized = b""
        if "definition" in mask:
            if definition is None:
                raise InvalidArgument.for_field(
                    "pipeline.definition", "is in the mask but not set", reason="REQUIRED"
                )
            validation.validate(definition, "pipeline.definition")
            serialized = definition.SerializeToString(deterministic=True)

        def change(current: PipelineRecord) -> PipelineRecord:
            etags.check(etag, pipeline_etag(current), f"pipeline {pipeline!r}")
            return replace(
                current,
                display_name=fields.display_name if "display_name" in mask else current.display_name,
                description=fields.description if "description" in mask else current.description,
                definition=serialized if "definition" in mask else current.definition,
            )

        try:
            updated = await self.store.update_pipeline(
                project, pipeline, change, request_context.principal_name(), reason
            )
        except Conflict:
            raise _not_found_pipeline(project, pipeline) from None
        request_context.note_audit(
            resource=f"projects/{project}/pipelines/{pipeline}", revision=updated.revision
        )
        return updated

    async def delete_pipeline(self, project: str, pipeline: str, etag: str) -> None:
        def check(current: PipelineRecord) -> None:
            etags.check(etag, pipeline_etag(current), f"pipeline {pipeline!r}")

        try:
            await self.store.delete_pipeline(project, pipeline, check)
        except Conflict:
            raise _not_found_pipeline(project, pipeline) from None
        request_context.note_audit(resource=f"projects/{project}/pipelines/{pipeline}")

    async def revisions(
        self, project: str, pipeline: str, size: int, token: str
    ) -> tuple[list[pipeline_pb2.PipelineRevision], str]:
        """A page of the pipeline's revisions, newest first, and the next page's token."""
        limit = pagination.page_size(size)
        query = ("revisions", project, pipeline)
        cursor = pagination.decode_token(token, query)
        before = int(cursor) if cursor is not None and cursor.isdigit() else None
        found = await self.store.revisions(project, pipeline, before, limit)
        if found is None:
            raise _not_found_pipeline(project, pipeline)
        page, more = found
        return list(page), pagination.encode_token(str(page[-1].revision), query) if more and page else ""

    async def definition_of(self, project: str, pipeline: str) -> model_pb2.PipelineDefinition:
        record = await self.get_pipeline(project, pipeline)
        return model_pb2.PipelineDefinition.FromString(record.definition)

"""Resource names of the pipeline service (AIP-122) and the ids inside them."""

from __future__ import annotations

from services.runtime.resource_names import NUMBER, ResourceName

PROJECT = ResourceName("projects/{project}")
PIPELINE = ResourceName("projects/{project}/pipelines/{pipeline}")
REVISION = ResourceName("projects/{project}/pipelines/{pipeline}/revisions/{revision}", {"revision": NUMBER})


def parse_project(name: str, field: str = "name") -> str:
    (project,) = PROJECT.parse(name, field)
    return project


def parse_pipeline(name: str, field: str = "name") -> tuple[str, str]:
    """(project, pipeline)."""
    project, pipeline = PIPELINE.parse(name, field)
    return project, pipeline


def project_name(project: str) -> str:
    return PROJECT.format(project)


def pipeline_name(project: str, pipeline: str) -> str:
    return PIPELINE.format(project, pipeline)


def revision_name(project: str, pipeline: str, revision: int) -> str:
    return REVISION.format(project, pipeline, str(revision))
